"""
Image message fields <-> numpy arrays, with no ROS import.

`decode_image` turns the fields of a sensor_msgs/Image (encoding, height, width, step, data,
is_bigendian) into an array, `encode_image` does the reverse, `convert_encoding` changes pixel
formats the way cv_bridge does, and `encode_compressed` / `decode_compressed` handle
sensor_msgs/CompressedImage payloads (jpeg, png). adaqual_ros.ros.conversions wraps these in
cv_bridge's API shape.

Arrays follow OpenCV conventions: (H, W) for one channel, (H, W, C) otherwise; yuv422 frames are
(H, W, 2) uint8 as sent (Y0 U Y1 V for yuv422_yuy2, U Y0 V Y1 for uyvy); bayer frames are (H, W)
mosaics. Decoding returns a view into `data` whenever numpy allows (host byte order), so the array
shares memory with the message; copy it before the message is reused.
"""
import re
import sys

import cv2
import numpy as np


class ImageCodecError(ValueError):
    """Raised for image data or encodings that cannot be decoded or encoded; says what is wrong."""


# name -> (layout, dtype, channels). Layout is a colour family that cv2.cvtColor understands, or
# 'generic' for the OpenCV type names (8UC3, 32FC1...) that carry no colour meaning.
_COLOR = {
    'rgb8': ('rgb', np.uint8, 3), 'bgr8': ('bgr', np.uint8, 3),
    'rgba8': ('rgba', np.uint8, 4), 'bgra8': ('bgra', np.uint8, 4),
    'mono8': ('mono', np.uint8, 1),
    'rgb16': ('rgb', np.uint16, 3), 'bgr16': ('bgr', np.uint16, 3),
    'rgba16': ('rgba', np.uint16, 4), 'bgra16': ('bgra', np.uint16, 4),
    'mono16': ('mono', np.uint16, 1),
    # ROS names 'yuv422' (UYVY) and 'yuv422_yuy2' (YUYV); newer distros add 'uyvy' and 'yuyv'.
    'yuv422': ('uyvy', np.uint8, 2), 'uyvy': ('uyvy', np.uint8, 2),
    'yuv422_yuy2': ('yuyv', np.uint8, 2), 'yuyv': ('yuyv', np.uint8, 2),
}
for _pattern in ('rggb', 'bggr', 'gbrg', 'grbg'):
    _COLOR[f'bayer_{_pattern}8'] = (f'bayer_{_pattern}', np.uint8, 1)
    _COLOR[f'bayer_{_pattern}16'] = (f'bayer_{_pattern}', np.uint16, 1)

_GENERIC = re.compile(r'^(8|16|32|64)([USF])C([1-4])$')
_GENERIC_DTYPES = {
    ('8', 'U'): np.uint8, ('8', 'S'): np.int8, ('16', 'U'): np.uint16, ('16', 'S'): np.int16,
    ('32', 'S'): np.int32, ('32', 'F'): np.float32, ('64', 'F'): np.float64,
}

# OpenCV names the bayer pattern by the second row; cv_bridge maps ROS rggb -> BayerBG etc.
# (checked by test_bayer_pattern_names_match_opencv).
_BAYER_CV = {'bayer_rggb': 'BG', 'bayer_bggr': 'RG', 'bayer_gbrg': 'GR', 'bayer_grbg': 'GB'}
# Which RGB channel each 2x2 mosaic position samples, for encoding into bayer.
_BAYER_SITES = {
    'bayer_rggb': ((0, 1), (1, 2)), 'bayer_bggr': ((2, 1), (1, 0)),
    'bayer_gbrg': ((1, 2), (0, 1)), 'bayer_grbg': ((1, 0), (2, 1)),
}
_CV_NAME = {'rgb': 'RGB', 'bgr': 'BGR', 'rgba': 'RGBA', 'bgra': 'BGRA', 'mono': 'GRAY'}
_YUV_CV = {'yuyv': 'YUY2', 'uyvy': 'UYVY'}
# Generic types get OpenCV's colour convention when converted to a colour encoding.
_GENERIC_LAYOUT = {1: 'mono', 3: 'bgr', 4: 'bgra'}

COMPRESSED_FORMATS = ('jpeg', 'png')
_COMPRESSED_ALIASES = {'jpeg': 'jpeg', 'jpg': 'jpeg', 'png': 'png'}


def encodings():
    """Return the named encodings this codec knows (OpenCV type names like 8UC3 work too)."""
    return tuple(_COLOR) + ('8UC1', '8UC3', '8UC4', '16UC1', '16UC3', '32FC1', '64FC1')


def encoding_info(encoding):
    """
    Describe an encoding as (layout, dtype, channels).

    Layout is 'rgb', 'bgr', 'rgba', 'bgra', 'mono', 'yuyv', 'uyvy', 'bayer_<pattern>' or
    'generic'. Raises `ImageCodecError` for an unknown encoding.
    """
    if not isinstance(encoding, str):
        raise ImageCodecError(f'encoding must be a string, got {type(encoding).__name__}')
    if encoding in _COLOR:
        layout, dtype, channels = _COLOR[encoding]
        return layout, np.dtype(dtype), channels
    match = _GENERIC.match(encoding)
    if match and (match.group(1), match.group(2)) in _GENERIC_DTYPES:
        return 'generic', np.dtype(_GENERIC_DTYPES[match.group(1), match.group(2)]), \
            int(match.group(3))
    raise ImageCodecError(f'unknown image encoding {encoding!r}; known: {", ".join(encodings())}')


def _array_shape(layout, height, width, channels):
    return (height, width) if channels == 1 else (height, width, channels)


def decode_image(encoding, height, width, step, data, is_bigendian=False,
                 desired_encoding='passthrough'):
    """
    Turn sensor_msgs/Image fields into an array.

    Args:
        encoding (`str`): The message's encoding (rgb8, bgr8, mono16, yuv422_yuy2, bayer_rggb8,
            32FC1, ...).
        height (`int`), width (`int`): Image size in pixels, both > 0.
        step (`int`): Bytes per row, >= width * bytes per pixel (extra bytes are row padding).
        data (bytes-like): At least step * height bytes (array.array, bytes, memoryview, ndarray).
        is_bigendian (`bool`, *optional*, defaults to False): Byte order of multi-byte samples.
        desired_encoding (`str`, *optional*, defaults to `'passthrough'`): Convert to this
            encoding (see `convert_encoding`); 'passthrough' keeps the message's layout.

    Returns:
        `(np.ndarray, str)`: the image and its encoding. With 'passthrough' and host byte order the
        array is a view into `data` (no copy).

    Raises:
        `ImageCodecError` naming the problem: unknown encoding, zero size, step too small, data
        too short, odd width for yuv422.
    """
    layout, dtype, channels = encoding_info(encoding)
    height, width, step = _check_int('height', height), _check_int('width', width), \
        _check_int('step', step)
    if height <= 0 or width <= 0:
        raise ImageCodecError(f'zero-size image: height={height}, width={width}')
    if layout in _YUV_CV and width % 2:
        raise ImageCodecError(f'{encoding} needs an even width (pixel pairs), got {width}')
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageCodecError(
            f'step {step} is smaller than width * bytes per pixel = {width} * '
            f'{channels * dtype.itemsize} = {row_bytes} for {encoding}')
    try:
        buffer = memoryview(data).cast('B')
    except TypeError as exc:
        raise ImageCodecError(f'image data is not a bytes-like object: {exc}') from None
    if buffer.nbytes < step * height:
        raise ImageCodecError(
            f'image data has {buffer.nbytes} bytes, fewer than step * height = {step} * {height}'
            f' = {step * height} for a {width}x{height} {encoding} image')
    big = bool(is_bigendian) and dtype.itemsize > 1
    file_dtype = dtype.newbyteorder('>' if big else '<') if dtype.itemsize > 1 else dtype
    shape = _array_shape(layout, height, width, channels)
    item = dtype.itemsize
    strides = (step, channels * item) if channels == 1 else (step, channels * item, item)
    # One strided view: padded rows are skipped by the row stride, nothing is copied.
    array = np.ndarray(shape, dtype=file_dtype, buffer=buffer, offset=0, strides=strides)
    if not file_dtype.isnative:
        array = array.astype(dtype)  # swap to host order: the only copy on this path
    if desired_encoding in (None, '', 'passthrough'):
        return array, encoding
    return convert_encoding(array, encoding, desired_encoding), desired_encoding


def encode_image(array, encoding='passthrough', step=None):
    """
    Turn an array into sensor_msgs/Image fields.

    Args:
        array (`np.ndarray`): (H, W) or (H, W, C) image whose dtype and channel count match
            `encoding` (yuv422 encodings take (H, W, 2) uint8).
        encoding (`str`, *optional*, defaults to `'passthrough'`): The message encoding; the
            array is packed as is, not converted (use `convert_encoding` first for that).
            'passthrough' names the array by its type (8UC3, 16UC1, 32FC1...), as cv_bridge does.
        step (`int`, *optional*): Row size in bytes; larger than the packed row to pad rows.

    Returns:
        `dict` with keys height, width, encoding, is_bigendian, step and data (a 1-D uint8
        memoryview; it is the array's own memory when the array is contiguous and unpadded).
    """
    if not isinstance(array, np.ndarray):
        raise ImageCodecError(f'expected a numpy array, got {type(array).__name__}')
    if array.ndim not in (2, 3) or array.size == 0:
        raise ImageCodecError(f'expected a non-empty (H, W) or (H, W, C) array, got shape '
                              f'{array.shape}')
    channels = 1 if array.ndim == 2 else array.shape[2]
    if encoding in (None, '', 'passthrough'):
        encoding = _generic_name(array.dtype, channels)
    layout, dtype, want_channels = encoding_info(encoding)
    if array.dtype.newbyteorder('=') != dtype.newbyteorder('=') or channels != want_channels:
        raise ImageCodecError(
            f'{encoding} needs {want_channels} channel(s) of {dtype.name}, got an array of '
            f'shape {array.shape} and dtype {array.dtype}')
    height, width = array.shape[:2]
    if layout in _YUV_CV and width % 2:
        raise ImageCodecError(f'{encoding} needs an even width (pixel pairs), got {width}')
    row_bytes = width * channels * dtype.itemsize
    big = array.dtype.byteorder == '>' or (array.dtype.byteorder == '=' and
                                           sys.byteorder == 'big')
    if step is None or step == row_bytes:
        packed = np.ascontiguousarray(array)
        step = row_bytes
    else:
        step = _check_int('step', step)
        if step < row_bytes:
            raise ImageCodecError(f'step {step} is smaller than the row size {row_bytes} bytes')
        padded = np.zeros((height, step), np.uint8)
        rows = np.ascontiguousarray(array).reshape(height, -1).view(np.uint8)
        padded[:, :row_bytes] = rows
        packed = padded
    data = memoryview(packed.reshape(-1).view(np.uint8))
    return {'height': int(height), 'width': int(width), 'encoding': encoding,
            'is_bigendian': int(big and dtype.itemsize > 1), 'step': int(step), 'data': data}


def _generic_name(dtype, channels):
    for (bits, kind), candidate in _GENERIC_DTYPES.items():
        if np.dtype(candidate) == dtype.newbyteorder('='):
            return f'{bits}{kind}C{channels}'
    raise ImageCodecError(f'no image encoding for arrays of dtype {dtype}')


def _check_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ImageCodecError(f'{name} must be an integer, got {value!r}')
    return int(value)


def convert_encoding(array, src_encoding, dst_encoding):
    """
    Convert an image between encodings, like cv_bridge's cvtColor.

    Colour encodings (rgb/bgr/rgba/bgra/mono at 8 or 16 bits, yuv422, bayer) convert freely with
    OpenCV (bayer is demosaiced; encoding *to* bayer samples the mosaic). 8 <-> 16 bit scales by
    257 so 255 <-> 65535. Generic types (8UC3, 16UC1, 32FC1...) convert to a generic type with the
    same channel count by a plain cast, and 8/16-bit ones to colour encodings with OpenCV's
    convention (1 channel = mono, 3 = bgr, 4 = bgra). Returns the input itself when nothing
    changes.
    """
    src_layout, src_dtype, src_ch = encoding_info(src_encoding)
    dst_layout, dst_dtype, dst_ch = encoding_info(dst_encoding)
    _check_array(array, src_encoding, src_dtype, src_ch)
    if not array.dtype.isnative:
        array = array.astype(src_dtype)
    if src_encoding == dst_encoding:
        return array
    if src_layout == 'generic' or dst_layout == 'generic':
        if src_ch == dst_ch and (src_layout == 'generic' or src_layout == 'mono') \
                and (dst_layout == 'generic' or dst_layout == 'mono'):
            return _cast(array, dst_dtype)
        if src_layout == 'generic':
            src_layout = _colour_view(src_encoding, src_dtype, src_ch)
        if dst_layout == 'generic':
            dst_layout = _colour_view(dst_encoding, dst_dtype, dst_ch)
        if src_layout == dst_layout and src_dtype == dst_dtype:
            return array
    if dst_layout in _YUV_CV:
        # YUV is 8-bit only: change depth first, then pack.
        array = _convert_depth(array, src_dtype, dst_dtype)
        return _convert_layout(array, src_layout, dst_layout)
    return _convert_depth(_convert_layout(array, src_layout, dst_layout), src_dtype, dst_dtype)


def _check_array(array, encoding, dtype, channels):
    if not isinstance(array, np.ndarray):
        raise ImageCodecError(f'expected a numpy array, got {type(array).__name__}')
    have = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else -1)
    if have != channels or array.dtype.newbyteorder('=') != dtype or array.size == 0:
        raise ImageCodecError(
            f'{encoding} needs a non-empty array with {channels} channel(s) of {dtype.name}, got '
            f'shape {array.shape} and dtype {array.dtype}')


def _colour_view(encoding, dtype, channels):
    if dtype not in (np.uint8, np.uint16) or channels not in _GENERIC_LAYOUT:
        raise ImageCodecError(f'{encoding} has no colour meaning; it converts only to '
                              f'{channels}-channel generic types')
    return _GENERIC_LAYOUT[channels]


def _cast(array, dtype):
    # Saturating cast, like OpenCV's convertTo: out-of-range values clip instead of wrapping.
    if array.dtype == dtype:
        return array
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if np.issubdtype(array.dtype, np.floating):
            array = np.rint(array)
        if np.issubdtype(array.dtype, np.floating) or np.iinfo(array.dtype).min < info.min or \
                np.iinfo(array.dtype).max > info.max:
            array = np.clip(array, info.min, info.max)
    return array.astype(dtype)


def _convert_depth(array, src_dtype, dst_dtype):
    if src_dtype == dst_dtype:
        return array
    if src_dtype == np.uint8 and dst_dtype == np.uint16:
        return array.astype(np.uint16) * np.uint16(257)
    if src_dtype == np.uint16 and dst_dtype == np.uint8:
        # Rounded division by 257: exact inverse of the 8 -> 16 bit scaling.
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise ImageCodecError(f'cannot convert colour data from {src_dtype} to {dst_dtype}')


def _cvt(array, code_name, src_layout, dst_layout):
    code = getattr(cv2, code_name, None)
    if code is None:
        raise ImageCodecError(f'OpenCV {cv2.__version__} cannot convert {src_layout} to '
                              f'{dst_layout} ({code_name} missing)')
    return cv2.cvtColor(array, code)


def _convert_layout(array, src, dst):
    if src == dst:
        return array
    if dst.startswith('bayer_'):
        rgb = _convert_layout(array, src, 'rgb')
        mosaic = np.empty(rgb.shape[:2], rgb.dtype)
        for dy, row in enumerate(_BAYER_SITES[dst]):
            for dx, channel in enumerate(row):
                mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel]
        return mosaic
    if src.startswith('bayer_'):
        if dst in _YUV_CV:
            return _convert_layout(_convert_layout(array, src, 'rgb'), 'rgb', dst)
        return _cvt(array, f'COLOR_Bayer{_BAYER_CV[src]}2{_CV_NAME[dst]}', src, dst)
    if src in _YUV_CV:
        if dst in _YUV_CV:
            return _convert_layout(_convert_layout(array, src, 'rgb'), 'rgb', dst)
        return _cvt(array, f'COLOR_YUV2{_CV_NAME[dst]}_{_YUV_CV[src]}', src, dst)
    if dst in _YUV_CV:
        if src == 'mono':
            array, src = cv2.cvtColor(array, cv2.COLOR_GRAY2RGB), 'rgb'
        return _cvt(array, f'COLOR_{_CV_NAME[src]}2YUV_{_YUV_CV[dst]}', src, dst)
    return _cvt(array, f'COLOR_{_CV_NAME[src]}2{_CV_NAME[dst]}', src, dst)


def to_uint8(array):
    """
    8-bit samples of uint8 (as they are), uint16 (rounded division by 257, so 8-bit data stored
    in 16 bits comes back exactly) or float data in [0, 1] (rounded; finite values expected).
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_rgb(array, encoding):
    """
    Return `(image, layout)`: an RGB (H, W, 3) image, or the (H, W) plane for mono/depth data.

    Colour encodings become RGB at their bit depth (alpha is dropped; bayer and yuv422 are
    converted); mono8/mono16 and one-channel generic types (16UC1, 32FC1...) are returned
    unchanged with layout 'mono'. Otherwise layout is 'rgb'.
    """
    layout, dtype, channels = encoding_info(encoding)
    if channels == 1 and (layout in ('mono', 'generic')):
        _check_array(array, encoding, dtype, channels)
        return array, 'mono'
    target = 'rgb16' if dtype == np.uint16 and layout not in _YUV_CV else 'rgb8'
    return convert_encoding(array, encoding, target), 'rgb'


def frame_for_processing(array, encoding, keep_alpha=False):
    """
    The frame a restorer or detector works on, from an image in ``encoding``: RGB (H, W, 3) at
    the image's bit depth (`to_rgb`), the (H, W) plane of mono and depth encodings, or, with
    ``keep_alpha``, RGBA (H, W, 4) for encodings with an alpha channel, so that
    `frame_to_encoding` can put the alpha back bit-identical.
    """
    rgba = _with_alpha(array, encoding) if keep_alpha else None
    return rgba if rgba is not None else to_rgb(array, encoding)[0]


def compressed_for_processing(data, fmt='', keep_alpha=False):
    """
    `frame_for_processing` of a CompressedImage payload: ``(frame, tag)``, the tag naming the
    codec and the encoding the image was recorded in ('jpeg:rgb8'; from the format field when it
    says, else what the codec decoded: 'bgr8', 'mono8', ...).
    """
    image, decoded = decode_compressed(data, fmt)
    codec, original = parse_compressed_format(fmt)
    tag = original or decoded
    if image.ndim == 2 and encoding_info(tag)[2] != 1:
        tag = decoded  # a mono jpeg of a colour source comes back as mono
    return frame_for_processing(image, decoded, keep_alpha), f'{codec or "jpeg"}:{tag}'


def frame_to_encoding(frame, target):
    """A frame as `frame_for_processing` gave it (same dtype), back in the ``target`` encoding."""
    return convert_encoding(frame, _processed_encoding(frame, target), target)


def _with_alpha(image, encoding):
    """RGBA at the image's bit depth when `encoding` has four 8/16-bit channels, else None."""
    layout, dtype, channels = encoding_info(encoding)
    if channels != 4 or dtype not in (np.uint8, np.uint16) or \
            layout not in ('rgba', 'bgra', 'generic'):
        return None
    return convert_encoding(image, encoding, 'rgba16' if dtype == np.uint16 else 'rgba8')


def _processed_encoding(image, target):
    # Name what frame_for_processing produced for `target`: the mono/depth plane keeps the
    # target's own encoding; colour is rgb8 or rgb16, rgba8 or rgba16 with the alpha kept.
    _, dtype, channels = encoding_info(target)
    if getattr(image, 'ndim', 0) == 2:
        return target if channels == 1 else ('mono16' if image.dtype == 'uint16' else 'mono8')
    base = 'rgba' if image.ndim == 3 and image.shape[2] == 4 else 'rgb'
    return base + ('16' if getattr(image, 'dtype', None) == 'uint16' else '8')


def _compressed_format(fmt):
    key = str(fmt).strip().lower().lstrip('.')
    if key not in _COMPRESSED_ALIASES:
        raise ImageCodecError(f'unknown compressed format {fmt!r}; valid: {COMPRESSED_FORMATS}')
    return _COMPRESSED_ALIASES[key]


def encode_compressed(array, encoding='passthrough', fmt='jpeg', quality=95):
    """
    Compress an image for sensor_msgs/CompressedImage.

    Args:
        array (`np.ndarray`): The image, laid out as `encoding` says.
        encoding (`str`, *optional*, defaults to `'passthrough'`): Its encoding; 'passthrough'
            treats 1/3/4 channels as mono/bgr/bgra (OpenCV convention, like cv_bridge).
        fmt (`str`, *optional*, defaults to `'jpeg'`): 'jpeg' (8-bit, alpha dropped) or 'png'
            (8 or 16 bit, lossless).
        quality (`int`, *optional*, defaults to 95): JPEG quality 1..100.

    Returns:
        `(bytes, str)`: the compressed bytes and the message format string in image_transport's
        style, e.g. 'rgb8; jpeg compressed bgr8', which lets the decoder restore the encoding.
    """
    fmt = _compressed_format(fmt)
    if not isinstance(array, np.ndarray):
        raise ImageCodecError(f'expected a numpy array, got {type(array).__name__}')
    channels = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else 0)
    if encoding in (None, '', 'passthrough'):
        if array.dtype.newbyteorder('=') not in (np.uint8, np.uint16) or \
                channels not in _GENERIC_LAYOUT:
            raise ImageCodecError(f'cannot compress an array of shape {array.shape} and dtype '
                                  f'{array.dtype}')
        depth = 8 if array.dtype == np.uint8 else 16
        encoding = {1: f'mono{depth}', 3: f'bgr{depth}', 4: f'bgra{depth}'}[channels]
    layout, dtype, _ = encoding_info(encoding)
    one_channel = channels == 1 and layout in ('mono', 'generic')
    if fmt == 'jpeg':
        plain = 'mono8' if one_channel else 'bgr8'
    else:
        depth = '16' if dtype == np.uint16 else '8'
        if one_channel:
            plain = f'mono{depth}'
        elif layout in ('rgba', 'bgra') or (layout == 'generic' and channels == 4):
            plain = f'bgra{depth}'
        else:
            plain = f'bgr{depth}'
    image = convert_encoding(array, encoding, plain)
    if fmt == 'jpeg':
        if not 1 <= int(quality) <= 100:
            raise ImageCodecError(f'jpeg quality must be in 1..100, got {quality}')
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # fast; png is lossless at any level
    ok, buffer = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', image, params)
    if not ok:
        raise ImageCodecError(f'OpenCV could not encode a {image.shape} {image.dtype} image as '
                              f'{fmt}')
    return buffer.tobytes(), f'{encoding}; {fmt} compressed {plain}'


def parse_compressed_format(fmt):
    """
    Split a CompressedImage format string into (codec, original encoding or None).

    Accepts 'jpeg', 'png', 'jpg' and image_transport's 'rgb8; jpeg compressed bgr8'.
    """
    text = str(fmt or '').strip()
    original = None
    if ';' in text:
        head, tail = text.split(';', 1)
        original = head.strip() or None
        text = tail.strip()
    codec = text.split()[0].lower() if text else None
    if codec is not None and codec not in _COMPRESSED_ALIASES:
        codec = None
    if original is not None:
        try:
            encoding_info(original)
        except ImageCodecError:
            original = None
    return (_COMPRESSED_ALIASES[codec] if codec else None), original


def decode_compressed(data, fmt='', desired_encoding='passthrough'):
    """
    Decompress a sensor_msgs/CompressedImage payload.

    Args:
        data (bytes-like): jpeg or png bytes.
        fmt (`str`, *optional*): The message's format field; used only to report the original
            encoding (image_transport's 'rgb8; jpeg compressed bgr8').
        desired_encoding (`str`, *optional*, defaults to `'passthrough'`): 'passthrough' returns
            what OpenCV decodes (mono8/bgr8/bgra8 or their 16-bit forms); 'original' converts
            back to the encoding named in `fmt` when there is one; anything else converts to it.

    Returns:
        `(np.ndarray, str)`: the image and its encoding.

    Raises:
        `ImageCodecError` when the bytes are empty or not a decodable image.
    """
    try:
        buffer = np.frombuffer(memoryview(data).cast('B'), np.uint8)
    except TypeError as exc:
        raise ImageCodecError(f'compressed data is not a bytes-like object: {exc}') from None
    if buffer.size == 0:
        raise ImageCodecError('compressed image data is empty')
    if desired_encoding == 'rgb8' and buffer[:2].tobytes() == b'\xff\xd8' and \
            hasattr(cv2, 'IMREAD_COLOR_RGB'):
        # JPEG straight to RGB (OpenCV >= 4.10): saves a full-frame colour conversion pass.
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR_RGB)
        if image is None or image.size == 0:
            raise ImageCodecError(f'undecodable compressed image ({buffer.size} bytes, format '
                                  f'{fmt!r}): not a valid jpeg stream')
        return image, 'rgb8'
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageCodecError(f'undecodable compressed image ({buffer.size} bytes, format '
                              f'{fmt!r}): not a valid jpeg/png stream')
    channels = 1 if image.ndim == 2 else image.shape[2]
    depth = '16' if image.dtype == np.uint16 else '8'
    if image.dtype not in (np.uint8, np.uint16) or channels not in _GENERIC_LAYOUT:
        raise ImageCodecError(f'unsupported decoded image: shape {image.shape}, {image.dtype}')
    encoding = {1: 'mono', 3: 'bgr', 4: 'bgra'}[channels] + depth
    if desired_encoding == 'original':
        desired_encoding = parse_compressed_format(fmt)[1] or 'passthrough'
    if desired_encoding in (None, '', 'passthrough') or desired_encoding == encoding:
        return image, encoding
    return convert_encoding(image, encoding, desired_encoding), desired_encoding

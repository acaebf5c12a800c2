"""
sensor_msgs Image / CompressedImage <-> numpy, in cv_bridge's API shape.

The pixel work lives in adaqual_ros.io.codec (no ROS); this module only moves message fields.
Every failure raises `ImageCodecError` (a ValueError) naming the problem.

Nodes use `image_to_rgb` on input and `rgb_to_image` on output so that a restored frame goes out
in the encoding (and with the header) it came in with.
"""
import array as _array

from sensor_msgs.msg import CompressedImage, Image

from adaqual_ros.io.codec import (
    ImageCodecError,
    compressed_for_processing,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
    frame_for_processing,
    frame_to_encoding,
    to_rgb,
)

__all__ = [
    'ImageCodecError', 'imgmsg_to_cv2', 'cv2_to_imgmsg', 'compressed_imgmsg_to_cv2',
    'cv2_to_compressed_imgmsg', 'image_to_rgb', 'rgb_to_image', 'to_rgb',
]


def _bytes_array(data):
    # Image.data's setter takes array.array('B') without a per-element check; frombytes is one
    # memcpy from any bytes-like object.
    out = _array.array('B')
    out.frombytes(data)
    return out


def imgmsg_to_cv2(msg, desired_encoding='passthrough'):
    """
    Convert a sensor_msgs/Image to a numpy array.

    Args:
        msg (`sensor_msgs.msg.Image`): The message.
        desired_encoding (`str`, *optional*, defaults to `'passthrough'`): 'passthrough' returns
            the message's own layout, as a view into `msg.data` when byte order allows (copy it
            before reusing the message); any other encoding converts (e.g. 'bgr8', 'rgb8').

    Returns:
        `np.ndarray`: (H, W) or (H, W, C).
    """
    if not isinstance(msg, Image):
        raise ImageCodecError(f'expected sensor_msgs/Image, got {type(msg).__name__}')
    array, _ = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                            msg.is_bigendian, desired_encoding)
    return array


def cv2_to_imgmsg(cvim, encoding='passthrough', header=None, step=None):
    """
    Convert a numpy array to a sensor_msgs/Image.

    Args:
        cvim (`np.ndarray`): (H, W) or (H, W, C) image laid out as `encoding` says (no colour
            conversion happens here, as in cv_bridge).
        encoding (`str`, *optional*, defaults to `'passthrough'`): The message encoding;
            'passthrough' names it by type (8UC3, 16UC1, 32FC1...).
        header (`std_msgs.msg.Header`, *optional*): Copied into the message.
        step (`int`, *optional*): Row size in bytes, to pad rows (default: packed rows).

    Returns:
        `sensor_msgs.msg.Image`
    """
    fields = encode_image(cvim, encoding, step)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = fields['height'], fields['width']
    msg.encoding, msg.step = fields['encoding'], fields['step']
    msg.is_bigendian = fields['is_bigendian']
    msg.data = _bytes_array(fields['data'])
    return msg


def compressed_imgmsg_to_cv2(msg, desired_encoding='passthrough'):
    """
    Convert a sensor_msgs/CompressedImage to a numpy array.

    'passthrough' returns what OpenCV decodes (bgr8, mono8, bgra8 or 16-bit forms, as cv_bridge
    does); 'original' converts back to the encoding recorded in the format field
    ('rgb8; jpeg compressed bgr8'); any other encoding converts to it.
    """
    if not isinstance(msg, CompressedImage):
        raise ImageCodecError(f'expected sensor_msgs/CompressedImage, got {type(msg).__name__}')
    array, _ = decode_compressed(msg.data, msg.format, desired_encoding)
    return array


def cv2_to_compressed_imgmsg(cvim, dst_format='jpeg', header=None, encoding='passthrough',
                             quality=95):
    """
    Convert a numpy array to a sensor_msgs/CompressedImage.

    Args:
        cvim (`np.ndarray`): The image. With `encoding='passthrough'` 3/4 channels are taken as
            BGR/BGRA (cv_bridge's convention); name the encoding (e.g. 'rgb8') otherwise.
        dst_format (`str`, *optional*, defaults to `'jpeg'`): 'jpeg' (or 'jpg') or 'png'.
        header (`std_msgs.msg.Header`, *optional*): Copied into the message.
        encoding (`str`, *optional*, defaults to `'passthrough'`): Layout of `cvim`.
        quality (`int`, *optional*, defaults to 95): JPEG quality.

    Returns:
        `sensor_msgs.msg.CompressedImage` whose format field is image_transport style
        ('rgb8; jpeg compressed bgr8').
    """
    data, fmt = encode_compressed(cvim, encoding, dst_format, quality)
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = _bytes_array(data)
    return msg


def image_to_rgb(msg, keep_alpha=False):
    """
    Decode an Image or CompressedImage for processing.

    Args:
        msg (`Image` or `CompressedImage`): the message.
        keep_alpha (`bool`, *optional*, defaults to False): return RGBA (H, W, 4) for images with
            an alpha channel (rgba/bgra at 8 or 16 bits, 8UC4/16UC4, a png with alpha), so that
            `rgb_to_image` can put the alpha back bit-identical. Without it alpha is dropped.

    Returns:
        `(np.ndarray, str)`: an RGB (H, W, 3) image (uint8, or uint16 for 16-bit colour), RGBA
        with `keep_alpha`, or the (H, W) plane for mono and depth encodings, plus the original
        encoding to hand back to `rgb_to_image`. For a CompressedImage the original encoding
        comes from its format field when recorded there, else 'bgr8'/'mono8'; the returned tag
        then also records the codec ('jpeg:rgb8') so `rgb_to_image` can answer with a
        CompressedImage.
    """
    if isinstance(msg, CompressedImage):
        return compressed_for_processing(msg.data, msg.format, keep_alpha)
    return frame_for_processing(imgmsg_to_cv2(msg), msg.encoding, keep_alpha), msg.encoding


def rgb_to_image(rgb, encoding, header=None):
    """
    Encode a processed frame back into the input's encoding.

    Args:
        rgb (`np.ndarray`): RGB (H, W, 3), RGBA (H, W, 4) or a (H, W) plane, as `image_to_rgb`
            returned it (same dtype).
        encoding (`str`): The tag `image_to_rgb` returned: an Image encoding, or 'jpeg:<enc>' /
            'png:<enc>' for a CompressedImage.
        header (`std_msgs.msg.Header`, *optional*): Copied into the message (keep the input's).

    Returns:
        `sensor_msgs.msg.Image` in `encoding`, or a `CompressedImage` for a compressed tag.
    """
    if not isinstance(encoding, str):
        raise ImageCodecError(f'encoding must be a string, got {type(encoding).__name__}')
    codec, _, target = encoding.partition(':') if ':' in encoding else (None, '', encoding)
    image = frame_to_encoding(rgb, target)
    if codec is not None:
        return cv2_to_compressed_imgmsg(image, codec, header, encoding=target)
    return cv2_to_imgmsg(image, target, header)

"""Image codec: every encoding round-trips exactly, padded rows and byte order are honoured."""
import cv2
import numpy as np
import pytest

from adaqual_ros.io import codec
from adaqual_ros.io.codec import ImageCodecError

ENCODINGS = codec.encodings()


def _random_image(encoding, height=6, width=10, seed=0):
    _, dtype, channels = codec.encoding_info(encoding)
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype.kind == 'f':
        return rng.normal(0, 100, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _decode(fields, **kwargs):
    return codec.decode_image(fields['encoding'], fields['height'], fields['width'],
                              fields['step'], fields['data'], fields['is_bigendian'], **kwargs)


@pytest.mark.parametrize('encoding', ENCODINGS)
@pytest.mark.parametrize('pad', [0, 3, 64])
def test_round_trip_every_encoding_exact(encoding, pad):
    image = _random_image(encoding)
    row = image.shape[1] * image.itemsize * (1 if image.ndim == 2 else image.shape[2])
    fields = codec.encode_image(image, encoding, step=row + pad)
    assert fields['step'] == row + pad
    assert len(fields['data']) == (row + pad) * image.shape[0]
    decoded, name = _decode(fields)
    assert name == encoding
    assert decoded.dtype == image.dtype and decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)


def test_passthrough_decode_is_a_view_of_the_data():
    image = _random_image('bgr8', 720, 1280)
    data = bytearray(image.tobytes())
    decoded, _ = codec.decode_image('bgr8', 720, 1280, 1280 * 3, data)
    assert np.shares_memory(decoded, np.frombuffer(data, np.uint8))
    padded = bytearray(720 * 4000)
    view, _ = codec.decode_image('rgb8', 720, 1280, 4000, padded)
    assert np.shares_memory(view, np.frombuffer(padded, np.uint8))
    assert view.strides[0] == 4000


def test_encode_of_contiguous_array_does_not_copy():
    image = _random_image('mono16', 8, 8)
    fields = codec.encode_image(image, 'mono16')
    assert np.shares_memory(np.frombuffer(fields['data'], np.uint8), image)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1', 'rgb16', '32FC1', 'bayer_rggb16'])
def test_big_endian_data_decodes_to_host_values(encoding):
    image = _random_image(encoding, seed=3)
    _, dtype, channels = codec.encoding_info(encoding)
    big = image.astype(dtype.newbyteorder('>')).tobytes()
    step = image.shape[1] * channels * dtype.itemsize
    decoded, _ = codec.decode_image(encoding, image.shape[0], image.shape[1], step, big, True)
    assert decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, image)
    # The same bytes read as little-endian must differ: the flag is really used.
    wrong, _ = codec.decode_image(encoding, image.shape[0], image.shape[1], step, big, False)
    assert not np.array_equal(wrong, image)


def test_big_endian_array_encodes_with_flag_and_round_trips():
    image = _random_image('mono16', seed=4).astype('>u2')
    fields = codec.encode_image(image, 'mono16')
    assert fields['is_bigendian'] == 1
    decoded, _ = _decode(fields)
    np.testing.assert_array_equal(decoded, image)


def test_odd_step_on_16_bit_rows():
    image = _random_image('mono16', 5, 7, seed=5)
    fields = codec.encode_image(image, 'mono16', step=7 * 2 + 1)
    decoded, _ = _decode(fields)
    np.testing.assert_array_equal(decoded, image)


def test_passthrough_names_array_by_type():
    assert codec.encode_image(np.zeros((2, 2, 3), np.uint8))['encoding'] == '8UC3'
    assert codec.encode_image(np.zeros((2, 2), np.uint16))['encoding'] == '16UC1'
    assert codec.encode_image(np.zeros((2, 2), np.float32))['encoding'] == '32FC1'


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize('args, match', [
    (('rgb9', 2, 2, 6, bytes(12)), 'unknown image encoding'),
    (('rgb8', 2, 2, 6, bytes(11)), 'fewer than step \\* height'),
    (('rgb8', 2, 2, 10, bytes(18)), 'fewer than step \\* height'),
    (('rgb8', 2, 2, 5, bytes(12)), 'step 5 is smaller than width'),
    (('mono16', 2, 3, 5, bytes(12)), 'step 5 is smaller than width'),
    (('rgb8', 0, 2, 6, bytes(0)), 'zero-size'),
    (('mono8', 3, 0, 0, bytes(0)), 'zero-size'),
    (('yuv422_yuy2', 2, 3, 6, bytes(12)), 'even width'),
    (('rgb8', 2, 2, 6, 'not bytes'), 'bytes-like'),
    (('rgb8', 2.0, 2, 6, bytes(12)), 'height must be an integer'),
])
def test_decode_bad_input_raises_named_error(args, match):
    with pytest.raises(ImageCodecError, match=match):
        codec.decode_image(*args)


def test_codec_error_is_a_value_error():
    assert issubclass(ImageCodecError, ValueError)


@pytest.mark.parametrize('array, encoding, match', [
    (np.zeros((2, 2, 3), np.uint8), 'mono8', 'needs 1 channel'),
    (np.zeros((2, 2, 3), np.uint16), 'rgb8', 'uint8'),
    (np.zeros((0, 2, 3), np.uint8), 'rgb8', 'non-empty'),
    (np.zeros((2, 3, 2), np.uint8), 'yuv422_yuy2', 'even width'),
    (np.zeros((2, 2, 3), np.uint8), 'rgb7', 'unknown image encoding'),
    ([[1, 2]], 'mono8', 'numpy array'),
])
def test_encode_bad_input_raises_named_error(array, encoding, match):
    with pytest.raises(ImageCodecError, match=match):
        codec.encode_image(array, encoding)


def test_encode_step_smaller_than_row_raises():
    with pytest.raises(ImageCodecError, match='step 5 is smaller'):
        codec.encode_image(np.zeros((2, 2, 3), np.uint8), 'rgb8', step=5)


@pytest.mark.parametrize('data, match', [
    (b'', 'empty'),
    (b'\xff\xd8\xff\xe0 definitely not a jpeg', 'undecodable'),
    (bytes(range(256)) * 4, 'undecodable'),
])
def test_undecodable_compressed_raises(data, match):
    with pytest.raises(ImageCodecError, match=match):
        codec.decode_compressed(data, 'jpeg')


def test_unknown_compressed_format_raises():
    with pytest.raises(ImageCodecError, match='unknown compressed format'):
        codec.encode_compressed(np.zeros((4, 4, 3), np.uint8), 'rgb8', 'webp2')


# --- colour conversions -----------------------------------------------------------------------

PATTERN_CHANNELS = {'rggb': ((0, 1), (1, 2)), 'bggr': ((2, 1), (1, 0)),
                    'gbrg': ((1, 2), (0, 1)), 'grbg': ((1, 0), (2, 1))}


@pytest.mark.parametrize('pattern', list(PATTERN_CHANNELS))
@pytest.mark.parametrize('bits', [8, 16])
def test_bayer_pattern_names_match_opencv(pattern, bits):
    # A flat colour mosaicked by hand with the ROS pattern must debayer back to that colour.
    dtype = np.uint8 if bits == 8 else np.uint16
    colour = np.array([200, 90, 30], dtype) * (1 if bits == 8 else 257)
    mosaic = np.empty((12, 16), dtype)
    for dy, row in enumerate(PATTERN_CHANNELS[pattern]):
        for dx, channel in enumerate(row):
            mosaic[dy::2, dx::2] = colour[channel]
    fields = codec.encode_image(mosaic, f'bayer_{pattern}{bits}')
    rgb, name = _decode(fields, desired_encoding=f'rgb{bits}')
    assert name == f'rgb{bits}'
    np.testing.assert_array_equal(rgb[2:-2, 2:-2], np.broadcast_to(colour, (8, 12, 3)))
    # And our own mosaic encoder reproduces the hand-made one.
    flat = np.broadcast_to(colour, (12, 16, 3)).copy()
    np.testing.assert_array_equal(
        codec.convert_encoding(flat, f'rgb{bits}', f'bayer_{pattern}{bits}'), mosaic)


def test_yuv422_grey_levels_and_byte_orders():
    # Limited-range BT.601: Y=16 is black, Y=235 is white, U=V=128 is grey.
    luma = np.array([16, 16, 126, 126, 235, 235], np.uint8)
    yuyv = np.stack([luma, np.full(6, 128, np.uint8)], axis=-1)[None]  # Y0 U Y1 V
    rgb, _ = codec.decode_image('yuv422_yuy2', 1, 6, 12, yuyv.tobytes(),
                                desired_encoding='rgb8')
    np.testing.assert_allclose(rgb[0, :, 0], [0, 0, 128, 128, 255, 255], atol=2)
    assert np.all(rgb[0].max(axis=1) - rgb[0].min(axis=1) <= 1)
    # The same pixels in UYVY order (U Y0 V Y1) must decode identically.
    uyvy = yuyv[..., ::-1].copy()
    for name in ('uyvy', 'yuv422'):
        rgb2, _ = codec.decode_image(name, 1, 6, 12, uyvy.tobytes(), desired_encoding='rgb8')
        np.testing.assert_array_equal(rgb2, rgb)


@pytest.mark.parametrize('encoding', ['yuv422_yuy2', 'yuyv', 'uyvy', 'yuv422'])
def test_rgb_to_yuv422_and_back_is_close(encoding):
    rgb = cv2.GaussianBlur(_random_image('rgb8', 32, 48, seed=7), (9, 9), 3)
    packed = codec.convert_encoding(rgb, 'rgb8', encoding)
    assert packed.shape == (32, 48, 2)
    back = codec.convert_encoding(packed, encoding, 'rgb8')
    # Chroma is shared by pixel pairs; on smooth content the error stays small.
    assert np.abs(back.astype(int) - rgb).mean() < 3


def test_depth_scaling_8_16_is_exact_both_ways():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    wide = codec.convert_encoding(image, 'mono8', 'mono16')
    assert wide.max() == 65535 and wide[0, 1] == 257
    np.testing.assert_array_equal(codec.convert_encoding(wide, 'mono16', 'mono8'), image)


def test_generic_casts_saturate():
    depth = np.array([[-5.0, 0.4, 1000.6, 1e9]], np.float32)
    out = codec.convert_encoding(depth, '32FC1', '16UC1')
    np.testing.assert_array_equal(out, [[0, 0, 1001, 65535]])


def test_colour_order_conversions():
    rgb = _random_image('rgb8', seed=8)
    bgr = codec.convert_encoding(rgb, 'rgb8', 'bgr8')
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])
    rgba = codec.convert_encoding(rgb, 'rgb8', 'rgba8')
    np.testing.assert_array_equal(rgba[..., :3], rgb)
    assert np.all(rgba[..., 3] == 255)
    # 8UC3 follows OpenCV's BGR convention.
    np.testing.assert_array_equal(codec.convert_encoding(bgr, '8UC3', 'rgb8'), rgb)
    with pytest.raises(ImageCodecError, match='no colour meaning'):
        codec.convert_encoding(np.zeros((2, 2), np.float32), '32FC1', 'rgb8')


def test_to_rgb_layouts():
    image = _random_image('bgra8', seed=9)
    rgb, layout = codec.to_rgb(image, 'bgra8')
    assert layout == 'rgb'
    np.testing.assert_array_equal(rgb, image[..., 2::-1])
    depth = _random_image('32FC1')
    plane, layout = codec.to_rgb(depth, '32FC1')
    assert layout == 'mono' and plane is depth


# --- compressed -------------------------------------------------------------------------------

@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8', 'mono16', 'bgra8', 'rgb16'])
def test_png_round_trip_exact(encoding):
    image = _random_image(encoding, 20, 30, seed=10)
    data, fmt = codec.encode_compressed(image, encoding, 'png')
    assert fmt.startswith(f'{encoding}; png compressed ')
    decoded, name = codec.decode_compressed(data, fmt, 'original')
    assert name == encoding
    np.testing.assert_array_equal(decoded, image)


def test_jpeg_round_trip_of_a_real_frame(asset):
    cap = cv2.VideoCapture(str(asset('data/video/people.mp4')))
    ok, bgr = cap.read()
    cap.release()
    assert ok, 'could not read a frame from people.mp4'
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    data, fmt = codec.encode_compressed(rgb, 'rgb8', 'jpeg', quality=90)
    assert fmt == 'rgb8; jpeg compressed bgr8'
    assert len(data) < rgb.nbytes / 5
    plain, name = codec.decode_compressed(data, fmt)
    assert name == 'bgr8'
    back, name = codec.decode_compressed(data, fmt, 'original')
    assert name == 'rgb8'
    np.testing.assert_array_equal(back, plain[..., ::-1])
    direct, name = codec.decode_compressed(data, fmt, 'rgb8')  # the decode-to-RGB fast path
    assert name == 'rgb8'
    np.testing.assert_array_equal(direct, back)
    mse = np.mean((back.astype(float) - rgb) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 32


def test_mono_jpeg_decodes_mono_or_to_rgb():
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))
    data, fmt = codec.encode_compressed(ramp, 'mono8', 'jpeg')
    assert fmt == 'mono8; jpeg compressed mono8'
    mono, name = codec.decode_compressed(data, fmt)
    assert name == 'mono8' and mono.shape == ramp.shape
    assert np.abs(mono.astype(int) - ramp).max() <= 4
    rgb, name = codec.decode_compressed(data, fmt, 'rgb8')
    assert name == 'rgb8' and rgb.shape == ramp.shape + (3,)
    np.testing.assert_array_equal(rgb, np.repeat(mono[..., None], 3, 2))


def test_jpeg_rejects_bad_quality():
    with pytest.raises(ImageCodecError, match='quality'):
        codec.encode_compressed(np.zeros((4, 4, 3), np.uint8), 'rgb8', 'jpeg', quality=0)


def test_parse_compressed_format():
    assert codec.parse_compressed_format('rgb8; jpeg compressed bgr8') == ('jpeg', 'rgb8')
    assert codec.parse_compressed_format('png') == ('png', None)
    assert codec.parse_compressed_format('jpg') == ('jpeg', None)
    assert codec.parse_compressed_format('') == (None, None)

"""
Image messages: conversions on real message objects, and a real 1280x720 frame sent from one
process to another through rclpy with header and pixels intact.
"""
import importlib.util
import os
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from adaqual_ros.io import codec  # noqa: E402
from adaqual_ros.ros import conversions as conv  # noqa: E402
from adaqual_ros.ros.qos import subscriber_qos  # noqa: E402

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
PUBLISHER = Path(__file__).resolve().parent / 'fixtures' / 'image_publisher.py'


def _fixture_module():
    # test/ is not a package (and `test` is a stdlib name), so load the fixture by path.
    spec = importlib.util.spec_from_file_location('image_publisher_fixture', PUBLISHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _header(sec=42, nanosec=7, frame_id='cam'):
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def _sample(encoding, height=6, width=8, seed=0):
    _, dtype, channels = codec.encoding_info(encoding)
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype.kind == 'f':
        return rng.normal(0, 10, shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


# --- message objects (no DDS) -----------------------------------------------------------------

@pytest.mark.parametrize('encoding', codec.encodings())
@pytest.mark.parametrize('pad', [0, 5])
def test_imgmsg_round_trip_every_encoding(encoding, pad):
    image = _sample(encoding)
    row = image.shape[1] * image.itemsize * (1 if image.ndim == 2 else image.shape[2])
    msg = conv.cv2_to_imgmsg(image, encoding, _header(), step=row + pad)
    assert (msg.encoding, msg.height, msg.width, msg.step) == (encoding, 6, 8, row + pad)
    assert msg.header.frame_id == 'cam' and msg.header.stamp.sec == 42
    # Through the wire format: serialise and deserialise like a subscriber would.
    from rclpy.serialization import deserialize_message, serialize_message
    received = deserialize_message(serialize_message(msg), Image)
    out = conv.imgmsg_to_cv2(received)
    np.testing.assert_array_equal(out, image)
    assert out.dtype == image.dtype


def test_imgmsg_desired_encoding_converts():
    rgb = _sample('rgb8')
    msg = conv.cv2_to_imgmsg(rgb, 'rgb8')
    np.testing.assert_array_equal(conv.imgmsg_to_cv2(msg, 'bgr8'), rgb[..., ::-1])
    np.testing.assert_array_equal(conv.imgmsg_to_cv2(msg, 'passthrough'), rgb)


def test_imgmsg_bad_messages_raise_codec_error():
    msg = conv.cv2_to_imgmsg(_sample('rgb8'), 'rgb8')
    msg.step = 10
    with pytest.raises(conv.ImageCodecError, match='step 10 is smaller'):
        conv.imgmsg_to_cv2(msg)
    msg = conv.cv2_to_imgmsg(_sample('rgb8'), 'rgb8')
    del msg.data[-1]
    with pytest.raises(conv.ImageCodecError, match='fewer than step'):
        conv.imgmsg_to_cv2(msg)
    msg.encoding = 'hsv8'
    with pytest.raises(conv.ImageCodecError, match='unknown image encoding'):
        conv.imgmsg_to_cv2(msg)
    with pytest.raises(conv.ImageCodecError, match='zero-size'):
        conv.imgmsg_to_cv2(Image(encoding='rgb8'))
    with pytest.raises(conv.ImageCodecError, match='undecodable'):
        conv.compressed_imgmsg_to_cv2(CompressedImage(format='jpeg', data=b'\x00' * 64))
    with pytest.raises(conv.ImageCodecError, match='sensor_msgs/Image'):
        conv.imgmsg_to_cv2(CompressedImage())


def test_compressed_round_trip_png_and_jpeg():
    rgb = _sample('rgb8', 32, 48)
    msg = conv.cv2_to_compressed_imgmsg(rgb, 'png', _header(), encoding='rgb8')
    assert msg.format == 'rgb8; png compressed bgr8' and msg.header.frame_id == 'cam'
    np.testing.assert_array_equal(conv.compressed_imgmsg_to_cv2(msg), rgb[..., ::-1])
    np.testing.assert_array_equal(conv.compressed_imgmsg_to_cv2(msg, 'rgb8'), rgb)
    smooth = np.repeat(np.linspace(0, 255, 48, dtype=np.uint8)[None, :, None], 32, 0)
    bgr = np.repeat(smooth, 3, 2)
    jpeg = conv.cv2_to_compressed_imgmsg(bgr, 'jpeg')
    assert jpeg.format == 'bgr8; jpeg compressed bgr8'
    assert np.abs(conv.compressed_imgmsg_to_cv2(jpeg).astype(int) - bgr).max() <= 8


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'bgra8', 'rgba8', '8UC3', 'mono8',
                                      'mono16', '16UC1', '32FC1', 'rgb16'])
def test_image_to_rgb_and_back_keeps_encoding_exactly(encoding):
    image = _sample(encoding, seed=3)
    if encoding in ('bgra8', 'rgba8'):
        image[..., 3] = 255  # alpha is dropped for processing and comes back opaque
    msg = conv.cv2_to_imgmsg(image, encoding, _header())
    rgb, original = conv.image_to_rgb(msg)
    assert original == encoding
    if image.ndim == 3:
        assert rgb.shape == image.shape[:2] + (3,)
    out = conv.rgb_to_image(rgb, original, msg.header)
    assert out.encoding == encoding and out.header == msg.header
    np.testing.assert_array_equal(conv.imgmsg_to_cv2(out), image)


def test_image_to_rgb_orders_channels():
    rgb = _sample('rgb8', seed=4)
    got, _ = conv.image_to_rgb(conv.cv2_to_imgmsg(rgb[..., ::-1].copy(), 'bgr8'))
    np.testing.assert_array_equal(got, rgb)


@pytest.mark.parametrize('encoding', ['yuv422_yuy2', 'uyvy', 'bayer_rggb8', 'bayer_gbrg8'])
def test_rgb_to_image_packs_yuv_and_bayer(encoding):
    # A smooth frame survives rgb -> (yuv422 | bayer) -> rgb closely.
    ramp = np.linspace(40, 220, 32)
    rgb = np.stack([*np.meshgrid(ramp, ramp[::-1]), np.full((32, 32), 120.0)], -1)
    rgb = rgb.astype(np.uint8)
    msg = conv.rgb_to_image(rgb, encoding, _header())
    assert msg.encoding == encoding
    back, original = conv.image_to_rgb(msg)
    assert original == encoding
    assert np.abs(back[2:-2, 2:-2].astype(int) - rgb[2:-2, 2:-2]).mean() < 4


def test_compressed_input_answers_compressed():
    rgb = _sample('rgb8', 16, 16, seed=5)
    msg = conv.cv2_to_compressed_imgmsg(rgb, 'png', _header(), encoding='rgb8')
    got, tag = conv.image_to_rgb(msg)
    assert tag == 'png:rgb8'
    np.testing.assert_array_equal(got, rgb)
    out = conv.rgb_to_image(got, tag, msg.header)
    assert isinstance(out, CompressedImage) and out.format == msg.format
    np.testing.assert_array_equal(conv.compressed_imgmsg_to_cv2(out, 'original'), rgb)


# --- across processes -------------------------------------------------------------------------

@pytest.fixture
def publisher(ros_env, tmp_path):
    """Start the fixture publisher script in its own process; stop it with SIGINT afterwards."""
    procs = []

    def start(*args):
        log = open(tmp_path / f'publisher_{len(procs)}.log', 'w')
        env = {**ros_env, 'PYTHONPATH': os.pathsep.join(
            [str(REPO)] + [p for p in [ros_env.get('PYTHONPATH')] if p])}
        proc = subprocess.Popen([sys.executable, str(PUBLISHER), *args], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log.name
        procs.append((proc, log))
        return proc

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _receive_one(kind, topic, proc, timeout=30.0):
    """Spin a probe node until one message arrives on `topic` or the deadline passes."""
    import rclpy
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node('image_probe', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    got = []
    deadline = time.monotonic() + timeout
    try:
        # Adopt the publisher's QoS (reliable here) once it is discovered.
        while not node.get_publishers_info_by_topic(topic) and time.monotonic() < deadline:
            assert proc.poll() is None, f'publisher exited: {open(proc.log_path).read()}'
            executor.spin_once(timeout_sec=0.1)
        qos = subscriber_qos(node, topic)
        node.create_subscription(kind, topic, got.append, qos)
        while not got and time.monotonic() < deadline:
            assert proc.poll() is None, f'publisher exited: {open(proc.log_path).read()}'
            executor.spin_once(timeout_sec=0.1)
        return got[0] if got else None, qos
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.parametrize('encoding, pad', [('rgb8', 0), ('bgr8', 64), ('yuv422_yuy2', 0),
                                           ('png', 0)])
def test_real_frame_crosses_processes_intact(asset, publisher, encoding, pad):
    video = asset('data/video/people.mp4')
    fixture = _fixture_module()
    expected_rgb = fixture.load_frame(video, 1280, 720)
    topic = f'/transport_test/{encoding}/image_raw'
    proc = publisher('--video', str(video), '--topic', topic, '--encoding', encoding,
                     '--pad', str(pad), '--frame-id', 'front_camera_optical')
    kind = CompressedImage if encoding == 'png' else Image
    msg, qos = _receive_one(kind, topic, proc)
    assert msg is not None, f'no image received; publisher log: {open(proc.log_path).read()}'
    assert qos.reliability.name == 'RELIABLE'
    sec, nanosec = msg.header.stamp.sec, msg.header.stamp.nanosec
    assert nanosec == fixture.stamp_of(0)[1] and sec - fixture.stamp_of(0)[0] in range(1000)
    assert msg.header.frame_id == 'front_camera_optical'
    if kind is Image:
        assert (msg.width, msg.height, msg.encoding) == (1280, 720, encoding)
        row = 1280 * (2 if encoding == 'yuv422_yuy2' else 3)
        assert msg.step == row + pad
        raw = conv.imgmsg_to_cv2(msg)
        np.testing.assert_array_equal(
            raw, codec.convert_encoding(expected_rgb, 'rgb8', encoding))
    rgb, original = conv.image_to_rgb(msg)
    if encoding == 'yuv422_yuy2':
        assert np.abs(rgb.astype(int) - expected_rgb).mean() < 3
    else:
        np.testing.assert_array_equal(rgb, expected_rgb)
    assert original == (encoding if kind is Image else 'png:rgb8')

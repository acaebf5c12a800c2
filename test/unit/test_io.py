"""Frame sources (video, folder) and ROS 2 MCAP bags written and read back without ROS."""
import cv2
import numpy as np
import pytest

from adaqual_ros.io.bags import (
    BagError,
    BagWriter,
    image_topics,
    list_topics,
    read_images,
    resolve_bag_path,
)
from adaqual_ros.io.video import FrameSource, iter_frames, list_images, read_image


def _frames(n=3, h=36, w=52):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_bag_round_trip_raw_and_compressed(tmp_path):
    frames = _frames()
    path = tmp_path / 'cam.mcap'
    stamps = [1_700_000_000_000_000_000 + i * 33_333_333 for i in range(len(frames))]
    with BagWriter(path) as bag:
        for rgb, stamp in zip(frames, stamps):
            bag.write_image('/cam/image_raw', rgb, stamp, 'cam_optical')
            bag.write_image('/cam/bgr', np.ascontiguousarray(rgb[:, :, ::-1]), stamp, 'cam',
                            encoding='bgr8')
            bag.write_compressed('/cam/image_raw/compressed', rgb, stamp, 'cam', fmt='png')
            bag.write_camera_info('/cam/camera_info', *rgb.shape[:2], stamp, 'cam')
    topics = list_topics(path)
    assert topics['/cam/image_raw'] == {'type': 'sensor_msgs/msg/Image', 'count': 3}
    assert topics['/cam/camera_info']['type'] == 'sensor_msgs/msg/CameraInfo'
    assert image_topics(path) == ['/cam/bgr', '/cam/image_raw', '/cam/image_raw/compressed']

    raw = list(read_images(path, '/cam/image_raw'))
    assert [m.stamp_ns for m in raw] == stamps
    assert [m.index for m in raw] == [0, 1, 2]
    assert raw[0].frame_id == 'cam_optical' and raw[0].encoding == 'rgb8'
    for m, rgb in zip(raw, frames):
        np.testing.assert_array_equal(m.image, rgb)
    # bgr8 comes back as RGB, and the topic is found without its leading slash too.
    for m, rgb in zip(read_images(path, 'cam/bgr'), frames):
        np.testing.assert_array_equal(m.image, rgb)
    png = list(read_images(path, '/cam/image_raw/compressed', limit=2))
    assert len(png) == 2
    np.testing.assert_array_equal(png[1].image, frames[1])  # png is lossless


def test_bag_mono_and_jpeg(tmp_path):
    grey = np.tile(np.arange(64, dtype=np.uint8)[None] * 4, (32, 1))
    # A smooth image with distinct channels: jpeg keeps it close, and a channel swap shows.
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, np.full_like(xx, 30)], axis=2).astype(np.uint8)
    path = tmp_path / 'b.mcap'
    with BagWriter(path) as bag:
        bag.write_image('mono', grey, 5, 'cam', encoding='mono8')
        bag.write_compressed('jpg', rgb, 5, 'cam', fmt='jpeg', quality=95)
    (m,) = read_images(path, 'mono')
    assert m.image.shape == (32, 64, 3)
    np.testing.assert_array_equal(m.image[:, :, 1], grey)
    (j,) = read_images(path, 'jpg')
    assert j.image.shape == rgb.shape
    error = np.abs(j.image.astype(int) - rgb.astype(int)).mean()
    swapped = np.abs(j.image.astype(int) - rgb[:, :, ::-1].astype(int)).mean()
    assert error < 3 < swapped  # lossy, but the same image in RGB order


def test_bag_errors(tmp_path):
    with pytest.raises(BagError, match='does not exist'):
        list(read_images(tmp_path / 'none.mcap'))
    path = tmp_path / 'two.mcap'
    with BagWriter(path) as bag:
        for topic in ('a', 'b'):
            bag.write_image(topic, _frames(1)[0], 1, 'cam')
        bag.write_camera_info('info', 10, 10, 1)
    with pytest.raises(BagError, match='choose one'):
        list(read_images(path))
    with pytest.raises(BagError, match='not in'):
        list(read_images(path, 'c'))
    with pytest.raises(BagError, match='not an image type'):
        list(read_images(path, 'info'))
    folder = tmp_path / 'rosbag2'
    folder.mkdir()
    (folder / 'rosbag2_0.mcap').write_bytes(path.read_bytes())
    assert resolve_bag_path(folder).name == 'rosbag2_0.mcap'
    assert len(list(read_images(folder, 'a'))) == 1


def test_folder_source(tmp_path):
    frames = _frames(5)
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(tmp_path / f'{i:03d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (tmp_path / 'notes.txt').write_text('not an image')
    assert [p.name for p in list_images(tmp_path)] == [f'{i:03d}.png' for i in range(5)]
    np.testing.assert_array_equal(read_image(tmp_path / '002.png'), frames[2])  # RGB order
    source = FrameSource(tmp_path, stride=2, fps=10)
    got = list(source)
    assert len(source) == len(got) == 3
    assert [f.index for f in got] == [0, 2, 4] and got[1].time_s == pytest.approx(0.2)
    np.testing.assert_array_equal(got[2].image, frames[4])
    resized = next(iter_frames(tmp_path, resize=(26, 18)))
    assert resized.image.shape == (18, 26, 3)
    with pytest.raises(FileNotFoundError):
        FrameSource(tmp_path / 'missing')
    with pytest.raises(ValueError, match='stride'):
        FrameSource(tmp_path, stride=0)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='no images'):
        FrameSource(empty)


def test_video_source(asset):
    video = asset('data/video/highway_dashcam.mp4')
    source = FrameSource(video, limit=4, stride=2)
    frames = list(source)
    assert len(source) == len(frames) == 4
    assert [f.index for f in frames] == [0, 2, 4, 6]
    assert frames[0].image.shape == (540, 960, 3) and frames[0].image.dtype == np.uint8
    assert source.fps == pytest.approx(25.0, abs=0.5)
    # RGB, not BGR: OpenCV's own read of frame 0, flipped, is identical.
    cap = cv2.VideoCapture(str(video))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    np.testing.assert_array_equal(frames[0].image, bgr[:, :, ::-1])



def test_rewrite_bag_copies_everything_and_adds_the_processed_topic(tmp_path, bag_messages):
    from adaqual_ros.io.bags import COMPRESSED_TYPE, rewrite_bag

    frames = _frames(3, 24, 32)
    src, dst = tmp_path / 'in.mcap', tmp_path / 'out.mcap'
    stamps = [2_000_000_000 + i * 50_000_000 for i in range(3)]
    rng = np.random.default_rng(1)
    with BagWriter(src) as bag:
        for rgb, stamp in zip(frames, stamps):
            bag.write_image('/front/image_raw', np.ascontiguousarray(rgb[:, :, ::-1]), stamp,
                            'front', encoding='bgr8')
            bag.write_camera_info('/front/camera_info', 24, 32, stamp, 'front')
            bag.write_image('/depth/image_raw', rng.integers(0, 65535, (24, 32), np.uint16),
                            stamp, 'depth', encoding='mono16')
            rgba = np.dstack([rgb, rng.integers(0, 256, (24, 32), np.uint8)])
            bag.write_image('/alpha/image_raw', rgba, stamp, 'alpha', encoding='rgba8')
            bag.write_compressed('/rear/image_raw/compressed', rgb, stamp, 'rear', fmt='png')
        bag._write('/rear/image_raw/compressed', COMPRESSED_TYPE,
                   {'header': {'stamp': {'sec': 9, 'nanosec': 0}, 'frame_id': 'rear'},
                    'format': 'jpeg', 'data': b'not an image'}, 9_000_000_000)
        # a truncated message on the front camera (a broken recording): not even its CDR reads
        raw = bag._writer._writer
        raw.add_message(bag._writer._channel_ids['/front/image_raw'], 9_000_000_000,
                        b'\x00\x01\x00\x00\x07', 9_000_000_000, 3)
    seen = []

    def identity(frame, stamp_ns, frame_id):
        seen.append((frame.shape, frame.dtype, stamp_ns))
        return frame

    before = bag_messages(src)
    report = rewrite_bag(src, dst, identity, topic='front/image_raw')
    after = bag_messages(dst)
    # every message unchanged, in order, plus the camera's restored topics
    assert {t: after[t] for t in before} == before
    assert report['out_topic'] == '/front/restored/image_raw' and report['images'] == 3
    assert report['copied'] == sum(len(v) for v in before.values())
    assert [(i, why.startswith('cannot decode')) for i, why in report['failed']] == [(3, True)]
    assert after['/front/restored/camera_info'] == before['/front/camera_info']
    # an identity process gives back the very bytes, header and log time (bgr8 in, bgr8 out)
    assert after['/front/restored/image_raw'] == before['/front/image_raw'][:3]
    assert seen == [((24, 32, 3), np.uint8, s) for s in stamps]
    # mono16 and rgba8 (alpha kept) round-trip bit-identical too
    for topic in ('/depth/image_raw', '/alpha/image_raw'):
        rewrite_bag(src, tmp_path / 'x.mcap', lambda f, s, i: f, topic=topic)
        out = bag_messages(tmp_path / 'x.mcap')
        assert out[topic.replace('/image_raw', '/restored/image_raw')] == before[topic]
    # compressed in: a raw Image out in the recorded encoding; the broken frame is counted
    report = rewrite_bag(src, tmp_path / 'c.mcap', lambda f, s, i: 255 - f,
                         topic='/rear/image_raw/compressed', limit=10)
    assert report['images'] == 3 and [i for i, _ in report['failed']] == [3]
    restored = list(read_images(tmp_path / 'c.mcap', '/rear/restored/image_raw'))
    assert [r.encoding for r in restored] == ['rgb8'] * 3
    assert all(np.array_equal(r.image, 255 - f) for r, f in zip(restored, frames))  # png
    assert [r.stamp_ns for r in restored] == stamps
    # limit: fewer restored frames, every message still copied
    report = rewrite_bag(src, tmp_path / 'l.mcap', identity, topic='/front/image_raw', limit=2)
    assert report['images'] == 2
    assert len(bag_messages(tmp_path / 'l.mcap')['/front/image_raw']) == 4
    # the output topic must be new: a restored bag is not restored onto itself
    with pytest.raises(BagError, match='already has a topic'):
        rewrite_bag(dst, tmp_path / 'again.mcap', identity, topic='/front/image_raw')

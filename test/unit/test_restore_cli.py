"""`adaqual restore`: a bag restored offline, as the restoration node would have done it."""
import cv2
import numpy as np

from adaqual_ros.cli.main import main
from adaqual_ros.io.bags import BagWriter, read_images
from adaqual_ros.weather import WeatherStream


def _hazy_frames(count):
    from adaqual_ros.cli.bench import _synthetic_frames

    weather = WeatherStream('haze', seed=0, severity=0.8)
    return [weather.apply(cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA)).degraded
            for f in _synthetic_frames(count, 640, 480)]


def _hazy_bag(path, count=3):
    frames = _hazy_frames(count)
    with BagWriter(path) as bag:
        for i, rgb in enumerate(frames):
            stamp = 5_000_000_000 + i * 100_000_000
            bag.write_image('/cam/image_raw', np.ascontiguousarray(rgb[:, :, ::-1]), stamp,
                            'cam', encoding='bgr8')
            bag.write_camera_info('/cam/camera_info', 240, 320, stamp, 'cam')
    return frames


def test_restore_writes_the_restored_frames_beside_the_raw_ones(tmp_path, capsys,
                                                                bag_messages):
    src = tmp_path / 'run.mcap'
    frames = _hazy_bag(src)
    common = ['--source', str(src), '--quality-backend', 'classical', '--threads', '1',
              '--device', 'cpu']
    assert main(['restore', *common, '--out', str(tmp_path / 'c.mcap'),
                 '--backend', 'classical']) == 0
    out = capsys.readouterr().out
    assert '/cam/image_raw -> /cam/restored/image_raw (classical): 3 frames restored' in out
    restored = list(read_images(tmp_path / 'c.mcap', '/cam/restored/image_raw'))
    raw = list(read_images(tmp_path / 'c.mcap', '/cam/image_raw'))
    assert [r.encoding for r in restored] == ['bgr8'] * 3
    assert [r.stamp_ns for r in restored] == [r.stamp_ns for r in raw]
    assert all(np.array_equal(r.image, f) for r, f in zip(raw, frames))
    # the node's quality map beside them: the scores grid as 32FC1, the frame's stamp
    from adaqual_ros.io.bags import list_topics

    assert list_topics(tmp_path / 'c.mcap')['/cam/quality_map']['count'] == 3
    with open(tmp_path / 'c.mcap', 'rb') as f:
        from mcap.reader import make_reader
        from mcap_ros2.decoder import DecoderFactory

        maps = [m for _, _, _, m in make_reader(f, decoder_factories=[DecoderFactory()])
                .iter_decoded_messages(topics=['/cam/quality_map'])]
    assert {(m.encoding, m.height, m.width) for m in maps} == {('32FC1', 4, 5)}
    scores = np.frombuffer(bytes(maps[0].data), np.float32)
    assert scores.min() >= 1.0 and scores.max() <= 5.0 and scores.min() < 4.0  # hazy
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in maps] == \
        [r.stamp_ns for r in raw]
    # and each frame's record, as the node's prompts topic: its stamp, frame_id and map
    import json

    with open(tmp_path / 'c.mcap', 'rb') as f:
        records = [json.loads(m.data) for _, _, _, m in make_reader(
            f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(
            topics=['/cam/prompts'])]
    assert [r['stamp']['sec'] * 10**9 + r['stamp']['nanosec'] for r in records] == \
        [r.stamp_ns for r in raw]
    assert {(r['frame_id'], r['backend'], tuple(r['grid'])) for r in records} == \
        {('cam', 'classical', (4, 5))}
    assert np.allclose(records[0]['scores'], scores.reshape(4, 5), atol=1e-3)
    assert records[0]['prompts'] and 0 <= records[0]['skipped_fraction'] < 1
    # hazy frames are dehazed: each one changes, and gains contrast
    for r, f in zip(restored, frames):
        assert r.image.shape == f.shape and not np.array_equal(r.image, f)
        assert r.image.std() > f.std()
    # passthrough: the restored topic holds the raw frames' very bytes; --visualization adds
    # the node's heat picture of each frame's map
    assert main(['restore', *common, '--out', str(tmp_path / 'p.mcap'),
                 '--backend', 'passthrough', '--visualization']) == 0
    pictures = list(read_images(tmp_path / 'p.mcap', '/cam/quality_map/visualization'))
    assert [p.stamp_ns for p in pictures] == [r.stamp_ns for r in raw]
    assert {(p.encoding, p.image.shape) for p in pictures} == {('rgb8', (240, 320, 3))}
    assert not np.array_equal(pictures[0].image, frames[0])  # the heat is drawn over it
    messages = bag_messages(tmp_path / 'p.mcap')
    assert messages['/cam/restored/image_raw'] == messages['/cam/image_raw']
    assert len(messages['/cam/quality_map']) == 3  # the map is read whatever the backend
    assert messages['/cam/restored/camera_info'] == messages['/cam/camera_info']


def test_restore_refuses_what_it_cannot_do(tmp_path, capsys):
    src = tmp_path / 'run.mcap'
    _hazy_bag(src, count=1)
    base = ['restore', '--source', str(src), '--backend', 'passthrough']
    assert main([*base, '--out', str(tmp_path / 'out.bag')]) == 2
    assert '--out must be a .mcap file for this source' in capsys.readouterr().err
    assert main([*base, '--out', str(src)]) == 2
    assert 'must not be the input' in capsys.readouterr().err
    assert main([*base, '--out', str(tmp_path / 'o.mcap'), '--records', str(src)]) == 2
    assert '--records must be a file of its own' in capsys.readouterr().err
    folder = tmp_path / 'rosbag2'  # a rosbag2 folder: its .mcap is the input too
    folder.mkdir()
    src.rename(folder / 'run.mcap')
    assert main(['restore', '--source', str(folder), '--out', str(folder / 'run.mcap')]) == 2
    assert 'must not be the input' in capsys.readouterr().err
    assert main(['restore', '--source', str(folder), '--out', str(tmp_path / 'r.mcap'),
                 '--backend', 'passthrough']) == 0
    capsys.readouterr()
    (folder / 'run.mcap').rename(src)
    assert main([*base, '--out', str(tmp_path / 'o.mcap'), '--topic', '/nope']) == 2
    assert "topic '/nope' is not in run.mcap" in capsys.readouterr().err
    assert main(['restore', '--source', str(tmp_path / 'missing.mcap'), '--backend',
                 'passthrough', '--out', str(tmp_path / 'o.mcap')]) == 2
    assert 'does not exist' in capsys.readouterr().err
    video = tmp_path / 'clip.mp4'
    video.write_bytes(b'')
    assert main(['restore', '--source', str(video), '--out', str(tmp_path / 'o.mcap')]) == 2
    assert '--out must be a video file' in capsys.readouterr().err
    assert main(['restore', '--source', str(video), '--out', str(tmp_path / 'o.mp4'),
                 '--topic', '/cam/image_raw']) == 2
    assert '--topic is for a bag source' in capsys.readouterr().err
    assert main(['restore', '--source', str(video), '--out', str(tmp_path / 'o.mp4'),
                 '--visualization']) == 2
    assert '--visualization is for a bag source' in capsys.readouterr().err
    assert main([*base, '--out', str(tmp_path / 'o.mcap'), '--skip-threshold', '9']) == 2
    assert 'skip_threshold' in capsys.readouterr().err


def test_restore_a_video_and_an_image_folder(tmp_path, capsys):
    frames = _hazy_frames(3)
    video = tmp_path / 'hazy.mp4'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 10.0, (320, 240))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    common = ['--backend', 'classical', '--quality-backend', 'classical', '--threads', '1',
              '--device', 'cpu']
    records = tmp_path / 'logs' / 'r.jsonl'
    assert main(['restore', '--source', str(video), '--out', str(tmp_path / 'out' / 'r.mp4'),
                 '--records', str(records), *common]) == 0
    assert '3 frames restored, 0 frames not decodable' in capsys.readouterr().out
    # one record per frame, as the node's prompts JSON, named by the frame's place in the video
    import json

    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert [r['frame_id'] for r in lines] == [f'hazy.mp4:{i}' for i in range(3)]
    assert [r['stamp']['nanosec'] for r in lines] == [0, 100_000_000, 200_000_000]
    assert {(r['backend'], tuple(r['grid'])) for r in lines} == {('classical', (4, 5))}
    assert min(min(row) for row in lines[0]['scores']) < 4.0  # hazy
    cap = cv2.VideoCapture(str(tmp_path / 'out' / 'r.mp4'))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3 and cap.get(cv2.CAP_PROP_FPS) == 10.0
    ok, first = cap.read()
    cap.release()
    assert ok and first.shape == (240, 320, 3)
    assert cv2.cvtColor(first, cv2.COLOR_BGR2RGB).std() > frames[0].std()  # dehazed
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i, rgb in enumerate(frames[:2]):
        cv2.imwrite(str(folder / f'f{i}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert main(['restore', '--source', str(folder), '--out', str(tmp_path / 'restored'),
                 '--backend', 'passthrough']) == 0
    for i, rgb in enumerate(frames[:2]):  # passthrough: the same pixels under the same names
        back = cv2.imread(str(tmp_path / 'restored' / f'f{i}.png'))
        assert np.array_equal(cv2.cvtColor(back, cv2.COLOR_BGR2RGB), rgb)

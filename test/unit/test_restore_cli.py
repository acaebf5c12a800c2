"""`adaqual restore`: a bag restored offline, as the restoration node would have done it."""
import cv2
import numpy as np

from adaqual_ros.cli.main import main
from adaqual_ros.io.bags import BagWriter, read_images
from adaqual_ros.weather import WeatherStream


def _hazy_bag(path, count=3):
    from adaqual_ros.cli.bench import _synthetic_frames

    weather = WeatherStream('haze', seed=0, severity=0.8)
    frames = [weather.apply(cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA)).degraded
              for f in _synthetic_frames(count, 640, 480)]
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
    common = ['--bag', str(src), '--quality-backend', 'classical', '--threads', '1',
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
    # hazy frames are dehazed: each one changes, and gains contrast
    for r, f in zip(restored, frames):
        assert r.image.shape == f.shape and not np.array_equal(r.image, f)
        assert r.image.std() > f.std()
    # passthrough: the restored topic holds the raw frames' very bytes
    assert main(['restore', *common, '--out', str(tmp_path / 'p.mcap'),
                 '--backend', 'passthrough']) == 0
    messages = bag_messages(tmp_path / 'p.mcap')
    assert messages['/cam/restored/image_raw'] == messages['/cam/image_raw']
    assert messages['/cam/restored/camera_info'] == messages['/cam/camera_info']


def test_restore_refuses_what_it_cannot_do(tmp_path, capsys):
    src = tmp_path / 'run.mcap'
    _hazy_bag(src, count=1)
    base = ['restore', '--bag', str(src), '--backend', 'passthrough']
    assert main([*base, '--out', str(tmp_path / 'out.bag')]) == 2
    assert '.mcap' in capsys.readouterr().err
    assert main([*base, '--out', str(src)]) == 2
    assert 'input bag' in capsys.readouterr().err
    assert main([*base, '--out', str(tmp_path / 'o.mcap'), '--topic', '/nope']) == 2
    assert "topic '/nope' is not in run.mcap" in capsys.readouterr().err
    assert main(['restore', '--bag', str(tmp_path / 'missing.mcap'), '--backend', 'passthrough',
                 '--out', str(tmp_path / 'o.mcap')]) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert main([*base, '--out', str(tmp_path / 'o.mcap'), '--skip-threshold', '9']) == 2
    assert 'skip_threshold' in capsys.readouterr().err

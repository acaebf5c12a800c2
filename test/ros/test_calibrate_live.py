"""`adaqual calibrate --topic` without a recording: frames from a live camera topic (a real
publisher process), read as the node reads them."""
import importlib.util
import json
from pathlib import Path

import pytest

from adaqual_ros.cli.main import main
from adaqual_ros.runtime import Restorer, RestorerSettings
from adaqual_ros.runtime.calibration import worst_cell

pytestmark = pytest.mark.ros

PUBLISHER = Path(__file__).resolve().parent / 'fixtures' / 'image_publisher.py'


def _load_frame(video, width, height):
    spec = importlib.util.spec_from_file_location('image_publisher_fixture', PUBLISHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_frame(video, width, height)


def test_calibrate_reads_a_live_topic(ros_env, spawn, asset, tmp_path, capsys):
    video = asset('data/video/people.mp4')
    topic = '/t_calibrate/image_raw'
    proc = spawn('test/ros/fixtures/image_publisher.py', '--video', str(video), '--width', '480',
                 '--height', '270', '--topic', topic, '--rate', '10')
    out = tmp_path / 'out'
    code = main(['calibrate', '--topic', topic, '--limit', '3', '--backend', 'classical',
                 '--threads', '1', '--timeout', '60', '--out', str(out)])
    assert code == 0, capsys.readouterr().err + proc.log_path.read_text()
    record = json.loads((out / 'calibrate.json').read_text())
    assert record['source'] == 'live' and record['topic'] == topic
    assert record['frames'] == 3 and record['frame_size'] == [480, 270]
    # The publisher sends one frame over and over: the worst cell is that frame's, read here.
    frame = _load_frame(video, 480, 270)
    qmap = Restorer(RestorerSettings(backend='classical', threads=1)).restore(frame).quality_map
    assert record['worst_cell']['min'] == pytest.approx(worst_cell(qmap))
    assert proc.poll() is None
    # A topic nobody publishes: a clear error once the timeout is up, not a hang.
    assert main(['calibrate', '--topic', '/t_calibrate/nobody', '--timeout', '1', '--backend',
                 'classical', '--out', str(out)]) == 2
    assert 'no publisher on /t_calibrate/nobody' in capsys.readouterr().err

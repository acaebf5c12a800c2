"""`adaqual calibrate`: a camera's skip_threshold from a clean recording, checked against the
restorer's own skip decision."""
import json

import numpy as np
import pytest
import yaml

from adaqual_ros.cli.main import main
from adaqual_ros.io.bags import BagWriter
from adaqual_ros.io.video import FrameSource
from adaqual_ros.quality.types import DEGRADATION_TYPES, QualityMap
from adaqual_ros.ros.params import check_params_file
from adaqual_ros.runtime import Restorer, RestorerSettings
from adaqual_ros.runtime.calibration import (
    pass_share,
    pass_threshold,
    restored_share,
    worst_cell,
)

CELL = 64


def _map(scores, skip_scores=None):
    scores = np.asarray(scores, dtype=np.float32)
    gh, gw = scores.shape
    types = np.zeros((gh, gw, len(DEGRADATION_TYPES)), np.float32)
    return QualityMap(scores, types, CELL, (gh * CELL, gw * CELL),
                      skip_scores=None if skip_scores is None
                      else np.asarray(skip_scores, dtype=np.float32))


def _frame_with_worst(value):
    scores = np.full((3, 4), 4.8)
    scores[1, 2] = value
    return _map(scores)


def test_the_threshold_is_the_highest_that_lets_the_share_pass():
    maps = [_frame_with_worst(v) for v in (3.95, 3.85, 3.72, 4.5, 5.0)]
    settings = RestorerSettings()
    assert pass_share(maps, 4.0, settings) == pytest.approx(0.4)
    assert restored_share(maps, 4.0, settings) == pytest.approx(3 / 5 / 12)  # one cell of 12
    assert restored_share(maps, 3.8, settings) == pytest.approx(1 / 5 / 12)
    assert pass_threshold(maps, settings, 1.0) == (3.72, 1.0)  # at 3.73 the 3.72 frame runs
    assert pass_threshold(maps, settings, 0.8) == (3.85, 0.8)  # one frame of five may run
    assert pass_threshold(maps, settings, 0.4) == (4.0, pytest.approx(0.4))  # never above
    assert pass_threshold(maps, settings.with_changes(skip_threshold=3.8), 0.4)[0] == 3.8
    assert [worst_cell(m) for m in maps[:2]] == pytest.approx([3.95, 3.85])
    with pytest.raises(ValueError, match='pass_rate'):
        pass_threshold(maps, settings, 0.0)
    with pytest.raises(ValueError, match='no quality maps'):
        pass_share([], 4.0, settings)


def test_local_reads_and_whole_frames_decide_as_the_restorer_does():
    # The cells read low in the whole-frame map, but quality_context's local read clears them:
    # the frame passes unless so many cells read low that the whole frame is restored.
    local = np.full((3, 4), 4.6)
    few = np.full((3, 4), 4.6)
    few[0, :2] = 3.5
    many = np.full((3, 4), 3.9)  # every cell below 4: whole frame (whole_frame_share 0.7)
    settings = RestorerSettings()
    assert pass_share([_map(few, local)], 4.0, settings) == 1.0
    assert pass_share([_map(many, local)], 4.0, settings) == 0.0
    assert pass_threshold([_map(many, local)], settings, 1.0) == (3.9, 1.0)
    # Nothing passes at the lowest threshold the restorer accepts: no suggestion.
    assert pass_threshold([_map(np.full((3, 4), 0.5))], settings, 0.5) == (None, 0.0)


def _restorer_passes(frames, threshold, backend='adaqual'):
    """Frames the restorer itself leaves untouched at ``threshold`` (one stream, cache on)."""
    restorer = Restorer(RestorerSettings(backend=backend, skip_threshold=threshold, threads=1))
    passed = []
    for image, stamp in frames:
        result = restorer.restore(image, 'cam', stamp=stamp)
        passed.append(result.windows == 0 and np.array_equal(result.image, image))
    return passed


def test_calibrate_on_real_video_frames_agrees_with_the_restorer(assets, tmp_path, capsys):
    video = assets / 'data' / 'video' / 'people.mp4'
    # The node's default backend reads frames with the model's own estimator, which reads a
    # cell or two of some of these clean frames just below 4 (at 960 px: 2 of these 8).
    args = ['calibrate', '--source', str(video), '--stride', '20', '--limit', '8', '--width',
            '960', '--threads', '1', '--out', str(tmp_path), '--pass-rate', '1.0',
            '--weather', 'rain']
    assert main(args) == 0
    out = capsys.readouterr().out
    assert 'suggested' in out and 'clean frames passing through' in out
    record = json.loads((tmp_path / 'calibrate.json').read_text())
    assert record['frames'] == 8 and record['frame_size'] == [960, 540]
    assert record['backend'] == 'adaqual' and record['current']['pass_share'] < 1.0
    suggested = record['suggested']['skip_threshold']
    assert suggested is not None and 1.0 <= suggested < record['current']['skip_threshold']
    assert record['suggested']['pass_share'] == 1.0
    assert record['worst_cell']['min'] >= suggested
    params = yaml.safe_load((tmp_path / 'calibrate_params.yaml').read_text())
    assert params['/**/adaqual_restoration']['ros__parameters']['skip_threshold'] == suggested
    assert check_params_file(tmp_path / 'calibrate_params.yaml') == []  # the node's own check
    rain = record['weather']['rain']
    assert rain['cells_restored_suggested'] <= rain['cells_restored_current']
    # The restorer, told the suggested threshold, leaves every one of these frames untouched;
    # at the current one it leaves the share the report says.
    frames = [(f.image, f.time_s) for f in FrameSource(video, stride=20, limit=8,
                                                       resize=(960, 540))]
    assert all(_restorer_passes(frames, suggested))
    current = _restorer_passes(frames, record['current']['skip_threshold'])
    assert np.mean(current) == pytest.approx(record['current']['pass_share'])


def test_calibrate_reads_a_bag_topic(assets, tmp_path, capsys):
    frames = [f.image for f in FrameSource(assets / 'data' / 'video' / 'people.mp4', stride=30,
                                           limit=3, resize=(320, 180))]
    bag = tmp_path / 'clean.mcap'
    with BagWriter(bag) as writer:
        for i, image in enumerate(frames):
            writer.write_image('/front/image_raw', image, (i + 1) * 100_000_000)
            writer.write_image('/rear/image_raw', image[::-1].copy(), (i + 1) * 100_000_000)
    out = tmp_path / 'out'
    assert main(['calibrate', '--source', str(bag), '--topic', '/front/image_raw', '--backend',
                 'classical', '--threads', '1', '--out', str(out)]) == 0
    record = json.loads((out / 'calibrate.json').read_text())
    assert record['frames'] == 3 and record['frame_size'] == [320, 180]
    assert record['topic'] == '/front/image_raw'
    # For one camera of a multi-camera node: its own camera.NAME.skip_threshold, a parameters
    # file the node's own check accepts for a node serving that camera.
    assert main(['calibrate', '--source', str(bag), '--topic', '/front/image_raw', '--backend',
                 'classical', '--threads', '1', '--camera', 'front', '--out', str(out)]) == 0
    params = yaml.safe_load((out / 'calibrate_params.yaml').read_text())
    values = params['/**/adaqual_restoration']['ros__parameters']
    threshold = json.loads((out / 'calibrate.json').read_text())['suggested']['skip_threshold']
    assert values == {'camera': {'front': {'skip_threshold': threshold}}}
    graph = tmp_path / 'graph.yaml'
    graph.write_text(yaml.safe_dump({'/**/adaqual_restoration': {'ros__parameters': {
        'cameras': 'front,rear', **values}}}))
    assert check_params_file(graph) == []


def test_calibrate_rejects_bad_input(tmp_path, capsys):
    assert main(['calibrate', '--source', str(tmp_path / 'missing.mp4'), '--backend',
                 'classical', '--out', str(tmp_path)]) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert main(['calibrate', '--source', 'x', '--pass-rate', '1.5', '--out',
                 str(tmp_path)]) == 2
    assert '--pass-rate' in capsys.readouterr().err
    assert main(['calibrate', '--source', 'x', '--camera', 'front,rear', '--out',
                 str(tmp_path)]) == 2
    assert '--camera' in capsys.readouterr().err
    assert main(['calibrate', '--source', 'x', '--backend', 'magic', '--out',
                 str(tmp_path)]) == 2
    assert 'magic' in capsys.readouterr().err
    assert main(['calibrate', '--source', 'x', '--model-path', str(tmp_path / 'nowhere'),
                 '--out', str(tmp_path)]) == 2
    assert 'nowhere' in capsys.readouterr().err

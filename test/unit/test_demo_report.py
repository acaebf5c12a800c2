"""The demo's plain-Python parts: the stream it plays, the per-stamp recorder and its report."""
import json

import cv2
import numpy as np
import pytest

from adaqual_ros.demo_report import WEATHER_ROW, DemoRecorder, write_demo_report
from adaqual_ros.demo_stream import (
    DemoStreamError,
    build_stream,
    parse_conditions,
    sample_image_paths,
)
from adaqual_ros.detection.yolo import Detections

NAMES = {0: 'person', 2: 'car'}


def test_parse_conditions_checks_names():
    assert parse_conditions('clean, haze,low_haze_rain') == ('clean', 'haze', 'low_haze_rain')
    with pytest.raises(DemoStreamError, match="unknown weather condition 'fog'"):
        parse_conditions('clean,fog')
    with pytest.raises(DemoStreamError, match='listed twice'):
        parse_conditions('haze,haze')
    with pytest.raises(DemoStreamError, match='no weather conditions'):
        parse_conditions(' , ')


def test_stream_from_installed_sample_pictures(tmp_path, monkeypatch):
    monkeypatch.delenv('ADAQUAL_ASSETS', raising=False)
    if len(sample_image_paths()) < 2:
        pytest.skip('the sample pictures of ultralytics / scikit-image are not installed')
    stream = build_stream(tmp_path / 's', frames=8, width=320)
    assert stream.source.startswith('sample pictures')
    files = sorted((tmp_path / 's').glob('frame_*.png'))
    assert [f.name for f in files] == stream.names and stream.frames == 8
    frames = [cv2.imread(str(f)) for f in files]
    assert all(f.shape == (240, 320, 3) for f in frames) and stream.size == (240, 320)
    # A slow pan: consecutive frames of one picture differ, but only a little.
    same_picture = [i for i in range(7) if files[i].name.split('_')[2] ==
                    files[i + 1].name.split('_')[2]]
    assert same_picture
    i = same_picture[0]
    diff = np.abs(frames[i].astype(int) - frames[i + 1].astype(int)).mean()
    assert 0.5 < diff < 60
    # Building again replaces the old frames.
    assert build_stream(tmp_path / 's', frames=3, width=320).frames == 3
    assert len(list((tmp_path / 's').glob('frame_*.png'))) == 3


def test_stream_spreads_frames_over_a_video(tmp_path, asset):
    video = asset('data/video/people.mp4')
    stream = build_stream(tmp_path / 'v', video=video, frames=4, width=320)
    indices = [int(name.rsplit('_', 1)[1][:-4]) for name in stream.names]
    assert indices[0] == 0 and indices[-1] >= 290 and indices == sorted(indices)
    assert stream.size == (180, 320)


def test_stream_rejects_bad_input(tmp_path):
    with pytest.raises(DemoStreamError, match='does not exist'):
        build_stream(tmp_path, video=tmp_path / 'missing.mp4')
    with pytest.raises(DemoStreamError, match='frames must be >= 1'):
        build_stream(tmp_path, frames=0)


def _dets(boxes, size=(120, 160), scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.full(len(boxes), 0.9) if scores is None else scores
    return Detections(boxes, scores, np.zeros(len(boxes)), NAMES, size)


def _body(stamp, dets, published_ns):
    body = dets.to_dict()
    body.update(stamp_ns=stamp, published_ns=published_ns,
                timing_ms={'decode': 1.0, 'inference': 20.0, 'total': 30.0})
    return body


@pytest.fixture
def clean_image():
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (160, 120))
    return base


def _feed(rec, clean_image, stamp, index, condition, raw_boxes, rest_boxes, ref_boxes,
          restored=True):
    """One frame through the recorder in an order the graph really produces (info late)."""
    hazy = (clean_image * 0.5 + 100).astype(np.uint8) if condition != 'clean' else clean_image
    rec.add_image('raw', stamp, hazy, stamp + 1_000_000)
    if condition != 'clean':
        rec.add_image('clean', stamp, clean_image, stamp + 1_000_000)
    rec.add_frame_info({'stamp_ns': stamp, 'index': index, 'condition': condition})
    rec.add_detections('raw', _body(stamp, _dets(raw_boxes), stamp + 30_000_000))
    if condition != 'clean':
        rec.add_detections('clean', _body(stamp, _dets(ref_boxes), stamp + 30_000_000))
    if restored:
        rec.add_quality(stamp, np.full((2, 3), 2.0 if condition != 'clean' else 5.0))
        rec.add_restoration(stamp, {'backend': 'classical', 'cache_hit': False, 'cell': 64,
                                    'skipped_fraction': 0.0, 'timings_ms': {'total': 80.0}})
        out = clean_image if condition == 'clean' else np.clip(
            clean_image.astype(int) + 3, 0, 255).astype(np.uint8)
        rec.add_image('restored', stamp, out, stamp + 200_000_000)
        rec.add_detections('restored', _body(stamp, _dets(rest_boxes), stamp + 250_000_000))


BOX_A = [10, 10, 50, 60]
BOX_B = [90, 20, 140, 100]


def test_recorder_scores_each_condition_against_the_clean_frame(clean_image, tmp_path):
    rec = DemoRecorder(strip_index=1)
    # clean pass: the raw frame is the reference; restored output identical (passed through)
    for i in range(3):
        _feed(rec, clean_image, 1000 + i, i, 'clean', [BOX_A, BOX_B], [BOX_A, BOX_B], None)
    # haze pass: raw finds one of two objects, restored both; frame 1 was dropped by restoration
    for i in range(3):
        _feed(rec, clean_image, 2000 + i, i, 'haze', [BOX_A], [BOX_A, BOX_B], [BOX_A, BOX_B],
              restored=i != 1)
    assert rec.played() == 6 and rec.played('haze') == 3
    assert rec.completed('clean') == 3 and rec.completed('haze') == 2
    assert rec.pending_frames('haze') == 1
    summary = rec.summary()
    assert summary['conditions'] == ['clean', 'haze']
    det = summary['detection']
    assert det['clean']['raw']['recall'] == pytest.approx(1.0)
    assert det['haze']['raw']['images'] == 2  # the dropped frame has no restored result
    assert det['haze']['raw']['recall'] == pytest.approx(0.5)
    assert det['haze']['restored']['recall'] == pytest.approx(1.0)
    assert det[WEATHER_ROW]['raw']['recall'] == pytest.approx(det['haze']['raw']['recall'])
    assert summary['recall_recovered']['haze'] == pytest.approx(1.0)
    assert summary['recall_recovered']['clean'] is None
    iq = summary['restoration']
    assert iq['clean']['restored_identical'] == 1.0 and iq['clean']['restored_psnr'] is None
    assert iq['haze']['restored_psnr'] > iq['haze']['raw_psnr'] + 10
    assert summary['accounting']['haze'] == {
        'played': 3, 'restored': 2, 'scored': 2, 'detections_raw': 3,
        'detections_restored': 2, 'detections_clean': 3}
    assert summary['latency_ms']['restoration'] == pytest.approx([200.0] * 5)
    assert rec.service_ms() == {'restoration': 80.0, 'detection raw': 21.0,
                                'detection restored': 21.0, 'detection clean': 21.0}
    # The strip keeps frame 1 for clean, and frame 2 for haze (frame 1 was never restored).
    assert rec.strip['clean']['index'] == 1 and rec.strip['haze']['index'] == 2
    assert 'dets_restored' in rec.strip['haze']
    grid, cell = rec.strip['haze']['quality']  # drawn as cells of the node's size (JSON 'cell')
    assert grid.shape == (2, 3) and cell == 64

    files = write_demo_report(tmp_path, summary, rec.strip, meta={'command': 'test'},
                              extra={'graph': {'restoration_node': {'dropped.stale': 1}}})
    report = json.loads(files['json'].read_text())
    assert report['results'][f'raw ({WEATHER_ROW})']['recall'] == pytest.approx(0.5)
    assert set(report['groups']) == {'clean', 'haze'}
    md = files['md'].read_text()
    assert 'dropped.stale 1' in md and '| haze | 3 | 2 |' in md
    assert '| haze | 2 | 0.500 | 1.000 | 100% |' in md
    strip = cv2.imread(str(files['plot_strip']))
    assert strip.shape[:2] == (2 * 240, 4 * 320)


def test_recorder_without_detection_counts_restored_frames(clean_image):
    rec = DemoRecorder(detection=False)
    _feed(rec, clean_image, 5, 0, 'rain', [], [], [])
    assert rec.completed() == 1
    summary = rec.summary()
    assert summary['detection'] == {}
    assert summary['restoration']['rain']['frames'] == 1
    with pytest.raises(ValueError, match='unknown stream'):
        rec.add_image('depth', 5, clean_image)

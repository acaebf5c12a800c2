"""Detection metrics (ultralytics' matching + AP), reports, and `adaqual evaluate` end to end."""
import json

import numpy as np
import pytest

from adaqual_ros.cli.main import main as adaqual
from adaqual_ros.metrics.detection import (
    DetectionAccumulator,
    load_yolo_labels,
    match_detections,
)
from adaqual_ros.metrics.report import frame_strip, save_frame_strip, write_report

BOXES = np.array([[10, 10, 50, 50], [60, 20, 100, 80], [5, 60, 30, 95]], np.float32)
CLASSES = np.array([0, 2, 2])


def test_load_yolo_labels(tmp_path):
    path = tmp_path / 'a.txt'
    path.write_text('2 0.5 0.25 0.2 0.1\n\n0 0.1 0.9 0.2 0.2\n')
    boxes, classes = load_yolo_labels(path, (200, 400))
    np.testing.assert_allclose(boxes, [[160, 40, 240, 60], [0, 160, 80, 200]], atol=1e-4)
    assert classes.tolist() == [2, 0]
    empty, none = load_yolo_labels(tmp_path / 'missing.txt', (10, 10))
    assert empty.shape == (0, 4) and none.shape == (0,)
    path.write_text('2 0.5 0.5\n')
    with pytest.raises(ValueError, match='class cx cy w h'):
        load_yolo_labels(path, (10, 10))
    path.write_text('car 0.5 0.5 0.1 0.1\n')
    with pytest.raises(ValueError, match='non-numeric'):
        load_yolo_labels(path, (10, 10))


def test_perfect_predictions_score_one():
    acc = DetectionAccumulator({0: 'person', 2: 'car'})
    for _ in range(3):
        acc.add(BOXES, [0.9, 0.8, 0.7], CLASSES, BOXES, CLASSES)
    r = acc.compute()
    assert r['mAP50'] > 0.99 and r['mAP50-95'] > 0.99
    assert r['precision'] > 0.99 and r['recall'] > 0.99
    assert r['images'] == 3 and r['instances'] == 9
    assert set(r['per_class']) == {'person', 'car'}
    assert r['per_class']['car']['instances'] == 6


def test_misses_wrong_classes_and_shifts_lower_the_scores():
    acc = DetectionAccumulator()
    # One right, one with the wrong class, one missed.
    acc.add(BOXES[:2], [0.9, 0.8], [0, 0], BOXES, CLASSES)
    r = acc.compute()
    # Per class: person found (recall 1), both cars missed; overall is the class mean.
    assert r['per_class']['0']['recall'] == pytest.approx(1.0, abs=0.01)
    assert r['per_class']['2']['recall'] == 0.0
    assert r['recall'] == pytest.approx(0.5, abs=0.01)
    # At the operating confidence, pooled over objects: 1 of 3 found, 1 of 2 boxes right.
    assert r['operating_point'] == {'conf': 0.25, 'precision': 0.5, 'recall': 1 / 3, 'tp': 1}
    assert acc.compute(operating_conf=0.85)['operating_point']['tp'] == 1
    assert acc.compute(operating_conf=0.95)['operating_point']['recall'] == 0.0
    assert 0.2 < r['mAP50'] < 0.6
    shifted = DetectionAccumulator()
    # IoU ~0.68 with its target: a hit at 0.5, a miss from 0.7 on.
    shifted.add(BOXES[:1] + [0, 8, 0, 8], [0.9], [0], BOXES[:1], CLASSES[:1])
    s = shifted.compute()
    assert s['mAP50'] > 0.99 and s['mAP50-95'] < 0.5
    tp, order = match_detections(BOXES[:1] + [0, 8, 0, 8], [0.9], [0], BOXES[:1], [0])
    assert tp[0, 0] and not tp[0, -1] and order.tolist() == [0]


def test_accumulator_edge_cases():
    acc = DetectionAccumulator()
    assert acc.compute()['mAP50'] == 0.0 and len(acc) == 0
    acc.add(np.zeros((0, 4)), [], [], BOXES, CLASSES)          # nothing detected
    acc.add(BOXES, [0.5, 0.5, 0.5], CLASSES, np.zeros((0, 4)), [])  # background image
    r = acc.compute()
    assert r['images'] == 2 and r['instances'] == 3 and r['mAP50'] == 0.0
    with pytest.raises(ValueError, match='predictions'):
        acc.add(BOXES, [0.5], CLASSES, BOXES, CLASSES)
    with pytest.raises(ValueError, match='ground truth'):
        acc.add(BOXES, [0.5] * 3, CLASSES, BOXES, CLASSES[:1])


def test_write_report(tmp_path):
    acc = DetectionAccumulator({0: 'person', 2: 'car'})
    acc.add(BOXES, [0.9, 0.8, 0.7], CLASSES, BOXES, CLASSES)
    half = DetectionAccumulator({0: 'person', 2: 'car'})
    half.add(BOXES[:1], [0.9], CLASSES[:1], BOXES, CLASSES)
    results = {'raw': half.compute(), 'adaqual': acc.compute()}
    a, b = np.zeros((60, 80, 3), np.uint8), np.full((30, 40, 3), 200, np.uint8)
    strip = save_frame_strip(tmp_path / 'rep' / 'frames.png', [[('raw', a), ('restored', b)],
                                                               [('raw', b)]], tile_width=100)
    files = write_report(tmp_path / 'rep', results, meta={'data': 'synthetic boxes'},
                         groups={'haze': results, 'rain': results},
                         latency_ms={'adaqual': [10.0, 12.0, 50.0]}, extra={'note': 1},
                         figures={'frames': strip})
    doc = json.loads(files['json'].read_text())
    assert set(doc['results']) == {'raw', 'adaqual'}
    assert doc['results']['adaqual']['mAP50'] == pytest.approx(results['adaqual']['mAP50'])
    assert doc['latency_ms']['adaqual']['count'] == 3 and doc['note'] == 1
    md = files['md'].read_text()
    assert '| raw |' in md and '### haze' in md and 'synthetic boxes' in md
    assert '![frames](frames.png)' in md and doc['files']['plot_frames'] == 'frames.png'
    picture = frame_strip([[('raw', a), ('restored', b)], [('raw', b)]], tile_width=100, gap=4)
    assert picture.shape == (4 + 75 + 4 + 75 + 4, 4 + 100 + 4 + 100 + 4, 3)
    assert picture[4 + 40, 4 + 100 + 4 + 50].tolist() == [200, 200, 200]  # b, scaled in place
    with pytest.raises(ValueError, match='uint8'):
        frame_strip([[('x', a.astype(np.float32))]])
    for key in ('plot_metrics', 'plot_mAP50_per_condition', 'plot_latency'):
        assert files[key].stat().st_size > 1000
    with pytest.raises(ValueError, match='dict'):
        write_report(tmp_path, [1, 2])


def _direct_map(detector_path, images, labels):
    """mAP computed straight from ultralytics: its predict, label maths, matching and AP."""
    import torch
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou
    from ultralytics.utils.ops import xywhn2xyxy

    model = YOLO(str(detector_path), task='detect')
    validator = DetectionValidator(args={'save_dir': str(labels.parent / 'val')},
                                   save_dir=labels.parent / 'val')
    tps, confs, pcls, tcls = [], [], [], []
    for image in images:
        res = model.predict(str(image), conf=0.001, iou=0.7, imgsz=640, verbose=False)[0]
        h, w = res.orig_shape
        rows = np.loadtxt(labels / (image.stem + '.txt'), ndmin=2)
        gt = torch.tensor(xywhn2xyxy(rows[:, 1:5], w=w, h=h), dtype=torch.float32)
        gc = torch.tensor(rows[:, 0], dtype=torch.float32)
        boxes = res.boxes
        iou = box_iou(gt, boxes.xyxy)
        tps.append(validator.match_predictions(boxes.cls, gc, iou).numpy())
        confs.append(boxes.conf.numpy())
        pcls.append(boxes.cls.numpy())
        tcls.append(gc.numpy())
    out = ap_per_class(np.concatenate(tps), np.concatenate(confs), np.concatenate(pcls),
                       np.concatenate(tcls))
    p, r, ap = out[2], out[3], out[5]
    return {'mAP50': ap[:, 0].mean(), 'mAP50-95': ap.mean(), 'precision': p.mean(),
            'recall': r.mean()}


def test_evaluate_labelled_matches_ultralytics(asset, tmp_path):
    images = asset('data/dawn_fog_dev/images')
    labels = asset('data/dawn_fog_dev/labels')
    detector = asset('models/yolov8n_int8.onnx')
    subset = sorted(images.glob('*.jpg'))[:5]
    code = adaqual(['evaluate', 'labelled', '--images', str(images), '--labels', str(labels),
                    '--detector', str(detector), '--out', str(tmp_path / 'out'), '--limit', '5',
                    '--backends', 'raw,clahe', '--no-plots'])
    assert code == 0
    doc = json.loads((tmp_path / 'out' / 'report.json').read_text())
    raw = doc['results']['raw']
    assert raw['images'] == 5
    direct = _direct_map(detector, subset, labels)
    for key in ('mAP50', 'mAP50-95', 'precision', 'recall'):
        assert raw[key] == pytest.approx(direct[key], abs=1e-6), key
    assert 0.0 < raw['mAP50'] < 1.0
    assert set(doc['results']) == {'raw', 'clahe'}
    assert (tmp_path / 'out' / 'report.md').read_text().count('| clahe |') >= 1


def test_evaluate_reports_bad_input(tmp_path, capsys):
    assert adaqual(['evaluate', 'labelled', '--images', str(tmp_path), '--labels',
                    str(tmp_path), '--detector', str(tmp_path / 'none.onnx'),
                    '--out', str(tmp_path / 'o')]) == 2
    assert 'does not exist' in capsys.readouterr().err


@pytest.mark.slow
def test_dawn_fog_dev_raw_map50_reproduces_reference(asset, tmp_path):
    # The reference figure for the shipped detector on DAWN fog dev: mAP50 0.309 on raw frames.
    code = adaqual(['evaluate', 'labelled', '--images', str(asset('data/dawn_fog_dev/images')),
                    '--labels', str(asset('data/dawn_fog_dev/labels')),
                    '--detector', str(asset('models/yolov8n_int8.onnx')),
                    '--out', str(tmp_path), '--backends', 'raw', '--no-plots'])
    assert code == 0
    raw = json.loads((tmp_path / 'report.json').read_text())['results']['raw']
    assert raw['images'] == 100 and raw['instances'] == 716
    assert raw['mAP50'] == pytest.approx(0.309, abs=0.002)


def test_evaluate_video_and_bag_against_clean_frames(asset, tmp_path, capsys):
    from adaqual_ros.io.bags import BagWriter
    from adaqual_ros.io.video import FrameSource

    video = asset('data/video/highway_dashcam.mp4')
    detector = str(asset('models/yolov8n_int8.onnx'))
    common = ['--detector', detector, '--backends', 'raw,clahe', '--no-plots',
              '--severity', '0.8', '--width', '320']
    assert adaqual(['evaluate', 'video', '--video', str(video), '--condition', 'haze,clean',
                    '--limit', '2', '--stride', '50', '--out', str(tmp_path / 'v')]
                   + [c if c != 'raw,clahe' else 'raw,clahe,classical' for c in common]) == 0
    doc = json.loads((tmp_path / 'v' / 'report.json').read_text())
    assert doc['meta']['frames'] == 2 and set(doc['groups']) == {'haze', 'clean'}
    # The share of each frame the restorer left untouched, per condition (restorer rows only).
    skipped = doc['meta']['skipped_fraction']
    assert set(skipped) == {'classical'} and set(skipped['classical']) == {'all', 'haze', 'clean'}
    assert 0.0 <= skipped['classical']['haze'] < skipped['classical']['clean'] <= 1.0
    clean, haze = doc['groups']['clean']['raw'], doc['groups']['haze']['raw']
    # Clean frames scored against their own detections: every reference object is found.
    assert clean['instances'] > 0 and clean['operating_point']['recall'] == 1.0
    assert haze['operating_point']['recall'] < 1.0  # heavy haze loses objects
    assert set(doc['recall_recovered']) == {'pooled', 'haze', 'clean'}
    # Each restored row against the raw frames' detections, frame by frame (no reference).
    agreement = doc['agreement']
    assert set(agreement) == {'clahe', 'classical'} and agreement['clahe']['images'] == 4
    assert not (tmp_path / 'v' / 'frames.png').exists()  # --no-plots: no pictures at all
    # Dusk/night fog: the same frames and haze field under a dim airlight; bad values exit 2.
    assert adaqual(['evaluate', 'video', '--video', str(video), '--condition', 'haze',
                    '--limit', '2', '--stride', '50', '--dim-haze', '1',
                    '--out', str(tmp_path / 'd')] + common) == 0
    assert json.loads((tmp_path / 'd' / 'report.json').read_text())['meta']['dim_haze'] == 1.0
    assert adaqual(['evaluate', 'video', '--video', str(video), '--condition', 'haze',
                    '--limit', '1', '--dim-haze', '2', '--out', str(tmp_path / 'e')]
                   + common) == 2

    bag = tmp_path / 'cam.mcap'
    with BagWriter(bag) as writer:
        for frame in FrameSource(video, limit=2, stride=50):
            writer.write_compressed('/cam/image_raw/compressed', frame.image,
                                    10**9 + frame.index, 'cam')
    assert adaqual(['evaluate', 'bag', '--bag', str(bag), '--condition', 'haze',
                    '--out', str(tmp_path / 'b')] + common) == 0
    assert adaqual(['evaluate', 'bag', '--bag', str(bag), '--condition', 'haze', '--strip', '1',
                    '--out', str(tmp_path / 'p')] + [c for c in common if c != '--no-plots']) == 0
    assert (tmp_path / 'p' / 'frames.png').stat().st_size > 1000
    assert '![frames](frames.png)' in (tmp_path / 'p' / 'report.md').read_text()
    doc = json.loads((tmp_path / 'b' / 'report.json').read_text())
    assert doc['meta']['topic'] == '/cam/image_raw/compressed' and doc['meta']['frames'] == 2
    assert doc['results']['raw']['images'] == 2 and 'clahe' in doc['results']
    # A bag from real weather, no labels: what restoration changes for the detector. A row that
    # changes nothing agrees with raw on every object, at the same confidence.
    assert adaqual(['evaluate', 'bag', '--bag', str(bag), '--out', str(tmp_path / 'a'),
                    '--detector', detector, '--backends', 'raw,passthrough', '--no-plots']) == 0
    same = json.loads((tmp_path / 'a' / 'report.json').read_text())['agreement']['passthrough']
    assert same['images'] == 2 and same['matched'] == same['raw_objects'] > 0
    assert same['only_raw'] == same['only_restored'] == 0
    assert same['matched_conf_raw'] == pytest.approx(same['matched_conf_restored'])
    assert '| passthrough | 2 |' in (tmp_path / 'a' / 'report.md').read_text()
    assert '| passthrough | 2 |' in capsys.readouterr().out  # and on the console


def test_evaluate_passes_restorer_knobs(tmp_path):
    """--steps and --skip-threshold reach the restorer (the same knobs as the node's)."""
    from adaqual_ros.cli.evaluate import Row
    from adaqual_ros.cli.main import build_parser

    base = ['evaluate', 'labelled', '--images', str(tmp_path), '--labels', str(tmp_path),
            '--out', str(tmp_path / 'o'), '--quality-backend', 'classical']
    args = build_parser('evaluate').parse_args(base + ['--steps', '1', '--skip-threshold', '3.5'])
    row = Row('adaqual', args)
    assert (row.restorer.settings.steps, row.restorer.settings.skip_threshold) == (1, 3.5)
    default = Row('adaqual', build_parser('evaluate').parse_args(base))
    assert (default.restorer.settings.steps, default.restorer.settings.skip_threshold) == (2, 4.0)
    with pytest.raises(ValueError, match='steps must be >= 1'):
        Row('adaqual', build_parser('evaluate').parse_args(base + ['--steps', '0']))
    # --noise-seed is the restorer's start-noise seed: another seed, another restored frame
    seeded = Row('adaqual', build_parser('evaluate').parse_args(base + ['--noise-seed', '3']))
    assert (seeded.restorer.settings.seed, default.restorer.settings.seed) == (3, 0)
    margin = Row('adaqual', build_parser('evaluate').parse_args(base + ['--skip-margin', '1']))
    assert (margin.restorer.settings.skip_margin, default.restorer.settings.skip_margin) == (1, 0)
    from adaqual_ros.weather import synthesize
    rgb = np.random.default_rng(0).integers(0, 256, (128, 192, 3), dtype=np.uint8)
    hazy = synthesize(rgb, 'haze', 0, severity=0.9).degraded
    assert not np.array_equal(seeded(hazy, 'cam')[0], default(hazy, 'cam')[0])
    assert np.array_equal(default(hazy, 'cam')[0], default(hazy, 'cam')[0])


def test_agreement_matches_one_to_one_by_class_and_iou():
    from adaqual_ros.detection.yolo import Detections
    from adaqual_ros.metrics.agreement import AgreementAccumulator, match_pairs

    # Two restored boxes on one raw box: one match, the better one; another class never matches.
    raw = np.array([[0, 0, 10, 10]], float)
    restored = np.array([[0, 0, 10, 9], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    assert match_pairs(raw, [0], restored, [0, 0, 2]) == [(0, 1)]
    assert match_pairs(raw, [0], restored[2:], [2]) == []
    # IoU 0.45 is below the 0.5 that makes two boxes the same object.
    assert match_pairs(raw, [0], np.array([[0, 0, 10, 4.5]]), [0]) == []
    assert match_pairs(raw, [0], np.zeros((0, 4)), []) == []
    names = {0: 'person', 2: 'car'}
    acc = AgreementAccumulator(conf=0.25, names=names)
    acc.add(Detections(np.vstack([raw, [[20, 20, 30, 30]]]), [0.5, 0.1], [0, 0], names, (40, 40)),
            Detections(restored, [0.6, 0.9, 0.3], [0, 0, 2], names, (40, 40)))
    got = acc.compute()
    # the 0.1 raw box is below conf; restored: two people (one matched) and a car
    assert (got['raw_objects'], got['restored_objects'], got['matched']) == (1, 3, 1)
    assert (got['only_raw'], got['only_restored']) == (0, 2)
    assert got['matched_conf_raw'] == pytest.approx(0.5)
    assert got['matched_conf_restored'] == pytest.approx(0.9)
    assert got['per_class']['car']['only_restored'] == 1
    empty = AgreementAccumulator().compute()
    assert empty['images'] == 0 and empty['matched'] == 0 and empty['matched_conf_raw'] is None


def test_the_reported_command_reproduces_the_arguments(tmp_path):
    """The report's command line parses back to the same arguments: a true/false option keeps
    its value (`--cpu-bf16 false` is not the default), a path with a space stays one word."""
    import shlex

    from adaqual_ros.cli.evaluate import _command_line
    from adaqual_ros.cli.main import build_parser

    parser = build_parser('evaluate')
    folder = tmp_path / 'my images'
    args = parser.parse_args(['evaluate', 'video', '--video', str(folder), '--out', 'o',
                              '--cpu-bf16', 'false', '--fog-contrast', 'true', '--no-plots',
                              '--condition', 'haze,rain', '--steps', '1'])
    command = _command_line(args)
    assert command.startswith('adaqual evaluate video ') and '--cpu-bf16 False' in command
    assert vars(parser.parse_args(shlex.split(command)[1:])) == vars(args)
    plain = parser.parse_args(['evaluate', 'labelled', '--images', 'i', '--labels', 'l',
                               '--out', 'o'])
    assert _command_line(plain) == 'adaqual evaluate labelled --images i --labels l --out o'

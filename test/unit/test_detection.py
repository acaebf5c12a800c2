"""Detector wrapper: offline model discovery, agreement with ultralytics, dataclasses, drawing."""
import numpy as np
import pytest

from adaqual_ros.detection.yolo import (
    DETECTOR_ENV,
    Detections,
    Detector,
    DetectorError,
    draw_detections,
    find_detector,
)
from adaqual_ros.io.video import list_images, read_image

DETECTOR = 'models/yolov8n_int8.onnx'


@pytest.fixture(scope='module')
def detector_path(asset):
    return asset(DETECTOR)


@pytest.fixture(scope='module')
def detector(detector_path):
    return Detector(detector_path, conf=0.25)


@pytest.fixture(scope='module')
def foggy(asset):
    return list_images(asset('data/dawn_fog_dev/images'))[:3]


def test_find_detector_order(tmp_path, monkeypatch, detector_path):
    monkeypatch.setenv('ADAQUAL_ASSETS', str(detector_path.parents[1]))
    monkeypatch.delenv(DETECTOR_ENV, raising=False)
    assert find_detector() == detector_path.resolve()
    other = tmp_path / 'mine.onnx'
    other.write_bytes(b'x')
    monkeypatch.setenv(DETECTOR_ENV, str(other))
    assert find_detector() == other.resolve()
    assert find_detector(detector_path) == detector_path.resolve()  # explicit wins
    with pytest.raises(FileNotFoundError, match='does not exist'):
        find_detector(tmp_path / 'missing.pt')
    monkeypatch.setenv(DETECTOR_ENV, str(tmp_path / 'gone.onnx'))
    with pytest.raises(FileNotFoundError, match=DETECTOR_ENV):
        find_detector()


def test_find_detector_none_without_assets(tmp_path, monkeypatch):
    monkeypatch.delenv(DETECTOR_ENV, raising=False)
    monkeypatch.setenv('ADAQUAL_ASSETS', str(tmp_path))  # exists but holds no model
    assert find_detector() is None
    with pytest.raises(DetectorError, match='--detector'):
        Detector(None)


def test_detector_rejects_bad_arguments(detector_path, tmp_path):
    with pytest.raises(FileNotFoundError):
        Detector(tmp_path / 'nope.onnx')
    with pytest.raises(ValueError, match='conf'):
        Detector(detector_path, conf=1.5)
    with pytest.raises(ValueError, match='iou'):
        Detector(detector_path, iou=0.0)


def test_detect_matches_ultralytics_on_a_real_frame(detector, detector_path, foggy):
    from ultralytics import YOLO

    rgb = read_image(foggy[0])
    ours = detector.detect(rgb)
    # ultralytics reads the file itself (its own BGR handling): an independent path.
    ref = YOLO(str(detector_path), task='detect').predict(str(foggy[0]), conf=0.25, iou=0.7,
                                                         verbose=False)[0].boxes
    assert len(ours) == len(ref) > 0
    np.testing.assert_allclose(ours.boxes, ref.xyxy.numpy(), atol=1.0)
    np.testing.assert_allclose(ours.scores, ref.conf.numpy(), atol=1e-3)
    np.testing.assert_array_equal(ours.class_ids, ref.cls.numpy().astype(int))
    assert ours.image_size == rgb.shape[:2]
    assert set(ours.labels) <= set(detector.names.values())


def test_batch_equals_singles_and_color_order(detector, foggy):
    frames = [read_image(p) for p in foggy]
    batch = detector.detect(frames)
    assert isinstance(batch, list) and len(batch) == len(frames)
    for frame, det in zip(frames, batch):
        single = detector.detect(frame)
        np.testing.assert_allclose(det.boxes, single.boxes, atol=1e-3)
    bgr = detector.detect(frames[0][:, :, ::-1], color_order='bgr')
    np.testing.assert_allclose(bgr.boxes, batch[0].boxes, atol=1e-3)
    # Swapped channels are a different image to the network: not silently the same result.
    swapped = detector.detect(frames[0][:, :, ::-1])
    assert len(swapped) != len(batch[0]) or not np.allclose(swapped.scores, batch[0].scores)
    with pytest.raises(ValueError, match='uint8'):
        detector.detect(frames[0].astype(np.float32))
    with pytest.raises(ValueError, match='color_order'):
        detector.detect(frames[0], color_order='yuv')


def test_classes_filter(detector_path, foggy):
    rgb = read_image(foggy[0])
    cars = Detector(detector_path, conf=0.05, classes=[2]).detect(rgb)
    assert len(cars) > 0 and set(cars.class_ids.tolist()) == {2}


def test_detections_dict_round_trip():
    det = Detections([[1, 2, 30, 40], [5, 6, 7, 8]], [0.9, 0.5], [2, 0],
                     {0: 'person', 2: 'car'}, (48, 64))
    body = det.to_dict()
    back = Detections.from_dict(body)
    np.testing.assert_allclose(back.boxes, det.boxes)
    np.testing.assert_allclose(back.scores, det.scores)
    assert back.labels == ['car', 'person'] and back.image_size == (48, 64)
    assert len(Detections.empty((10, 10))) == 0
    strong = det.above(0.6)
    assert strong.labels == ['car'] and len(det) == 2 and strong.image_size == (48, 64)
    with pytest.raises(ValueError, match='same length'):
        Detections([[0, 0, 1, 1]], [0.5, 0.4], [1], {}, (4, 4))
    with pytest.raises(ValueError, match='detections'):
        Detections.from_dict({'boxes': []})


def test_draw_detections_draws_inside_the_box():
    rgb = np.full((80, 120, 3), 40, np.uint8)
    det = Detections([[20, 30, 90, 70]], [0.8], [2], {2: 'car'}, (80, 120))
    out = draw_detections(rgb, det)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (out[50, 20] != 40).any()          # left edge of the box
    assert (out[5, 110] == 40).all()          # far from the box: untouched
    assert (rgb == 40).all()                  # input not modified

"""Camera-pipeline variation used by the trainers (weather/camera.py)."""
import numpy as np

from adaqual_ros.weather.camera import camera_look, compression


def _frame(seed=0, shape=(96, 128, 3)):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, shape, dtype=np.uint8)
    return np.ascontiguousarray(base)


def test_camera_look_keeps_size_and_dtype_and_changes_pixels():
    frame = _frame()
    changed = 0
    for seed in range(20):
        out = camera_look(frame, np.random.default_rng(seed), p=1.0)
        assert out.shape == frame.shape and out.dtype == np.uint8
        changed += int(not np.array_equal(out, frame))
    # every draw with p=1 picks at least one effect in most cases; the frame must change often
    assert changed >= 15


def test_camera_look_probability_zero_is_identity_and_seeded():
    frame = _frame(1)
    assert camera_look(frame, np.random.default_rng(0), p=0.0) is frame
    a = camera_look(frame, np.random.default_rng(5), p=1.0)
    b = camera_look(frame, np.random.default_rng(5), p=1.0)
    assert np.array_equal(a, b)


def test_compression_roundtrip_is_lossy_but_close():
    frame = np.full((64, 64, 3), 128, np.uint8)
    frame[16:48, 16:48] = (200, 40, 90)
    out = compression(frame, np.random.default_rng(0), p=1.0)
    assert out.shape == frame.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - frame).mean()
    assert 0 < diff < 12
    assert compression(frame, np.random.default_rng(0), p=0.0) is frame

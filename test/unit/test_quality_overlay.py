"""The quality heat overlay: one drawing for the node, `adaqual restore` and the demo strip."""
import numpy as np
import pytest

from adaqual_ros.quality.overlay import quality_overlay


def test_each_cell_is_drawn_over_its_own_pixels():
    gray = np.full((100, 130, 3), 128, np.uint8)
    scores = np.array([[1.0, 5.0, 5.0], [5.0, 5.0, 1.0]])
    out = quality_overlay(gray, scores, 64)
    assert out.shape == (100, 130, 3) and out.dtype == np.uint8
    # poor cells red-ish, pristine ones blue-ish, cut at the cell edges (not stretched)
    assert out[10, 10, 0] > out[10, 10, 2] and out[10, 70, 2] > out[10, 70, 0]
    assert np.array_equal(out[70, 129], out[99, 128]) and out[70, 129, 0] > out[70, 129, 2]
    assert np.array_equal(out[0, 63], out[0, 0]) and not np.array_equal(out[0, 64], out[0, 0])


def test_planes_uint16_float_alpha_and_the_width_cap():
    scores = np.full((2, 2), 3.0)
    plane = quality_overlay(np.full((100, 100), 60000, np.uint16), scores, 64)
    rgba = quality_overlay(np.full((100, 100, 4), 0.5, np.float32), scores, 64)
    assert plane.shape == rgba.shape == (100, 100, 3)
    small = quality_overlay(np.zeros((100, 1000, 3), np.uint8), np.full((2, 16), 2.0), 64,
                            max_width=200)
    assert small.shape == (20, 200, 3)
    with pytest.raises(ValueError, match='does not cover'):
        quality_overlay(np.zeros((100, 100, 3), np.uint8), np.full((3, 3), 2.0), 64)

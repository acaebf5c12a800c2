"""The guided filter of the predicted residual (pipelines.residual_guide) and its settings."""
import cv2
import numpy as np
import pytest
import torch

from adaqual_ros.pipelines.residual_guide import box_mean, filter_residual, guided_filter
from adaqual_ros.runtime import Restorer, RestorerSettings


def test_box_mean_matches_opencv_with_reflected_borders():
    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    for r in (1, 5, 17):
        got = box_mean(x, r).numpy()
        ref = np.stack([[cv2.boxFilter(x[b, c].numpy(), -1, (2 * r + 1,) * 2,
                                       borderType=cv2.BORDER_REFLECT_101)
                         for c in range(3)] for b in range(2)])
        np.testing.assert_allclose(got, ref, atol=2e-6)


def test_residual_that_follows_the_frame_stays_and_invented_texture_goes():
    g = torch.Generator().manual_seed(1)
    h, w = 96, 128
    # The frame: flat fog on the top half, a striped structure on the bottom half.
    frame = torch.full((1, 3, h, w), 0.7)
    stripes = (torch.arange(w) % 8 < 4).float() * 0.3 + 0.3
    frame[:, :, h // 2:, :] = stripes
    # A residual that is a linear function of the frame (what removing haze or streaks
    # looks like) plus texture with no counterpart in the frame.
    linear = 0.5 * frame - 0.2
    texture = 0.1 * torch.randn(1, 3, h, w, generator=g)
    out = filter_residual(linear + texture, frame, radius=8)
    flat = (slice(None), slice(None), slice(8, h // 2 - 8), slice(8, w - 8))
    striped = (slice(None), slice(None), slice(h // 2 + 8, h - 8), slice(8, w - 8))
    # In the flat half the invented texture is averaged away (a 17x17 window: ~17x less)...
    assert (out - linear)[flat].std() < 0.1 * texture[flat].std()
    # ...and in the striped half the part that follows the frame is kept.
    corr = np.corrcoef(out[striped].flatten().numpy(), linear[striped].flatten().numpy())[0, 1]
    assert corr > 0.95
    assert torch.equal(filter_residual(texture, frame, 0), texture)


def test_guided_filter_keeps_dtype_and_handles_tiny_frames():
    # Large enough to be filtered (a 3-row frame would come back untouched): the float32
    # arithmetic inside goes back to the input's dtype and shape.
    guide = torch.rand(1, 1, 48, 40)
    src = torch.rand(1, 3, 48, 40, dtype=torch.float64)
    out = guided_filter(guide, src, 16, 1e-3)
    assert out.dtype == torch.float64 and out.shape == src.shape
    assert not torch.equal(out, src)
    # Too small to reflect even a radius of 1: returned as is.
    tiny = torch.rand(1, 3, 2, 2)
    assert torch.equal(guided_filter(tiny[:, :1], tiny, 4, 1e-3), tiny)


@pytest.mark.parametrize('radius', [-1, 65])
def test_restorer_refuses_a_bad_radius(radius):
    with pytest.raises(ValueError, match='residual_guide'):
        Restorer(RestorerSettings(backend='passthrough', residual_guide=radius))


def test_fast_filter_is_close_to_the_exact_one():
    g = torch.Generator().manual_seed(3)
    # A frame with smooth structure and edges: blurred noise plus a bright block.
    frame = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 200, 300, generator=g), 9, 1, 4)
    frame[..., 60:140, 100:220] += 0.4
    residual = 0.3 * frame - 0.1 + 0.05 * torch.randn(1, 3, 200, 300, generator=g)
    exact = guided_filter(frame, residual, 16, 1e-3, subsample=1)
    fast = guided_filter(frame, residual, 16, 1e-3)
    assert (fast - exact).abs().mean() < 0.05 * (residual - exact).abs().mean()

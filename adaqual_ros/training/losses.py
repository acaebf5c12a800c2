"""
Training losses of AdaQual-Diff: L = L_noise + l1 * L_quality + l2 * L_percep.

The model predicts the clean residual r0 (DDIM prediction_type 'sample'), so
- L_noise is the denoising objective in that parameterisation: MSE(r0_hat, r0), uniform weights.
- L_quality is a per-pixel quality-weighted L1 of the restored frame (equivalently of r0):
  w(q) = 1 + a * s, s = (5 - q) / 4, so low-quality regions count up to (1 + a) times more.
- L_percep is structural, with no pretrained network (nothing to download): 1 - SSIM (Gaussian
  window 11, sigma 1.5) of restored vs clean, plus an L1 on image gradients (edges), which keeps
  texture and streak-free edges sharp where plain L1/L2 would blur.
Defaults chosen for this project: l1 = 1.0, l2 = 0.2, a = 2.0 (see LossWeights).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """
    Weights of the loss terms.

    Args:
        l1 (`float`, defaults to 1.0): weight of L_quality.
        l2 (`float`, defaults to 0.2): weight of L_percep.
        a (`float`, defaults to 2.0): per-pixel weight w = 1 + a * s.
        edge (`float`, defaults to 0.5): share of the gradient term inside L_percep (the rest is
            1 - SSIM).
    """

    l1: float = 1.0
    l2: float = 0.2
    a: float = 2.0
    edge: float = 0.5

    def __post_init__(self):
        for name in ('l1', 'l2', 'a', 'edge'):
            if getattr(self, name) < 0:
                raise ValueError(f'loss weight {name} must be >= 0, got {getattr(self, name)}')


def quality_weights(scores_pixel, a):
    """w(q) = 1 + a * s per pixel from a (B, 1, H, W) map of scores in [1, 5]."""
    s = ((5.0 - scores_pixel) / 4.0).clamp(0.0, 1.0)
    return 1.0 + a * s


def noise_loss(pred_residual, target_residual):
    """L_noise: MSE of the predicted clean residual (sample prediction)."""
    return F.mse_loss(pred_residual, target_residual)


def quality_loss(restored, clean, weights):
    """L_quality: per-pixel weighted L1, normalised by the mean weight."""
    per_pixel = (restored - clean).abs().mean(1, keepdim=True)
    return (per_pixel * weights).sum() / weights.expand_as(per_pixel).sum()


def _gaussian_window(size=11, sigma=1.5, device=None, dtype=None):
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g


def ssim_torch(x, y, data_range=1.0, size=11, sigma=1.5):
    """Differentiable mean SSIM of two (B, C, H, W) tensors (Gaussian window, per channel)."""
    c = x.shape[1]
    g = _gaussian_window(size, sigma, x.device, x.dtype)
    kx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return (num / den).mean()


def gradient_loss(restored, clean):
    """L1 between horizontal and vertical image gradients."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(restored) - dx(clean)).abs().mean() + (dy(restored) - dy(clean)).abs().mean()


def perceptual_loss(restored, clean, edge=0.5):
    """L_percep: (1 - edge) * (1 - SSIM) + edge * gradient L1."""
    return (1 - edge) * (1 - ssim_torch(restored, clean)) + edge * gradient_loss(restored, clean)


def adaqual_loss(pred_residual, degraded, clean, scores_pixel, weights=LossWeights()):
    """
    The full loss.

    Args:
        pred_residual (`torch.Tensor`, (B, 3, H, W)): predicted r0.
        degraded (`torch.Tensor`, (B, 3, H, W)): degraded frames in [0, 1].
        clean (`torch.Tensor`, (B, 3, H, W)): clean frames in [0, 1].
        scores_pixel (`torch.Tensor`, (B, 1, H, W)): quality score per pixel in [1, 5].
        weights (`LossWeights`): l1, l2, a, edge.

    Returns:
        `(total, terms)`: the scalar loss and a dict of the detached terms.
    """
    target = clean - degraded
    restored = degraded + pred_residual
    ln = noise_loss(pred_residual, target)
    lq = quality_loss(restored, clean, quality_weights(scores_pixel, weights.a))
    lp = perceptual_loss(restored.clamp(0, 1), clean, weights.edge)
    total = ln + weights.l1 * lq + weights.l2 * lp
    terms = {'loss': total.detach().item(), 'noise': ln.detach().item(),
             'quality': lq.detach().item(), 'percep': lp.detach().item()}
    return total, terms

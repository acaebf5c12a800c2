"""
Guided filtering of the predicted residual, with the degraded frame as the guide.

Where the frame holds no structure (dense fog, a flat sky) the small denoiser fills the residual
with texture and colour patches it guesses from its training photos; on real fog that texture
costs a detector more than the restored contrast gains. A guided filter (He et al.) keeps, in
every window, only the part of the residual that is a linear function of the input's brightness:
residual that follows edges, streaks and flakes of the frame stays, structure the frame does not
have is averaged away. Box sums by cumulative sums (cost independent of the radius; in float64,
as float32 would lose the 1e-3 variances the filter divides by on a large frame). The linear
coefficients are computed on a grid ``radius // 4`` times coarser and upsampled, as in He and
Sun's fast guided filter: at 1280x720 on one CPU thread ~250 ms exact, ~30 ms this way (scratch
timing; the bench measures it in place).
"""
import torch.nn.functional as F


def box_mean(x, radius):
    """Mean over a (2r+1)^2 window of each pixel of a (B, C, H, W) tensor, borders reflected."""
    r = int(radius)
    k = 2 * r + 1
    x = F.pad(x, (r + 1, r, r + 1, r), mode='reflect')
    # zero row/column at the start of each padded axis so that a window sum is one difference
    x[..., 0, :] = 0
    x[..., :, 0] = 0
    s = x.double().cumsum(-1).cumsum(-2)
    box = s[..., k:, k:] - s[..., :-k, k:] - s[..., k:, :-k] + s[..., :-k, :-k]
    return (box / (k * k)).to(x.dtype)


def guided_filter(guide, src, radius, eps, subsample=None):
    """
    Edge-preserving guided filter of ``src`` (B, C, H, W) by a grey ``guide`` (B, 1, H, W).

    Args:
        guide (`torch.Tensor`): guidance image in [0, 1].
        src (`torch.Tensor`): image to filter (any range).
        radius (`int`): window radius in pixels (clamped so that reflection fits the frame).
        eps (`float`): regularisation in squared guide units; larger smooths more.
        subsample (`int`, *optional*): coarser grid factor for the coefficients (1 = the exact
            filter); default ``max(1, radius // 4)``.

    Returns:
        `torch.Tensor` of the shape and dtype of ``src``.
    """
    if int(radius) < 1:
        return src
    dtype = src.dtype
    h, w = src.shape[-2:]
    s = max(1, int(radius) // 4) if subsample is None else max(1, int(subsample))
    g = guide.float()
    p = src.float()
    g_lo, p_lo = g, p
    if s > 1:
        size = (-(-h // s), -(-w // s))
        g_lo = F.interpolate(g, size=size, mode='area')
        p_lo = F.interpolate(p, size=size, mode='area')
    lh, lw = g_lo.shape[-2:]
    r = min(max(1, round(int(radius) / s)), lh - 2, lw - 2)
    if r < 1:
        return src  # too small to reflect even a 3x3 window
    mean_i = box_mean(g_lo, r)
    mean_p = box_mean(p_lo, r)
    cov_ip = box_mean(g_lo * p_lo, r) - mean_i * mean_p
    var_i = box_mean(g_lo * g_lo, r) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    mean_a, mean_b = box_mean(a, r), box_mean(b, r)
    if s > 1:
        mean_a = F.interpolate(mean_a, size=(h, w), mode='bilinear', align_corners=False)
        mean_b = F.interpolate(mean_b, size=(h, w), mode='bilinear', align_corners=False)
    return (mean_a * g + mean_b).to(dtype)


def filter_residual(residual, degraded, radius, eps=1e-3):
    """The residual guided by the degraded frame's brightness; ``radius`` 0 returns it as is."""
    if radius <= 0:
        return residual
    return guided_filter(degraded.mean(1, keepdim=True), residual, radius, eps)

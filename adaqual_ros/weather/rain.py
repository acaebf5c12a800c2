"""
Rain: streak layers screened onto the image, ``I = 1 - (1 - J) * (1 - R)``.

Procedural streaks come in two depth layers: a far layer (dense, short, thin, dim) and a near
layer (sparse, long, bright, defocused). Streak seeds are drawn per pixel with probability
``density * S`` (``S`` the severity field), so light rain is sparse rather than faint; each seed
is drawn out into a line of random length along a shared wind angle (a few degrees of jitter
between layers) and blurred. With real masks (OneRestore rain layers) a random crop of a mask is
scaled by the severity field instead.
"""
from dataclasses import dataclass
import math

import cv2
import numpy as np


@dataclass(frozen=True)
class RainParams:
    """
    Per-sample constants of the rain model.

    Args:
        angle (`float`): wind angle in degrees from vertical.
        length (`float`): near streak length as a fraction of sqrt(H * W).
        density (`float`): near-layer seed probability per pixel at severity 1.
        intensity (`float`): streak opacity scale.
    """

    angle: float
    length: float
    density: float
    intensity: float

    @classmethod
    def draw(cls, rng):
        return cls(float(rng.uniform(-25.0, 25.0)), float(rng.uniform(0.05, 0.11)),
                   float(rng.uniform(0.002, 0.005)), float(rng.uniform(0.6, 0.9)))


def line_kernel(length, angle_deg, thickness=1):
    """A (k, k) float32 kernel holding an anti-aliased line of peak 1 through its centre."""
    length = max(int(round(length)), 1)
    k = length + 2 if length % 2 == 1 else length + 3
    kernel = np.zeros((k, k), dtype=np.float32)
    c = (k - 1) / 2.0
    a = math.radians(angle_deg)
    dx, dy = math.sin(a) * length / 2.0, math.cos(a) * length / 2.0
    # cv2.line takes integer points with `shift` fractional bits (4 bits = 1/16 pixel).
    p0 = (int(round((c - dx) * 16)), int(round((c - dy) * 16)))
    p1 = (int(round((c + dx) * 16)), int(round((c + dy) * 16)))
    cv2.line(kernel, p0, p1, 1.0, thickness, cv2.LINE_AA, 4)
    return kernel


def streak_layer(height, width, severity, params, rng):
    """
    Procedural rain opacity (height, width) float32 in [0, 1].

    The random draws do not depend on ``severity``, so a higher severity only adds streaks.
    """
    scale = math.sqrt(height * width)
    total = np.zeros((height, width), dtype=np.float32)
    # (density factor, length factor, opacity factor, blur sigma, angle jitter)
    layers = ((2.5, 0.45, 0.55, 0.5, float(rng.uniform(-4, 4))),
              (1.0, 1.0, 1.0, 1.0, float(rng.uniform(-4, 4))))
    for dens, length, opacity, sigma, jitter in layers:
        u = rng.random((height, width), dtype=np.float32)
        seeds = u < (params.density * dens) * severity
        # A per-streak brightness from the low digits of u: uniform, fixed per seed.
        bright = 0.5 + 0.5 * np.modf(u * 9973.0)[0]
        seed_img = np.where(seeds, bright, 0.0).astype(np.float32)
        kernel = line_kernel(params.length * length * scale, params.angle + jitter)
        layer = cv2.filter2D(seed_img, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        layer = cv2.GaussianBlur(layer, (0, 0), sigma * max(scale / 400.0, 0.5))
        total += opacity * layer
    total *= params.intensity
    return np.clip(total, 0.0, 1.0, out=total)


def mask_layer(mask, severity, gain):
    """Opacity from a real rain mask (already cropped to the frame, float32 in [0, 1])."""
    layer = mask * (gain * severity)
    return np.clip(layer, 0.0, 1.0, out=layer)


def screen(image, layer):
    """Screen-blend a grey opacity layer (H, W) onto an RGB image (H, W, 3) in [0, 1]."""
    keep = (1.0 - layer)[..., None]
    out = 1.0 - (1.0 - image) * keep
    return out

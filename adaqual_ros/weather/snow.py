"""
Snow: flakes of several sizes and depths alpha-blended towards white, plus a light veil.

Three flake layers (far/small/dense, middle, near/large/sparse and defocused) are seeded per pixel
with probability ``density * S``, grown to discs by dilation and softened by a Gaussian blur. The
flakes scatter light, so a thin white veil of opacity ``veil * S`` is added. With real masks
(OneRestore snow layers) a random crop of a mask, scaled by the severity field, is the alpha.
"""
from dataclasses import dataclass
import math

import cv2
import numpy as np

# Grey level of the scattering veil.
VEIL_LEVEL = 0.85


@dataclass(frozen=True)
class SnowParams:
    """
    Per-sample constants of the snow model.

    Args:
        density (`float`): small-flake seed probability per pixel at severity 1.
        size (`float`): flake size multiplier.
        white (`float`): flake brightness.
        veil (`float`): veil opacity at severity 1.
    """

    density: float
    size: float
    white: float
    veil: float

    @classmethod
    def draw(cls, rng):
        return cls(float(rng.uniform(0.008, 0.016)), float(rng.uniform(0.8, 1.4)),
                   float(rng.uniform(0.9, 1.0)), float(rng.uniform(0.05, 0.15)))


def flake_layer(height, width, severity, params, rng, fall=0.0):
    """
    Procedural snow opacity (height, width) float32 in [0, 1].

    The random draws do not depend on ``severity``, so a higher severity only adds flakes.
    ``fall`` (pixels) moves the flakes down (wrapping around), near layers faster than far ones
    (parallax): with the same ``rng`` seed, a video advances ``fall`` frame by frame.
    """
    unit = math.sqrt(height * width) / 256.0
    total = np.zeros((height, width), dtype=np.float32)
    # (density factor, radius in units, blur sigma in units, opacity, fall speed factor)
    layers = ((1.0, 0.7, 0.5, 0.8, 0.5), (0.3, 1.6, 0.7, 0.9, 1.0), (0.06, 3.2, 1.4, 0.95, 2.0))
    for dens, radius, sigma, opacity, speed in layers:
        u = rng.random((height, width), dtype=np.float32)
        if fall:
            u = np.roll(u, int(round(fall * speed)), axis=0)
        seeds = u < (params.density * dens) * severity
        bright = 0.6 + 0.4 * np.modf(u * 7919.0)[0]
        layer = np.where(seeds, bright, 0.0).astype(np.float32)
        r = int(round(radius * params.size * unit))
        if r >= 1:
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
            layer = cv2.dilate(layer, disc)
        s = sigma * params.size * unit
        layer = cv2.GaussianBlur(layer, (0, 0), s)
        if r < 1:
            # A blurred single pixel loses its peak; restore a visible flake brightness.
            layer *= min(2.0 * math.pi * s * s, 6.0)
        total = np.maximum(total, opacity * layer)
    return np.clip(total, 0.0, 1.0, out=total)


def mask_alpha(mask, severity, gain):
    """Opacity from a real snow mask (already cropped to the frame, float32 in [0, 1])."""
    alpha = mask * (gain * severity)
    return np.clip(alpha, 0.0, 1.0, out=alpha)


def blend_snow(image, alpha, severity, params):
    """Veil then flakes: ``I = lerp(lerp(J, w, veil * S), white, alpha)``."""
    veil = (params.veil * severity)[..., None]
    out = image - VEIL_LEVEL
    out *= 1.0 - veil
    out += VEIL_LEVEL
    # lerp to white: out + a * (white - out) = (out - white) * (1 - a) + white.
    out -= params.white
    out *= (1.0 - alpha)[..., None]
    out += params.white
    return out

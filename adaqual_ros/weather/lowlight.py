"""
Low light: exposure and gamma drop followed by Poisson-Gaussian sensor noise.

Model (image values in [0, 1], severity field ``S`` in [0, 1]):
``dark = e(S) * x ** gamma`` with a per-pixel exposure ``e = 1 - k * S`` (uneven illumination,
``k`` in [0.82, 0.92]) and a global gamma ``1 + g * mean(S)`` (``g`` in [0.6, 1.0]) for the
camera's tone curve in the dark, then heteroscedastic noise with standard deviation
``S * sqrt(a * dark + b ** 2)``: the Poisson-Gaussian model in its usual heteroscedastic Gaussian
approximation, shot noise (``a``) growing with the signal and read noise (``b``) not. Noise is
drawn after the exposure drop because the sensor sees the dark scene.
"""
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class LowLightParams:
    """
    Per-sample constants of the low-light model.

    Args:
        exposure_drop (`float`): ``k``, the exposure lost at severity 1.
        gamma_gain (`float`): ``g``, the gamma increase at mean severity 1.
        shot (`float`): ``a``, shot-noise variance per unit signal.
        read (`float`): ``b``, read-noise standard deviation.
    """

    exposure_drop: float
    gamma_gain: float
    shot: float
    read: float

    @classmethod
    def draw(cls, rng):
        return cls(float(rng.uniform(0.82, 0.92)), float(rng.uniform(0.6, 1.0)),
                   float(rng.uniform(0.01, 0.03)), float(rng.uniform(0.01, 0.025)))


def gamma_of(severity, params):
    """The global gamma for a severity field."""
    return 1.0 + params.gamma_gain * float(severity.mean())


def exposure_of(severity, params):
    """The per-pixel exposure field (H, W)."""
    return 1.0 - params.exposure_drop * severity


def noise_variance(dark, severity, params):
    """Per-value noise variance ``S^2 * (a * dark + b^2)`` for a dark image (H, W[, 3])."""
    s = severity if dark.ndim == 2 else severity[..., None]
    return (dark * params.shot + params.read ** 2) * (s * s)


def low_light(image, severity, params, noise_rng):
    """
    Darken ``image`` and add sensor noise.

    Args:
        image (`np.ndarray` float32, (H, W, 3)): linear-ish RGB in [0, 1].
        severity (`np.ndarray` float32, (H, W)): per-pixel severity in [0, 1].
        params (`LowLightParams`): per-sample constants.
        noise_rng (`np.random.Generator`): draws the noise (one standard normal per value).

    Returns:
        `np.ndarray` float32 (H, W, 3) in [0, 1].
    """
    gamma = gamma_of(severity, params)
    dark = cv2.pow(np.maximum(image, 0.0), gamma) if gamma != 1.0 else image.copy()
    dark *= exposure_of(severity, params)[..., None]
    # In place: std = S * sqrt(a * dark + b^2); noise *= std; dark += noise.
    std = dark * params.shot
    std += params.read ** 2
    cv2.sqrt(std, std)
    std *= severity[..., None]
    noise = noise_rng.standard_normal(dark.shape, dtype=np.float32)
    noise *= std
    dark += noise
    return np.clip(dark, 0.0, 1.0, out=dark)

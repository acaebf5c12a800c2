"""
Haze: atmospheric scattering ``I = J * t + A * (1 - t)`` with ``t = exp(-beta * depth)``.

``beta = beta_max * S`` follows the per-pixel severity field ``S`` (``beta_max`` in [2.5, 3.5]),
``A`` is a bright, nearly grey airlight (0.7 to 0.95, slight random tint; `dim_airlight` draws the
dusk and night fog of real cameras: 0.25 to 0.7, tinted blue or sodium orange) and ``depth`` is
normalised to [0, 1] (1 = far). A depth map is used when given (larger value = farther, as in the
OneRestore scene layers); otherwise a plausible synthetic depth is built: a ground plane that
recedes from the bottom edge to a random horizon, everything above the horizon far, plus a smooth
random perturbation so that depth is not a pure function of the row.
"""
from dataclasses import dataclass

import cv2
import numpy as np

from adaqual_ros.weather.fields import unit_field


@dataclass(frozen=True)
class HazeParams:
    """
    Per-sample constants of the haze model.

    Args:
        beta_max (`float`): scattering coefficient at severity 1 (depth in [0, 1]).
        airlight (`tuple[float, float, float]`): RGB atmospheric light in [0, 1].
        horizon (`float`): horizon row as a fraction of the height (synthetic depth only).
        near (`float`): depth of the bottom edge (synthetic depth only).
    """

    beta_max: float
    airlight: tuple
    horizon: float
    near: float

    @classmethod
    def draw(cls, rng):
        level = float(rng.uniform(0.7, 0.95))
        tint = rng.uniform(-0.03, 0.03, size=3)
        airlight = tuple(float(v) for v in np.clip(level + tint, 0.0, 1.0))
        return cls(float(rng.uniform(2.5, 3.5)), airlight, float(rng.uniform(0.25, 0.6)),
                   float(rng.uniform(0.15, 0.35)))


# Tints of fog lit by something other than daylight: blue hour (dusk, before dawn) and sodium
# street lights at night (unit directions in RGB, scaled by the drawn strength).
_TINTS = {
    'neutral': (0.0, 0.0, 0.0),
    'blue': (-0.8, -0.1, 1.0),
    'sodium': (1.0, 0.35, -0.9),
}


def dim_airlight(rng):
    """
    An airlight for fog at dusk or at night: level 0.25-0.7, neutral or tinted (blue hour,
    sodium street light) by up to 0.15. Fog lit like this keeps the physics (contrast falls with
    t) but looks nothing like the bright grey veil of daytime haze; an estimator that only saw
    the latter reads dark fog as a clean frame.
    """
    level = float(rng.uniform(0.25, 0.7))
    names = tuple(_TINTS)
    tint = np.asarray(_TINTS[names[int(rng.integers(len(names)))]], dtype=np.float64)
    tint = tint * float(rng.uniform(0.03, 0.15)) + rng.uniform(-0.02, 0.02, size=3)
    return tuple(float(v) for v in np.clip(level + tint, 0.02, 1.0))


def normalise_depth(depth, height, width):
    """Resize a depth map to (height, width) and scale it to [0, 1] (1 = farthest)."""
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim == 3:
        depth = depth.mean(axis=2)
    if depth.ndim != 2:
        raise ValueError(f'depth must be a (H, W) map, got shape {depth.shape}')
    if depth.shape != (height, width):
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(depth.min()), float(depth.max())
    if hi - lo < 1e-6:
        return np.full((height, width), 0.5, dtype=np.float32)
    return (depth - lo) / (hi - lo)


def synthetic_depth(height, width, params, rng):
    """
    A ground-plane depth (height, width) float32 in [0, 1].

    Below the horizon depth falls off as the inverse distance below it (a flat ground seen by a
    level camera), above it the scene is far; a smooth field adds +-0.15 of structure.
    """
    rows = (np.arange(height, dtype=np.float32) + 0.5) / height
    below = np.maximum(rows - params.horizon, 1e-3) / max(1.0 - params.horizon, 1e-3)
    # Inverse distance: the bottom edge (below = 1) sits at depth `near`.
    column = np.clip(params.near / below, params.near, 1.0)
    depth = np.repeat(column[:, None], width, axis=1)
    depth += 0.3 * (unit_field(height, width, rng) - 0.5)
    return np.clip(depth, 0.0, 1.0, out=depth)


def haze(image, severity, params, depth):
    """
    Apply atmospheric scattering.

    Args:
        image (`np.ndarray` float32, (H, W, 3)): RGB in [0, 1].
        severity (`np.ndarray` float32, (H, W)): per-pixel severity in [0, 1].
        params (`HazeParams`): per-sample constants.
        depth (`np.ndarray` float32, (H, W)): normalised depth in [0, 1].

    Returns:
        `tuple`: the hazy image (H, W, 3) float32 in [0, 1] and the transmission t (H, W).
    """
    t = np.exp(-params.beta_max * severity * depth)
    airlight = np.asarray(params.airlight, dtype=np.float32)
    # I = J * t + A * (1 - t) = (J - A) * t + A, with one full-size temporary.
    out = image - airlight
    out *= t[..., None]
    out += airlight
    return out, t

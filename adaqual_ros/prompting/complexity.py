"""Prompt complexity: token budget C_p = C_min + round((C_max - C_min) * f(s)), s = (5 - q) / 4."""
import numpy as np

from adaqual_ros.quality.types import severity

C_MIN = 5
C_MAX = 32

# Monotone maps [0, 1] -> [0, 1]; chosen by name so the choice round-trips through a config.
CURVES = {
    'identity': lambda s: s,
    'sqrt': np.sqrt,
    'square': np.square,
    'smoothstep': lambda s: s * s * (3.0 - 2.0 * s),
}


def resolve_curve(curve):
    """Return the curve function for a name in CURVES (or a callable, returned as is)."""
    if callable(curve):
        return curve
    if curve not in CURVES:
        raise ValueError(f'unknown complexity curve {curve!r}; valid: {sorted(CURVES)}')
    return CURVES[curve]


def token_budget(scores, c_min=C_MIN, c_max=C_MAX, curve='identity'):
    """
    Token budget per region from quality scores.

    Args:
        scores (`float` or `np.ndarray`): quality in [1, 5].
        c_min (`int`, defaults to 5): budget of a pristine region.
        c_max (`int`, defaults to 32): budget of the worst region.
        curve (`str` or callable, defaults to 'identity'): monotone f on [0, 1].

    Returns:
        `np.ndarray` of int (same shape as ``scores``), or an int for a scalar input.
    """
    if not 1 <= c_min <= c_max:
        raise ValueError(f'need 1 <= c_min <= c_max, got c_min={c_min}, c_max={c_max}')
    f = resolve_curve(curve)
    s = np.clip(severity(scores), 0.0, 1.0)
    budget = c_min + np.round((c_max - c_min) * np.clip(f(s), 0.0, 1.0)).astype(np.int64)
    return int(budget) if np.ndim(budget) == 0 else budget

"""Per-cell reductions of per-pixel maps; the last row/column of cells may be partial."""
import numpy as np

from adaqual_ros.quality.types import grid_shape


def cell_mean(values, cell):
    """
    Average a per-pixel map over the cells of a grid.

    Partial cells at the bottom/right edge average only the pixels they hold.

    Args:
        values (`np.ndarray`, (H, W) or (H, W, C)): per-pixel values.
        cell (`int`): cell size in pixels.

    Returns:
        `np.ndarray` float32, (grid_h, grid_w) or (grid_h, grid_w, C).
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim not in (2, 3):
        raise ValueError(f'cell_mean needs an (H, W) or (H, W, C) array, got {values.shape}')
    h, w = values.shape[:2]
    gh, gw = grid_shape(h, w, cell)
    ph, pw = gh * cell - h, gw * cell - w
    pad = ((0, ph), (0, pw)) + ((0, 0),) * (values.ndim - 2)
    total = np.pad(values, pad).reshape(gh, cell, gw, cell, *values.shape[2:]).sum(axis=(1, 3))
    counts = np.pad(np.ones((h, w), np.float32), pad[:2]).reshape(gh, cell, gw, cell)
    counts = counts.sum(axis=(1, 3))
    if values.ndim == 3:
        counts = counts[..., None]
    return (total / counts).astype(np.float32)


def check_frame(frame):
    """Validate an HxWx3 uint8 RGB frame and return it as a contiguous array."""
    if not isinstance(frame, np.ndarray):
        raise TypeError(f'frame must be a numpy array, got {type(frame).__name__}')
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f'frame must be HxWx3 RGB, got shape {frame.shape}')
    if frame.dtype != np.uint8:
        raise ValueError(f'frame must be uint8, got {frame.dtype}')
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f'frame is empty: {frame.shape}')
    return np.ascontiguousarray(frame)

"""
Smooth random severity fields: a per-pixel severity in [0, 1] that varies slowly over the frame.

A field is a few random control values on a coarse grid (2 to 4 nodes per side) upsampled with
bicubic interpolation, so one corner of a frame can be clear while another is dense. The field is
used multiplicatively around the requested mean severity ``s``:
``S(x) = clip(s * (1 + a * (2 * f(x) - 1)), 0, 1)`` with ``f`` in [0, 1] and amplitude ``a`` in
[0, 1]. With the same random draws, a higher ``s`` gives a higher severity at every pixel, which
is what makes severity sweeps monotone.
"""
import cv2
import numpy as np


def unit_field(height, width, rng, nodes=None):
    """
    Return a smooth random field (height, width) float32 in [0, 1].

    Args:
        height (`int`), width (`int`): output size in pixels.
        rng (`np.random.Generator`): source of randomness.
        nodes (`tuple[int, int]`, *optional*): control grid (rows, cols); random 2..4 per side
            when None.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f'unit_field needs a positive size, got {height}x{width}')
    if nodes is None:
        ny, nx = (int(v) for v in rng.integers(2, 5, size=2))
    else:
        ny, nx = nodes
    grid = rng.random((ny, nx)).astype(np.float32)
    # Stretch to the full [0, 1] range so the amplitude means the same thing for every draw.
    lo, hi = float(grid.min()), float(grid.max())
    grid = (grid - lo) / (hi - lo) if hi - lo > 1e-6 else np.full_like(grid, 0.5)
    # Upsample in two steps: bicubic to a small image (smooth, cheap), then bilinear to full size.
    small = cv2.resize(grid, (min(width, 32), min(height, 32)), interpolation=cv2.INTER_CUBIC)
    field = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(field, 0.0, 1.0, out=field)


def severity_field(height, width, mean, rng, variation=None):
    """
    Return a per-pixel severity (height, width) float32 in [0, 1] around ``mean``.

    Args:
        mean (`float`): mean severity in [0, 1] (0 gives an all-zero field).
        rng (`np.random.Generator`): source of randomness; the draws do not depend on ``mean``.
        variation (`float`, *optional*): amplitude ``a`` in [0, 1] of the spatial variation
            (0 = uniform); random in [0.2, 1.0] when None.
    """
    mean = float(mean)
    if not 0.0 <= mean <= 1.0:
        raise ValueError(f'severity must be in [0, 1], got {mean}')
    drawn = float(rng.uniform(0.2, 1.0))
    amplitude = drawn if variation is None else float(variation)
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError(f'variation must be in [0, 1], got {amplitude}')
    f = unit_field(height, width, rng)
    field = mean * (1.0 + amplitude * (2.0 * f - 1.0))
    return np.clip(field, 0.0, 1.0, out=field).astype(np.float32, copy=False)


def cell_means(field, cell):
    """
    Mean of a (H, W[, C]) array over each cell x cell region -> (gh, gw[, C]) float32.

    The last row/column of cells may be partial (they average the pixels they cover).
    """
    field = np.asarray(field, dtype=np.float32)
    if cell <= 0:
        raise ValueError(f'cell must be positive, got {cell}')
    h, w = field.shape[:2]
    rows = np.arange(0, h, cell)
    cols = np.arange(0, w, cell)
    sums = np.add.reduceat(np.add.reduceat(field, rows, axis=0), cols, axis=1)
    counts_h = np.diff(np.append(rows, h)).astype(np.float32)
    counts_w = np.diff(np.append(cols, w)).astype(np.float32)
    counts = np.outer(counts_h, counts_w)
    if sums.ndim == 3:
        counts = counts[..., None]
    return (sums / counts).astype(np.float32)

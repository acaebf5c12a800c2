"""
Cell-aligned windows over the degraded part of a frame, batched, and blended without seams.

The frame is cut into a grid of core tiles (``tile_size`` pixels, a multiple of the quality cell).
A tile with no degraded cell is never run. Within the remaining tiles, each group of touching
degraded cells becomes a core, its bounding box; with ``merge`` neighbouring cores join when their
common bounding box adds little area, or takes no more pixels than the separate windows with the
overlap margins that keeping them apart adds (one window for a fully degraded frame: no seams, no
overlap work; scattered degraded cells stay small windows).
Where two windows touch, each grows by ``overlap`` pixels into the other, and linear feather
weights blend the overlap. Window origins stay multiples of the cell so ``QualityMap.crop`` is
exact.

The skip blend is separate: ``skip_alpha`` is 0 on clean cells (they stay bit-identical) and
ramps from 0 to 1 inside degraded cells over ``ramp`` pixels from the nearest clean cell.
"""
from dataclasses import dataclass
import functools
import math

import cv2
import numpy as np


@dataclass(frozen=True)
class Window:
    """
    One rectangle of the frame run through the restorer.

    Args:
        y0, x0, h, w (`int`): the window in pixels (origin a multiple of the cell).
        core (`tuple[int, int, int, int]`): (y0, x0, h, w) of the part this window owns; outside
            it the window only lends context and feathers into its neighbours.
        margins (`tuple[int, int, int, int]`): pixels grown (top, bottom, left, right).
    """

    y0: int
    x0: int
    h: int
    w: int
    core: tuple
    margins: tuple

    @property
    def slices(self):
        return slice(self.y0, self.y0 + self.h), slice(self.x0, self.x0 + self.w)

    @property
    def area(self):
        return self.h * self.w


def _check(cell, tile_size, overlap):
    if cell <= 0:
        raise ValueError(f'cell must be positive, got {cell}')
    if tile_size < cell or tile_size % cell:
        raise ValueError(f'tile_size {tile_size} must be a positive multiple of the cell {cell}')
    if overlap < 0:
        raise ValueError(f'overlap must be >= 0, got {overlap}')


def plan_windows(degraded, image_size, cell, tile_size=256, overlap=64, merge=True, bucket=0):
    """
    Windows that cover every degraded cell, and nothing that is not needed.

    Args:
        degraded (`np.ndarray` bool, (grid_h, grid_w)): cells to restore.
        image_size (`tuple[int, int]`): (H, W) of the frame.
        cell (`int`): quality-map cell size in pixels.
        tile_size (`int`): core tile edge in pixels (multiple of ``cell``); 0 = one tile, the
            whole frame (one window over all its degraded cells).
        overlap (`int`): pixels a window grows into each touching window (rounded up to cells).
        merge (`bool`): join neighbouring windows when their common bounding box holds little
            extra area (see MERGE_SLACK) or no more than they take apart with their margins.
        bucket (`int`): grow each window (cores unchanged) to a multiple of this many pixels,
            or to the frame's edge, so window shapes repeat from frame to frame (a GPU sets up
            its convolutions once per shape); 0 = off.

    Returns:
        `list[Window]`, empty when no cell is degraded.
    """
    degraded = np.asarray(degraded, dtype=bool)
    height, width = (int(v) for v in image_size)
    gh, gw = math.ceil(height / cell), math.ceil(width / cell)
    if degraded.shape != (gh, gw):
        raise ValueError(f'degraded mask {degraded.shape} does not match grid {(gh, gw)} of '
                         f'{(height, width)} with cell {cell}')
    whole_frame = tile_size == 0
    if whole_frame:
        tile_size = max(gh, gw) * cell
    _check(cell, tile_size, overlap)
    if not degraded.any():
        return []
    tc = tile_size // cell
    # 1. Cores per active tile (in cells: r0, r1, c0, c1): the bounding box of each group of
    # touching degraded cells in it, so a few stray cells beside a degraded region do not pull
    # the clean cells between them into the window. Whole-frame planning keeps one box: there
    # (a GPU) one window beats several smaller ones (settings.CPU_TILE).
    shrunk = []
    for r0 in range(0, gh, tc):
        for c0 in range(0, gw, tc):
            block = degraded[r0:r0 + tc, c0:c0 + tc]
            if block.any():
                shrunk.extend((r0 + a, r0 + b, c0 + c, c0 + d)
                              for a, b, c, d in _cell_groups(block, split=not whole_frame))
    # 2. Join cores whose common bounding box wastes little, or takes no more than the cores
    # with the margins they would grow apart: fewer seams, no overlap work, and a fully
    # degraded frame becomes one window.
    ov = math.ceil(overlap / cell)
    if merge and len(shrunk) > 1:
        shrunk = _merge_rects(shrunk, ov, (gh, gw))
    # 3. Grow into touching windows so their seam can be feathered.
    windows = []
    for k, rect in enumerate(shrunk):
        r0, r1, c0, c1 = rect
        wr0, wr1, wc0, wc1 = _grown(rect, shrunk[:k] + shrunk[k + 1:], ov, (gh, gw))
        core_y0, core_x0 = r0 * cell, c0 * cell
        core_h, core_w = min(r1 * cell, height) - core_y0, min(c1 * cell, width) - core_x0
        y0, x0 = wr0 * cell, wc0 * cell
        h, w = min(wr1 * cell, height) - y0, min(wc1 * cell, width) - x0
        if bucket:
            y0, h = _bucketed(y0, h, height, bucket, cell)
            x0, w = _bucketed(x0, w, width, bucket, cell)
        margins = (core_y0 - y0, y0 + h - core_y0 - core_h,
                   core_x0 - x0, x0 + w - core_x0 - core_w)
        windows.append(Window(int(y0), int(x0), int(h), int(w),
                              tuple(int(v) for v in (core_y0, core_x0, core_h, core_w)),
                              tuple(int(v) for v in margins)))
    return windows


def _bucketed(start, size, limit, bucket, cell):
    """(start, size) grown to a multiple of ``bucket`` (or to ``limit``), the start kept on the
    cell grid; a span cut by the frame's end ends there, so its size still repeats."""
    target = min(limit, -(-size // bucket) * bucket)
    if start + target <= limit:
        return start, target
    start = max(0, (limit - target) // cell * cell)
    return start, limit - start


def _cell_groups(block, split=True):
    """
    Bounding boxes (r0, r1, c0, c1) of the groups of touching (8-neighbour) degraded cells of a
    block; boxes that overlap are joined, so the cores stay disjoint. ``split=False``: one box.
    """
    if not split:
        rows = np.flatnonzero(block.any(axis=1))
        cols = np.flatnonzero(block.any(axis=0))
        return [(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)]
    count, _, stats, _ = cv2.connectedComponentsWithStats(block.astype(np.uint8), connectivity=8)
    boxes = [(int(y), int(y + h), int(x), int(x + w))
             for x, y, w, h in stats[1:count, :4]]  # label 0 is the clean background
    joined = True
    while joined:
        joined = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if _intersects(boxes[i], boxes[j]):
                    boxes[i] = _union(boxes[i], boxes.pop(j))
                    joined = True
                    break
            if joined:
                break
    return boxes


# A merged window may hold this much more clean area, as a share of the cores it joins to the
# largest one (clean cells run through the network); in exchange it saves overlap margins and a
# seam.
MERGE_SLACK = 0.25


def _area(r):
    return (r[1] - r[0]) * (r[3] - r[2])


def _union(a, b):
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


def _intersects(a, b):
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _near(a, b):
    """Touching or diagonal neighbours (no cell between them)."""
    return a[0] <= b[1] and b[0] <= a[1] and a[2] <= b[3] and b[2] <= a[3]


def _grown(r, others, ov, grid):
    """The window (r0, r1, c0, c1) of core ``r``: ``ov`` cells more on each side that touches one
    of ``others`` (the row or column just outside it meets one), clipped to the ``grid``."""
    r0, r1, c0, c1 = r
    if not ov:
        return r
    rows = [b for b in others if b[0] < r1 and r0 < b[1]]  # beside it, left or right
    cols = [b for b in others if b[2] < c1 and c0 < b[3]]  # above or below it
    top = ov if any(b[0] < r0 <= b[1] for b in cols) else 0
    bottom = ov if any(b[0] <= r1 < b[1] for b in cols) else 0
    left = ov if any(b[2] < c0 <= b[3] for b in rows) else 0
    right = ov if any(b[2] <= c1 < b[3] for b in rows) else 0
    return max(0, r0 - top), min(grid[0], r1 + bottom), max(0, c0 - left), min(grid[1], c1 + right)


def _grown_area(r, others, ov, grid):
    """Cells the window of core ``r`` takes (see _grown)."""
    return _area(_grown(r, others, ov, grid))


def _merge_rects(rects, ov, grid):
    """
    Greedily join neighbouring rectangles while their bounding box wastes <= MERGE_SLACK, or
    while the joined window takes no more cells than the separate ones with the overlap margins
    (``ov`` cells, windows clipped to ``grid``) that keeping them apart adds.
    """
    rects = list(rects)
    merged = True
    while merged and len(rects) > 1:
        merged = False
        for i in range(len(rects)):
            for j in range(i + 1, len(rects)):
                if not _near(rects[i], rects[j]):
                    continue
                box, members = _union(rects[i], rects[j]), {i, j}
                grown = True
                while grown:  # the box must swallow whatever it overlaps: cores stay disjoint
                    grown = False
                    for k, r in enumerate(rects):
                        if k not in members and _intersects(box, r):
                            box, grown = _union(box, r), True
                            members.add(k)
                # The slack is measured against all but the largest member: a big window may
                # take in a small neighbour, but not a wide clean strip on its way to it.
                areas = sorted(_area(rects[k]) for k in members)
                join = _area(box) - sum(areas) <= MERGE_SLACK * sum(areas[:-1])
                if not join and ov:
                    rest = [r for k, r in enumerate(rects) if k not in members]
                    apart = sum(_grown_area(rects[k], rest + [rects[m] for m in members if m != k],
                                            ov, grid) for k in members)
                    join = _grown_area(box, rest, ov, grid) <= apart
                if join:
                    rects = [r for k, r in enumerate(rects) if k not in members] + [box]
                    merged = True
                    break
            if merged:
                break
    return rects


def _ramp(n, lo, hi):
    """1-D weights of length n with margins lo (start) and hi (end) faded out."""
    weights = np.ones(n, dtype=np.float32)
    for m, flip in ((lo, False), (hi, True)):
        if not m:
            continue
        # The outer quarter of a margin gets weight 0: a network's border effects live there,
        # and the touching window's core covers those pixels anyway. Then a linear ramp to 1.
        skip = m // 4
        rise = max(1, m - 2 * skip)
        ramp = np.clip((np.arange(m, dtype=np.float32) - skip + 1.0) / (rise + 1.0), 0.0, 1.0)
        if flip:
            weights[n - m:] = np.minimum(weights[n - m:], ramp[::-1])
        else:
            weights[:m] = np.minimum(weights[:m], ramp)
    return weights


def feather_weights(window):
    """(h, w) float32 weights: 1 on the core, fading to 0 towards the outer margin edges."""
    top, bottom, left, right = window.margins
    return np.outer(_ramp(window.h, top, bottom), _ramp(window.w, left, right))


def run_windows(image, windows, fn, batch_size=4):
    """
    Run ``fn`` over the windows of an image, batching windows of equal shape, and blend.

    Args:
        image (`np.ndarray` float32, (H, W, C)): the frame.
        windows (`list[Window]`): from ``plan_windows``.
        fn (`callable`): ``fn(windows, batch)`` with ``batch`` (B, h, w, C) float32, returning an
            array of the same shape.
        batch_size (`int`): most windows per call.

    Returns:
        `np.ndarray` float32 (H, W, C): blended results inside the windows, the input elsewhere.
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    out = image.astype(np.float32, copy=True)
    if not windows:
        return out
    if len(windows) == 1:
        win = windows[0]
        ys, xs = win.slices
        result = np.asarray(fn([win], image[ys, xs][None]), dtype=np.float32)
        _check_result(result, (1,) + image[ys, xs].shape)
        out[ys, xs] = result[0]
        return out
    acc = np.zeros(image.shape[:2] + (image.shape[2],), dtype=np.float32)
    weight_sum = np.zeros(image.shape[:2], dtype=np.float32)
    groups = {}
    for win in windows:
        groups.setdefault((win.h, win.w), []).append(win)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            batch = np.stack([image[w.slices] for w in chunk])
            result = np.asarray(fn(chunk, batch), dtype=np.float32)
            _check_result(result, batch.shape)
            for win, restored in zip(chunk, result):
                ys, xs = win.slices
                weights = feather_weights(win)
                acc[ys, xs] += restored * weights[..., None]
                weight_sum[ys, xs] += weights
    covered = weight_sum > 0
    out[covered] = acc[covered] / weight_sum[covered][:, None]
    return out


def _check_result(result, shape):
    if result.shape != tuple(shape):
        raise ValueError(f'window function returned shape {result.shape}, expected {shape}')


def skip_alpha(degraded, image_size, cell, ramp=16, region=None):
    """
    Per-pixel blend weight of the restored frame: 0 on clean cells, 1 deep inside degraded cells.

    Args:
        degraded (`np.ndarray` bool, (grid_h, grid_w)): degraded cells.
        image_size (`tuple[int, int]`): (H, W).
        cell (`int`): cell size in pixels.
        ramp (`int`): width in pixels of the 0 -> 1 ramp inside degraded cells next to clean ones.
        region (`tuple[int, int, int, int]`, *optional*): (y0, x0, y1, x1) to compute only that
            part of the frame.

    Returns:
        `np.ndarray` float32 of the region's (h, w), read-only, or None when it is 1 everywhere
        there.
    """
    height, width = image_size
    region = tuple(int(v) for v in region) if region is not None else (0, 0, height, width)
    degraded = np.asarray(degraded, dtype=bool)
    # A stream's quality map is reused over nearby frames, and with it this pattern: cached
    # (the distance transform and the per-pixel mask cost ~10 ms a 1280x720 frame on 2 cores).
    return _skip_alpha(degraded.tobytes(), degraded.shape, (int(height), int(width)), int(cell),
                       max(0, int(ramp)), region)


@functools.lru_cache(maxsize=4)
def _skip_alpha(degraded_bytes, grid_shape, image_size, cell, ramp, region):
    degraded = np.frombuffer(degraded_bytes, dtype=np.uint8).reshape(grid_shape)
    height, width = image_size
    y0, x0, y1, x1 = region
    # Clean pixels up to `ramp` outside the region still shape the ramp inside it.
    pad = ramp
    py0, px0 = max(0, y0 - pad), max(0, x0 - pad)
    py1, px1 = min(height, y1 + pad), min(width, x1 + pad)
    rows = np.arange(py0, py1) // cell
    cols = np.arange(px0, px1) // cell
    mask = degraded.take(rows, axis=0).take(cols, axis=1)
    if mask.all():
        return None
    if pad == 0:
        alpha = mask.astype(np.float32)
    else:
        # Distance of each degraded pixel to the nearest clean pixel.
        dist = cv2.distanceTransform(np.ascontiguousarray(mask), cv2.DIST_L2, 3)
        alpha = np.minimum(dist * (1.0 / float(ramp)), 1.0)
    oy, ox = y0 - py0, x0 - px0
    alpha = np.ascontiguousarray(alpha[oy:oy + (y1 - y0), ox:ox + (x1 - x0)])
    alpha.flags.writeable = False  # shared by the frames that hit the cache
    return alpha

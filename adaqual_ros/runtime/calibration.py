"""
Per-camera `skip_threshold` from a clean recording of that camera.

The learned estimator reads a few cells of some clean scenes just below the default threshold
(clean people.mp4 frames at 1280x720: most of them have one such cell; docs/RESULTS.md, "Clean
frames of a whole clip"), and each such frame runs the network on those cells. A clean clip from
the robot's own camera says where its clean frames read: the highest threshold at which a chosen
share of them pass through untouched. The skip decision is the restorer's own
(`degraded_cells`: the cell scores, `quality_context`'s local read, `whole_frame_share`); the
whole-frame hysteresis between frames is left out.
"""
import numpy as np

from adaqual_ros.runtime.restorer import degraded_cells
from adaqual_ros.runtime.settings import MIN_SKIP_THRESHOLD

STEP = 0.01  # threshold grid: the estimator's scores are not meaningful finer than this


def _degraded(qmap, threshold, settings):
    return degraded_cells(qmap.scores, threshold, settings.skip_margin,
                          settings.whole_frame_share, qmap.skip_scores)


def frame_passes(qmap, threshold, settings):
    """Whether a frame with this QualityMap passes through untouched at ``threshold``."""
    return not _degraded(qmap, threshold, settings).any()


def restored_share(qmaps, threshold, settings):
    """Mean share of the frames' cells restored at ``threshold``."""
    return float(np.mean([_degraded(q, threshold, settings).mean() for q in qmaps]))


def pass_share(qmaps, threshold, settings):
    """Share of the frames that pass through untouched at ``threshold``."""
    if not qmaps:
        raise ValueError('no quality maps to calibrate on')
    return float(np.mean([frame_passes(q, threshold, settings) for q in qmaps]))


def worst_cell(qmap):
    """The lowest score the skip decision reads in a frame (local reads where the map has them)."""
    scores = qmap.skip_scores if qmap.skip_scores is not None else qmap.scores
    return float(np.min(scores))


def pass_threshold(qmaps, settings, pass_rate=0.95):
    """
    The highest threshold on a STEP grid, at most ``settings.skip_threshold``, at which at least
    ``pass_rate`` of the frames pass through untouched.

    Returns:
        `tuple[float | None, float]`: (threshold, its pass share); threshold None when even
        MIN_SKIP_THRESHOLD does not pass that many (the clip is not clean to this estimator).
    """
    if not 0.0 < pass_rate <= 1.0:
        raise ValueError(f'pass_rate must be in (0, 1], got {pass_rate}')

    shares = {}

    def share_at(step):  # each grid step's share is computed once
        if step not in shares:
            shares[step] = pass_share(qmaps, round(step * STEP, 2), settings)
        return shares[step]

    # A frame that passes at one threshold passes at every lower one, so the share falls as the
    # threshold rises: bisect the grid for the highest step whose share is high enough.
    low = int(round(MIN_SKIP_THRESHOLD / STEP))
    high = int(np.floor(settings.skip_threshold / STEP + 1e-6))
    share = share_at(low)
    if share < pass_rate:
        return None, share
    while low < high:
        mid = (low + high + 1) // 2
        if share_at(mid) >= pass_rate:
            low = mid
        else:
            high = mid - 1
    return round(low * STEP, 2), share_at(low)


def pass_curve(qmaps, settings, thresholds):
    """[{'skip_threshold', 'pass_share'}] for each of ``thresholds``."""
    return [{'skip_threshold': float(t), 'pass_share': pass_share(qmaps, t, settings)}
            for t in thresholds]

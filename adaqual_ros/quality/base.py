"""The estimator interface: any backend turns an RGB frame into a QualityMap."""
import numpy as np

from adaqual_ros.quality.grid import check_frame
from adaqual_ros.quality.types import (
    DEGRADATION_TYPES,
    SCORE_MAX,
    SCORE_MIN,
    QualityMap,
    grid_shape,
)


def check_cell(cell, multiple_of=1):
    """Validate a cell size (pixels) and return it as int."""
    if isinstance(cell, bool) or not isinstance(cell, (int, np.integer)) or cell <= 0:
        raise ValueError(f'cell must be a positive integer, got {cell!r}')
    if cell % multiple_of:
        raise ValueError(f'cell {cell} must be a multiple of {multiple_of} for this estimator')
    return int(cell)


class QualityEstimatorMixin:
    """
    Shared `estimate` / `estimate_batch` of the quality estimators.

    A backend sets ``self.cell`` and implements ``_estimate_grids(frames)``, which receives a list
    of validated HxWx3 uint8 RGB frames and returns, per frame, ``(scores, type_probs)`` shaped
    ``(grid_h, grid_w)`` and ``(grid_h, grid_w, 4)`` (and optionally a third, the map's
    ``skip_scores``). This mixin validates input, clips the result
    to the valid ranges and wraps it in a `QualityMap`.
    """

    name = 'base'

    def estimate(self, frame):
        """
        Estimate the regional quality of one frame.

        Args:
            frame (`np.ndarray`, HxWx3 uint8 RGB): the frame; any size.

        Returns:
            `QualityMap` with scores in [1, 5] (5 = pristine) and type probabilities in [0, 1].
        """
        return self.estimate_batch([frame])[0]

    def estimate_batch(self, frames):
        """Estimate several frames (any sizes); returns a list of `QualityMap`."""
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            frames = list(frames)
        frames = [check_frame(f) for f in frames]
        if not frames:
            return []
        grids = self._estimate_grids(frames)
        maps = []
        for frame, (scores, probs, *skip) in zip(frames, grids):
            h, w = frame.shape[:2]
            expected = grid_shape(h, w, self.cell)
            scores = np.clip(np.asarray(scores, np.float32), SCORE_MIN, SCORE_MAX)
            probs = np.clip(np.asarray(probs, np.float32), 0.0, 1.0)
            skip = skip[0] if skip else None
            if skip is not None:
                skip = np.clip(np.asarray(skip, np.float32), SCORE_MIN, SCORE_MAX)
            if scores.shape != expected or probs.shape != expected + (len(DEGRADATION_TYPES),) \
                    or (skip is not None and skip.shape != expected):
                raise RuntimeError(
                    f'{self.name} estimator returned {scores.shape}/{probs.shape} for a frame '
                    f'of {h}x{w} with cell {self.cell}; expected {expected}')
            maps.append(QualityMap(scores, probs, self.cell, (h, w), skip))
        return maps

    def _estimate_grids(self, frames):
        raise NotImplementedError

"""The QualityMap: a grid of regional quality scores shared by estimators, prompts and runtime."""
from dataclasses import dataclass
import math

import numpy as np

# Order of the per-region degradation-type probabilities everywhere in the package.
DEGRADATION_TYPES = ('low_light', 'haze', 'rain', 'snow')
SCORE_MIN = 1.0
SCORE_MAX = 5.0


def grid_shape(height, width, cell):
    """Return (grid_h, grid_w): cells cover the frame, the last row/column may be partial."""
    if height <= 0 or width <= 0 or cell <= 0:
        raise ValueError(f'grid_shape needs positive sizes, got {height}x{width}, cell {cell}')
    return math.ceil(height / cell), math.ceil(width / cell)


def severity(scores):
    """Severity s = (5 - q) / 4 in [0, 1] (0 = pristine)."""
    return (SCORE_MAX - np.asarray(scores, dtype=np.float32)) / (SCORE_MAX - SCORE_MIN)


@dataclass
class QualityMap:
    """
    Regional quality of one frame.

    Args:
        scores (`np.ndarray` float32, (grid_h, grid_w)): quality in [1, 5], 5 = pristine.
        type_probs (`np.ndarray` float32, (grid_h, grid_w, 4)): probability of each type in
            DEGRADATION_TYPES per region.
        cell (`int`): cell size in pixels.
        image_size (`tuple[int, int]`): (height, width) of the frame the map describes.
        skip_scores (`np.ndarray` float32, (grid_h, grid_w), *optional*): the scores that decide
            which cells of a frame not restored whole pass through, where the estimator also
            read each cell in its own neighbourhood (the learned estimator's `context_window`);
            None = ``scores``. ``scores`` still condition the model and decide whole frames.
    """

    scores: np.ndarray
    type_probs: np.ndarray
    cell: int
    image_size: tuple
    skip_scores: np.ndarray = None

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.type_probs = np.asarray(self.type_probs, dtype=np.float32)
        expected = grid_shape(self.image_size[0], self.image_size[1], self.cell)
        if self.scores.shape != expected:
            raise ValueError(
                f'scores shape {self.scores.shape} does not match {expected} for image '
                f'{self.image_size} and cell {self.cell}')
        if self.type_probs.shape != expected + (len(DEGRADATION_TYPES),):
            raise ValueError(
                f'type_probs shape {self.type_probs.shape} does not match '
                f'{expected + (len(DEGRADATION_TYPES),)}')
        if self.skip_scores is not None:
            self.skip_scores = np.asarray(self.skip_scores, dtype=np.float32)
            if self.skip_scores.shape != expected:
                raise ValueError(f'skip_scores shape {self.skip_scores.shape} does not match '
                                 f'{expected}')

    @property
    def grid_size(self):
        return self.scores.shape

    @property
    def severity(self):
        return severity(self.scores)

    def per_pixel(self, values=None):
        """Expand a per-cell array (default: scores) to a per-pixel (H, W, ...) array."""
        values = self.scores if values is None else np.asarray(values)
        h, w = self.image_size
        full = np.repeat(np.repeat(values, self.cell, axis=0), self.cell, axis=1)
        return full[:h, :w]

    def crop(self, y0, x0, h, w):
        """Map of a cell-aligned window (y0, x0 multiples of cell) of the frame."""
        if y0 % self.cell or x0 % self.cell:
            raise ValueError(f'crop origin ({y0}, {x0}) is not a multiple of cell {self.cell}')
        gy, gx = y0 // self.cell, x0 // self.cell
        gh, gw = grid_shape(h, w, self.cell)
        skip = None if self.skip_scores is None else \
            self.skip_scores[gy:gy + gh, gx:gx + gw].copy()
        return QualityMap(self.scores[gy:gy + gh, gx:gx + gw].copy(),
                          self.type_probs[gy:gy + gh, gx:gx + gw].copy(), self.cell, (h, w), skip)

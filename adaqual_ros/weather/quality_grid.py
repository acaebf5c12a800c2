"""
Ground-truth regional quality, derived from the degradation fields by an SSIM model.

Mapping (per cell of ``cell`` x ``cell`` pixels; documented here because estimators, prompts and
evaluations all read it):

1. The synthesis is a chain of steps in physical order (haze, rain or snow, low light). Each step
   is described by the fields that drove it, never by the final degraded pixels: haze by its
   transmission ``t`` (from the severity field and depth) and airlight ``A``; rain and snow by
   their opacity layer ``a`` towards white ``w`` (snow also by its veil ``v``); low light by its
   exposure field ``e``, gamma and noise variance ``S^2 (a y + b^2)``.
2. Through the chain we carry 7x7-window moments (as skimage's SSIM) of the frame: mean ``mu``,
   variance ``var`` and covariance ``cov`` with the clean grey image, starting from the clean
   image's own moments. Affine steps update them in closed form:

   - haze ``y = t p + (1 - t) A``: ``mu' = t mu + (1 - t) A``, ``var' = t^2 var``,
     ``cov' = t cov``;
   - veil ``y = (1 - v) p + v L``: the same with ``t = 1 - v`` and ``A = L``;
   - overlay ``y = p + a (w - p)``, ``a`` independent of the scene with window moments
     ``mu_a``, ``var_a``: ``mu' = mu + mu_a (w - mu)``,
     ``var' = var (var_a + (1 - mu_a)^2) + var_a (w - mu)^2``, ``cov' = (1 - mu_a) cov``.

   Low light is not affine (gamma), so its step uses the noise-free frame it acts on, ``p``
   (itself a function of the fields above): ``y = e p^gamma + n``, window moments of
   ``e p^gamma`` plus the window mean of the noise variance.
3. The predicted SSIM of a window is
   ``(2 mu_x mu + C1)(2 cov + C2) / ((mu_x^2 + mu^2 + C1)(var_x + var + C2))`` with
   C1 = 0.01^2, C2 = 0.03^2 (data range 1). Quality ``q = 1 + 4 * SSIM_pred`` (cell mean after
   the last step), clipped to [1, 5], 5 = pristine as in `QualityMap`.
4. Per-type strengths ``types[..., k]`` in [0, 1] start from each step's own damage ``d_k``: one
   minus the SSIM predicted between the frame before and after that step. They are then scaled
   in log-survival space, ``t_k = 1 - (1 - d_k)^r`` with one ratio ``r`` per cell, so that they
   combine exactly into the quality: ``q = 5 - 4 (1 - prod_k (1 - t_k))``. The ranking of the
   types within a cell and the quality are unchanged by this; for one type ``t = 1 - SSIM``.

So quality follows the severity fields and also what a viewer sees: haze over a bright flat sky or
a streak over dense texture costs little, the same haze over dark texture costs a lot.
test_weather.py checks the grid's ranking (and scale) against measured regional SSIM on a BSDS500
*val* image.
"""
from dataclasses import dataclass

import cv2
import numpy as np

from adaqual_ros.quality.types import DEGRADATION_TYPES, SCORE_MAX, SCORE_MIN

# SSIM statistics use 7x7 windows (as skimage) evaluated on every STRIDE-th pixel of each axis:
# the cell mean of a smooth map barely changes and the arithmetic costs a quarter.
WINDOW = (7, 7)
STRIDE = 2
C1, C2 = 0.01 ** 2, 0.03 ** 2


def grey_of(rgb):
    """Grey level in [0, 1] (float32 (H, W)) of a uint8 or float [0, 1] RGB image."""
    if rgb.dtype == np.uint8:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1.0 / 255.0)
    return cv2.cvtColor(rgb.astype(np.float32, copy=False), cv2.COLOR_RGB2GRAY)


def ssim_terms(mu_x, var_x, mu_y, var_y, cov_xy):
    """SSIM from window moments (arrays of equal shape)."""
    return ((2.0 * mu_x * mu_y + C1) * (2.0 * cov_xy + C2)
            / ((mu_x * mu_x + mu_y * mu_y + C1) * (var_x + var_y + C2)))


class _Windows:
    """Window means of full-resolution maps, sampled on a strided grid, and their cell means."""

    def __init__(self, height, width, cell):
        self.stride = STRIDE if cell >= 4 * STRIDE else 1
        self.cell = cell
        self.size = (height, width)

    def mean(self, x):
        if np.isscalar(x):
            return x
        s = self.stride
        return cv2.blur(x, WINDOW)[::s, ::s]

    def moments(self, x):
        """Window mean and variance of ``x``."""
        mu = self.mean(x)
        return mu, np.maximum(self.mean(x * x) - mu * mu, 0.0)

    def cell_mean(self, values):
        """Cell means (gh, gw) of a strided map."""
        s = self.stride
        h, w = self.size
        rows = -(-np.arange(0, h, self.cell) // s)
        cols = -(-np.arange(0, w, self.cell) // s)
        sums = np.add.reduceat(np.add.reduceat(values, rows, axis=0), cols, axis=1)
        counts = np.outer(np.diff(np.append(rows, values.shape[0])),
                          np.diff(np.append(cols, values.shape[1])))
        return (sums / counts).astype(np.float32)


@dataclass
class _Moments:
    mu: np.ndarray
    var: np.ndarray
    cov: np.ndarray  # covariance with the clean grey image


def _affine(m, gain, offset):
    """Moments after ``y = gain * p + offset`` (gain, offset constant over a window)."""
    return _Moments(gain * m.mu + offset, gain * gain * m.var, gain * m.cov)


def _overlay(win, m, alpha, white):
    mu_a, var_a = win.moments(alpha)
    keep = 1.0 - mu_a
    mu = m.mu + mu_a * (white - m.mu)
    var = m.var * (var_a + keep * keep) + var_a * (white - m.mu) ** 2
    return _Moments(mu, var, keep * m.cov), keep


class QualityChain:
    """
    Predicted SSIM of a synthesis chain, step by step (see the module docstring).

    Args:
        clean_rgb (`np.ndarray` uint8, (H, W, 3)): the clean frame.
        cell (`int`): region size in pixels.
    """

    def __init__(self, clean_rgb, cell):
        if int(cell) <= 0:
            raise ValueError(f'cell must be positive, got {cell}')
        self.grey = grey_of(clean_rgb)
        h, w = self.grey.shape
        self.win = _Windows(h, w, int(cell))
        self.mu_x, self.var_x = self.win.moments(self.grey)
        self.state = _Moments(self.mu_x, self.var_x, self.var_x)
        self.grid = (-(-h // int(cell)), -(-w // int(cell)))
        self.types = np.zeros(self.grid + (len(DEGRADATION_TYPES),), dtype=np.float32)

    def _record(self, kind, before, after, cov_step):
        ssim = ssim_terms(before.mu, before.var, after.mu, after.var, cov_step)
        damage = np.clip(1.0 - self.win.cell_mean(ssim), 0.0, 1.0)
        self.types[..., DEGRADATION_TYPES.index(kind)] = damage
        self.state = after

    def haze(self, transmission, airlight):
        t = self.win.mean(transmission)
        before = self.state
        after = _affine(before, t, (1.0 - t) * float(airlight))
        self._record('haze', before, after, t * before.var)

    def overlay(self, kind, alpha, white, veil=None, veil_level=0.85):
        """Rain (``veil`` None) or snow: an opacity layer towards ``white`` after a veil."""
        before = self.state
        m, gain = before, 1.0
        if veil is not None:
            keep_v = 1.0 - self.win.mean(veil)
            m = _affine(m, keep_v, (1.0 - keep_v) * veil_level)
            gain = keep_v
        after, keep = _overlay(self.win, m, alpha, white)
        self._record(kind, before, after, keep * gain * before.var)

    def low_light(self, scene, exposure, gamma, noise_var):
        """``scene``: noise-free grey (H, W) frame that low light acts on."""
        dark = exposure * cv2.pow(np.maximum(scene, 0.0), float(gamma))
        mu_p, var_p = self.win.moments(scene)
        mu_y, var_y = self.win.moments(dark)
        var_y = var_y + self.win.mean(noise_var)
        cov_clean = self.win.mean(self.grey * dark) - self.mu_x * mu_y
        cov_step = self.win.mean(scene * dark) - mu_p * mu_y
        before = _Moments(mu_p, var_p, self.state.cov)
        self._record('low_light', before, _Moments(mu_y, var_y, cov_clean), cov_step)

    def quality(self):
        """Quality grid (gh, gw) float32 in [1, 5] after the steps so far."""
        s = self.state
        ssim = self.win.cell_mean(ssim_terms(self.mu_x, self.var_x, s.mu, s.var, s.cov))
        q = SCORE_MIN + (SCORE_MAX - SCORE_MIN) * ssim
        return np.clip(q, SCORE_MIN, SCORE_MAX).astype(np.float32)

    def result(self):
        """
        (quality (gh, gw), types (gh, gw, 4)) with the types scaled to combine into the quality.
        """
        quality = self.quality()
        total = (SCORE_MAX - quality) / (SCORE_MAX - SCORE_MIN)
        eps = 1e-6
        steps = -np.log(np.clip(1.0 - self.types, eps, 1.0))
        target = -np.log(np.clip(1.0 - total, eps, 1.0))
        summed = steps.sum(axis=2)
        ratio = np.divide(target, summed, out=np.zeros_like(target), where=summed > eps)
        types = 1.0 - np.exp(-steps * ratio[..., None])
        return quality, np.clip(types, 0.0, 1.0).astype(np.float32)

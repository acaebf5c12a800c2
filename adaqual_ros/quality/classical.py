"""
Classical (no-weights) regional quality estimator.

Per cell it measures brightness, RMS contrast, dark channel, saturation, edge density, a noise
estimate (Immerkaer), a rain-streak energy (vertical high-pass structure) and a snow-speck density
(white top-hat), and maps them to per-type severities with fixed calibration constants. The score
is q = 5 - 4 * (1 - prod_k (1 - s_k)), so any one strong degradation pulls the region down and
mixtures compound.
"""
import math

import cv2
import numpy as np

from adaqual_ros.quality.base import QualityEstimatorMixin, check_cell
from adaqual_ros.quality.grid import cell_mean

# Feature order of `cell_features` (per cell; the frame_* ones are frame-wide values).
FEATURES = ('brightness', 'contrast', 'dark_channel', 'saturation', 'edge_density', 'noise',
            'rain', 'snow', 'frame_brightness', 'frame_dark_channel', 'fine_energy',
            'anisotropy', 'large_specks', 'bright_fraction', 'frame_anisotropy', 'rel_contrast')

# Calibration: each type severity is clip(bias + sum_j w_j * feature_j, 0, 1), a least-squares
# fit of the synthesis' per-cell type damage on 600 training-split crops (bsds500 val never used):
# `adaqual train-quality --fit-classical --seed 0`. Physically: low light drops brightness and adds
# noise, haze lifts the dark channel and flattens contrast, rain makes fine gradients anisotropic,
# snow adds bright specks.
CALIBRATION = {
    'low_light': {'bias': 0.5085, 'brightness': -0.8045, 'contrast': 0.0394,
        'dark_channel': 0.6232, 'saturation': 0.2983, 'edge_density': -0.0598, 'noise': 14.6772,
        'rain': 0.4384, 'snow': -0.8673, 'frame_brightness': -1.2002,
        'frame_dark_channel': 0.7041, 'fine_energy': -0.1636, 'anisotropy': -0.0342,
        'large_specks': 0.0234, 'bright_fraction': 0.1454, 'frame_anisotropy': 0.0241,
        'rel_contrast': -0.1465},
    'haze': {'bias': 0.2172, 'brightness': -0.4198, 'contrast': -0.1365, 'dark_channel': 0.4694,
        'saturation': -0.2324, 'edge_density': -0.2236, 'noise': 5.7495, 'rain': 0.209,
        'snow': -0.1701, 'frame_brightness': -0.253, 'frame_dark_channel': 0.5943,
        'fine_energy': 0.038, 'anisotropy': -0.0219, 'large_specks': -0.0513,
        'bright_fraction': -0.0368, 'frame_anisotropy': 0.0274, 'rel_contrast': -0.1009},
    'rain': {'bias': 0.0397, 'brightness': -0.3212, 'contrast': -0.2336, 'dark_channel': 0.2992,
        'saturation': 0.0178, 'edge_density': 0.0923, 'noise': -0.6952, 'rain': -0.8431,
        'snow': 0.0547, 'frame_brightness': 0.2207, 'frame_dark_channel': -0.225,
        'fine_energy': 0.2695, 'anisotropy': 0.0705, 'large_specks': -0.085,
        'bright_fraction': -0.0118, 'frame_anisotropy': 0.2189, 'rel_contrast': 0.0524},
    'snow': {'bias': 0.1304, 'brightness': -0.1406, 'contrast': -0.1255, 'dark_channel': 0.0083,
        'saturation': -0.0959, 'edge_density': 0.2981, 'noise': 0.3313, 'rain': 0.2976,
        'snow': -0.1573, 'frame_brightness': 0.1414, 'frame_dark_channel': -0.0829,
        'fine_energy': -0.1912, 'anisotropy': -0.0224, 'large_specks': -0.108,
        'bright_fraction': -0.0079, 'frame_anisotropy': -0.0391, 'rel_contrast': -0.0235},
}
TYPE_ORDER = ('low_light', 'haze', 'rain', 'snow')

_WORK_SIDE = 640  # features are computed on a frame downscaled to at most this long side


def _work_frame(frame):
    """Downscale (area) to at most _WORK_SIDE on the long side; return float32 RGB in [0, 1]."""
    h, w = frame.shape[:2]
    factor = max(1, math.ceil(max(h, w) / _WORK_SIDE))
    if factor > 1:
        frame = cv2.resize(frame, (max(1, w // factor), max(1, h // factor)),
                           interpolation=cv2.INTER_AREA)
    return frame.astype(np.float32) * (1.0 / 255.0)


def pixel_features(frame):
    """
    Per-pixel feature maps of one RGB uint8 frame, at the frame's full size.

    Returns:
        `np.ndarray` float32 (H, W, 12): L, L^2, dark channel, saturation, edge mask, |noise
        response|, rain-streak energy, snow-speck mask, fine x/y gradient energy, large-speck
        mask, bright mask.
    """
    h, w = frame.shape[:2]
    rgb = _work_frame(frame)
    lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    dark = cv2.erode(mn, np.ones((7, 7), np.uint8))
    sat = (mx - mn) / (mx + 1e-3)
    smooth = cv2.GaussianBlur(lum, (3, 3), 0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    edges = ((gx * gx + gy * gy) > 0.25 ** 2).astype(np.float32)
    # Immerkaer's operator: a second-difference kernel blind to planes and linear ramps.
    noise_kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    noise = np.abs(cv2.filter2D(lum, cv2.CV_32F, noise_kernel)) * (math.sqrt(math.pi / 2) / 6)
    # Rain: thin near-vertical bright streaks -> horizontal derivative of the high-pass dominates.
    high = lum - cv2.GaussianBlur(lum, (0, 0), 2.0)
    hx = cv2.Sobel(high, cv2.CV_32F, 1, 0, ksize=3)
    hy = cv2.Sobel(high, cv2.CV_32F, 0, 1, ksize=3)
    rain = np.maximum(hx * hx - 2.0 * hy * hy, 0.0) * (high > 0)
    # Snow: small bright isotropic specks survive a white top-hat.
    tophat = cv2.morphologyEx(lum, cv2.MORPH_TOPHAT,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    snow = (tophat > 0.12).astype(np.float32)
    # Fine-scale gradient energy split by direction: streaks make it anisotropic frame-wide.
    fine = lum - cv2.GaussianBlur(lum, (0, 0), 1.5)
    fx = cv2.Sobel(fine, cv2.CV_32F, 1, 0, ksize=3)
    fy = cv2.Sobel(fine, cv2.CV_32F, 0, 1, ksize=3)
    large = cv2.morphologyEx(lum, cv2.MORPH_TOPHAT,
                             cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    large = (large > 0.1).astype(np.float32)
    bright = (lum > 0.85).astype(np.float32)
    maps = np.stack([lum, lum * lum, dark, sat, edges, noise, rain, snow, fx * fx, fy * fy,
                     large, bright], axis=2)
    if maps.shape[:2] != (h, w):
        maps = cv2.resize(maps, (w, h), interpolation=cv2.INTER_LINEAR)
    return maps


def cell_features(frame, cell):
    """
    Per-cell features (see FEATURES) of one RGB uint8 frame.

    Returns:
        `np.ndarray` float32 (grid_h, grid_w, len(FEATURES)).
    """
    means = cell_mean(pixel_features(frame), cell)
    lum, lum2 = means[..., 0], means[..., 1]
    contrast = np.sqrt(np.maximum(lum2 - lum * lum, 0.0))
    frame_b = np.full_like(lum, float(lum.mean()))
    frame_d = np.full_like(lum, float(means[..., 2].mean()))
    ex, ey = means[..., 8], means[..., 9]
    aniso = (ex - ey) / (ex + ey + 1e-4)
    frame_aniso = np.full_like(lum, float((ex.sum() - ey.sum()) / (ex.sum() + ey.sum() + 1e-4)))
    rel_contrast = contrast / (lum + 0.05)
    return np.stack([lum, contrast, means[..., 2], means[..., 3], means[..., 4], means[..., 5],
                     means[..., 6], means[..., 7], frame_b, frame_d, np.sqrt(ex + ey), aniso,
                     means[..., 10], means[..., 11], frame_aniso, rel_contrast], axis=2)


def features_to_severity(features, calibration=None):
    """Per-type severities (grid_h, grid_w, 4) in [0, 1] from `cell_features`."""
    calibration = CALIBRATION if calibration is None else calibration
    index = {name: i for i, name in enumerate(FEATURES)}
    out = []
    for kind in TYPE_ORDER:
        terms = calibration[kind]
        value = np.full(features.shape[:2], terms.get('bias', 0.0), np.float32)
        for name, weight in terms.items():
            if name != 'bias':
                value += weight * features[..., index[name]]
        out.append(value)
    return np.clip(np.stack(out, axis=2), 0.0, 1.0)


def severity_to_score(type_severity):
    """q = 5 - 4 * (1 - prod_k (1 - s_k))."""
    combined = 1.0 - np.prod(1.0 - type_severity, axis=2)
    return (5.0 - 4.0 * combined).astype(np.float32)


class ClassicalQualityEstimator(QualityEstimatorMixin):
    """
    Regional quality from image statistics, with no weights.

    Args:
        cell (`int`, *optional*, defaults to 64): cell size in pixels.
        calibration (`dict`, *optional*): per-type {'bias': b, feature: weight} overrides of
            `CALIBRATION`.
    """

    name = 'classical'

    def __init__(self, cell=64, calibration=None):
        self.cell = check_cell(cell)
        self.calibration = dict(CALIBRATION)
        if calibration:
            unknown = set(calibration) - set(TYPE_ORDER)
            if unknown:
                raise ValueError(f'unknown degradation types in calibration: {sorted(unknown)}')
            self.calibration.update(calibration)

    def _estimate_grids(self, frames):
        results = []
        for frame in frames:
            sev = features_to_severity(cell_features(frame, self.cell), self.calibration)
            results.append((severity_to_score(sev), sev))
        return results

"""
Classical restoration without weights: dehazing, low-light enhancement and light deraining.

* Haze: dark channel prior (He et al., CVPR 2009) with the transmission refined by a guided filter
  (He et al., ECCV 2010). cv2.ximgproc is optional in OpenCV builds, so the guided filter here is
  the box-filter formulation written with cv2.boxFilter.
* Low light: gamma on the luminance chosen from the mean brightness, then CLAHE on the L channel
  of Lab; colour is kept by scaling RGB with the luminance ratio.
* Rain and snow: bright thin streaks and flakes stand out above a median-filtered copy; those
  pixels are pulled towards the median (wider median for snow).

With a QualityMap each operator is weighted per pixel by severity x type probability of its
degradation type, so clean regions are left (nearly) untouched; without one the operators are
switched on by simple global statistics. Fog is the exception: on a frame the runtime restores
whole (``whole_frame``) whose main damage is haze, dehazing runs at full strength everywhere, since
fog covers frames and the dark channel's own transmission map already leaves clear pixels nearly
as they were, while the per-cell weights leave patches of real fog that the estimator reads weakly
(docs/RESULTS.md, Classical backend on fog). With ``fog_contrast`` such a frame's local contrast
is then equalised (CLAHE on lightness): more low-confidence detections, less fidelity.
"""
import cv2
import numpy as np

from adaqual_ros.quality.types import DEGRADATION_TYPES, QualityMap

# Working resolution (long side) for the transmission map: DCP is a low-frequency estimate, and
# the guided filter restores the edges at full resolution.
_DCP_LONG_SIDE = 480
_OMEGA = 0.95       # keep a little haze so distant objects still look distant (He et al.)
_T_MIN = 0.1        # transmission floor: avoids amplifying noise in dense haze
_GF_EPS = 1e-3


def _to_uint8(rgb_f):
    return (np.clip(rgb_f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _check_rgb_uint8(rgb):
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f'classical_restore needs a numpy array, got {type(rgb).__name__}')
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(
            f'classical_restore needs an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}')
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise ValueError(f'classical_restore needs at least 2x2 pixels, got {rgb.shape[:2]}')


def guided_filter(guide, src, radius, eps=_GF_EPS):
    """
    Edge-preserving guided filter (He et al.) with box filters.

    Args:
        guide (`np.ndarray` float32, (H, W)): guidance image in [0, 1].
        src (`np.ndarray` float32, (H, W) or (H, W, C)): image to filter.
        radius (`int`): box radius in pixels.
        eps (`float`): regularisation; larger smooths more.

    Returns:
        `np.ndarray` float32 of the shape of ``src``.
    """
    guide = np.asarray(guide, dtype=np.float32)
    src = np.asarray(src, dtype=np.float32)
    ksize = (2 * int(radius) + 1,) * 2

    def box(x):
        return cv2.boxFilter(x, -1, ksize, borderType=cv2.BORDER_REFLECT)

    if src.ndim == 3:
        return np.stack([guided_filter(guide, src[..., c], radius, eps)
                         for c in range(src.shape[2])], axis=-1)
    mean_i = box(guide)
    mean_p = box(src)
    cov_ip = box(guide * src) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def _gray(rgb_f):
    return cv2.cvtColor(rgb_f, cv2.COLOR_RGB2GRAY)


def _dark_channel(rgb_f, patch):
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    return cv2.erode(rgb_f.min(axis=2), kernel)


def dehaze(rgb_f):
    """
    Dark-channel-prior dehazing of a float32 RGB image in [0, 1]; returns float32 in [0, 1].

    The transmission is estimated at a reduced size and refined at full size with a guided filter.
    """
    h, w = rgb_f.shape[:2]
    scale = min(1.0, _DCP_LONG_SIDE / max(h, w))
    small = rgb_f if scale == 1.0 else cv2.resize(
        rgb_f, (max(2, round(w * scale)), max(2, round(h * scale))),
        interpolation=cv2.INTER_AREA)
    patch = max(3, int(round(15 * max(small.shape[:2]) / _DCP_LONG_SIDE)) | 1)
    dark = _dark_channel(small, patch)
    # Atmospheric light: the brightest input pixels among the 0.1% haziest (darkest-channel) ones.
    flat_dark = dark.ravel()
    n = max(1, flat_dark.size // 1000)
    idx = np.argpartition(flat_dark, -n)[-n:]
    candidates = small.reshape(-1, 3)[idx]
    airlight = candidates[candidates.sum(axis=1).argmax()].astype(np.float32)
    airlight = np.maximum(airlight, 0.05)
    trans = 1.0 - _OMEGA * _dark_channel(small / airlight, patch)
    if scale != 1.0:
        trans = cv2.resize(trans, (w, h), interpolation=cv2.INTER_LINEAR)
    radius = max(4, int(round(0.02 * max(h, w))))
    trans = guided_filter(_gray(rgb_f), trans, radius)
    trans = np.clip(trans, _T_MIN, 1.0)[..., None]
    out = (rgb_f - airlight) / trans + airlight
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def clahe_lightness(rgb_uint8, clip_limit=2.0, tiles=8):
    """CLAHE on the L channel of Lab, colour kept; uint8 RGB in and out (OpenCV's CLAHE)."""
    lab = cv2.cvtColor(rgb_uint8, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles)).apply(
        lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def enhance_low_light(rgb_f):
    """Gamma from the mean luminance, then CLAHE on Lab L; float32 RGB [0, 1] in and out."""
    lum = _gray(rgb_f)
    mean = float(lum.mean())
    # Map the mean luminance towards 0.45; never darken (gamma <= 1).
    gamma = 1.0 if mean <= 1e-4 else float(np.clip(np.log(0.45) / np.log(max(mean, 1e-4)),
                                                      0.3, 1.0))
    lifted = np.power(np.clip(lum, 0.0, 1.0), gamma)
    lab = cv2.cvtColor(_to_uint8(rgb_f), cv2.COLOR_RGB2LAB)
    lab[..., 0] = (lifted * 255.0 + 0.5).astype(np.uint8)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    new_l = clahe.apply(lab[..., 0]).astype(np.float32) / 255.0
    ratio = new_l / np.maximum(lum, 1e-3)
    # Cap the gain so near-black noise is not blown up into colour speckle.
    ratio = np.minimum(ratio, 8.0)[..., None]
    return np.clip(rgb_f * ratio, 0.0, 1.0).astype(np.float32)


def derain(rgb_f, ksize=5, threshold=0.03):
    """
    Light deraining / desnowing: bright thin structures (narrower than ``ksize``) that stand more
    than ``threshold`` above a median-filtered copy are replaced by the median, with a soft mask.
    """
    u8 = _to_uint8(rgb_f)
    median = cv2.medianBlur(u8, ksize).astype(np.float32) / 255.0
    excess = _gray(rgb_f) - _gray(median)
    # Soft mask: 0 below the threshold, 1 at four times it.
    mask = np.clip((excess - threshold) / (3.0 * threshold), 0.0, 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.0)[..., None]
    out = rgb_f * (1.0 - mask) + median * mask
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _cell_strengths(quality_map):
    """(grid_h, grid_w, types) strength of each type per cell: severity x type probability."""
    # Full strength from severity 0.25 (quality 4, the default skip threshold) and type
    # probability 1/3 up: estimators spread probability over types, synthetic ground truth gives
    # strengths that rarely reach 1.
    sev = np.clip(quality_map.severity * 4.0, 0.0, 1.0)[..., None]
    probs = quality_map.type_probs
    # A type weaker than the cell's strongest counts in proportion to it: estimators leave a
    # little haze on rain cells, and dehazing (or deraining) what is not there costs more than it
    # gives (eval-restore's classical row: 16.64 -> 16.87 dB; docs/RESULTS.md).
    share = probs / np.maximum(probs.max(axis=-1, keepdims=True), 1e-6)
    return sev * np.clip(probs * 3.0, 0.0, 1.0) * np.clip(share, 0.0, 1.0)


def haze_leads(quality_map):
    """
    Whether haze is the frame's main damage: on at least half of the cells it is the strongest
    type, at half strength or more (estimators leave traces of haze on rain and low-light cells,
    and dehazing at full strength what is not there costs more than it gives).
    """
    return _haze_leads(_cell_strengths(quality_map))


def _haze_leads(strengths):
    haze = strengths[..., DEGRADATION_TYPES.index('haze')]
    led = (strengths.argmax(axis=-1) == DEGRADATION_TYPES.index('haze')) & (haze >= 0.5)
    return bool(led.mean() >= 0.5)


def _weights_from_map(quality_map, shape, whole_frame=False):
    """
    ({type: per-pixel (H, W) weight}, fog): severity x type probability, smoothed; fog when the
    frame is restored whole and haze leads (then haze weighs 1 everywhere).
    """
    h, w = shape
    if tuple(quality_map.image_size) != (h, w):
        raise ValueError(
            f'quality map is for {tuple(quality_map.image_size)}, image is {(h, w)}')
    sev = _cell_strengths(quality_map)
    fog = whole_frame and _haze_leads(sev)
    weights = {}
    for k, name in enumerate(DEGRADATION_TYPES):
        if name == 'haze' and fog:
            weights[name] = 1.0  # the whole frame at full strength (module docstring)
            continue
        cells = sev[..., k].astype(np.float32)
        if not cells.any():
            weights[name] = None
            continue
        full = cv2.resize(cells, (cells.shape[1] * quality_map.cell,
                                  cells.shape[0] * quality_map.cell),
                          interpolation=cv2.INTER_LINEAR)[:h, :w]
        weights[name] = np.ascontiguousarray(full)
    return weights, fog


def _weights_from_stats(rgb_f):
    """Global on/off switches when no quality map is given."""
    lum = _gray(rgb_f)
    small = cv2.resize(rgb_f, (64, 48), interpolation=cv2.INTER_AREA)
    dark_median = float(np.median(_dark_channel(small, 3)))
    return {
        'low_light': 1.0 if float(lum.mean()) < 0.2 else None,
        'haze': 1.0 if dark_median > 0.4 else None,
        # Texture looks like streaks to any cheap detector: deraining needs a quality map.
        'rain': None,
        'snow': None,
    }


def _apply(base, restored, weight):
    if weight is None:
        return base
    if np.isscalar(weight):
        return restored
    return base + (restored - base) * weight[..., None]


def classical_restore(rgb_uint8, quality_map=None, whole_frame=False, fog_contrast=False):
    """
    Restore an RGB uint8 frame with classical operators (no weights).

    Args:
        rgb_uint8 (`np.ndarray` uint8, (H, W, 3)): RGB frame.
        quality_map (`QualityMap`, *optional*): regional quality of the frame; each operator is
            applied in proportion to severity x type probability of its degradation type. Without
            one, the operators are chosen from global image statistics.
        whole_frame (`bool`, defaults to False): the runtime restores this frame whole (its
            ``whole_frame_share`` rule); with haze as the map's main damage, dehazing then runs at
            full strength everywhere.
        fog_contrast (`bool`, defaults to False): on such a fog frame, equalise local contrast
            after dehazing (the runtime's ``fog_contrast``).

    Returns:
        `np.ndarray` uint8 (H, W, 3) RGB.
    """
    _check_rgb_uint8(rgb_uint8)
    if quality_map is not None and not isinstance(quality_map, QualityMap):
        raise ValueError(f'quality_map must be a QualityMap, got {type(quality_map).__name__}')
    out = restore_float(rgb_uint8.astype(np.float32) / 255.0, quality_map, whole_frame,
                        fog_contrast)
    return _to_uint8(out)


def restore_float(rgb_f, quality_map=None, whole_frame=False, fog_contrast=False):
    """classical_restore on a float32 RGB image in [0, 1] (the runtime's working format)."""
    rgb_f = np.ascontiguousarray(rgb_f, dtype=np.float32)
    if quality_map is None:
        weights, fog = _weights_from_stats(rgb_f), False
    else:
        weights, fog = _weights_from_map(quality_map, rgb_f.shape[:2], whole_frame)
    out = rgb_f
    streaks = weights['rain']
    if streaks is not None:
        out = _apply(out, derain(out), streaks)
    if weights['snow'] is not None:
        # Flakes are wider than rain streaks: a wider pass where snow is reported.
        out = _apply(out, derain(out, ksize=7, threshold=0.03), weights['snow'])
    if weights['haze'] is not None:
        out = _apply(out, dehaze(out), weights['haze'])
        if fog and fog_contrast:
            out = clahe_lightness(_to_uint8(out)).astype(np.float32) / 255.0
    if weights['low_light'] is not None:
        out = _apply(out, enhance_low_light(out), weights['low_light'])
    return np.clip(out, 0.0, 1.0).astype(np.float32)

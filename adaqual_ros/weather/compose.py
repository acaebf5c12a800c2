"""
CDD-11-style composite weather: the eleven combinations of low light, haze, rain and snow, plus
clean, applied in physical order.

Order: haze acts on scene radiance along the line of sight, rain or snow lies between the scene
and the camera (near particles are not hazed), and low light (exposure drop and sensor noise)
acts last on everything the sensor records.

Randomness is split per degradation type into a *field* stream (severity field, model constants,
depth) and a *particle* stream (streak and flake positions, sensor noise). The same seed therefore
gives the same haze in 'haze' and 'low_haze', and `WeatherStream` keeps the fields fixed over a
video while rain and noise change every frame and snow falls.
"""
from dataclasses import dataclass, replace
import numbers

import cv2
import numpy as np

from adaqual_ros.quality.types import DEGRADATION_TYPES, SCORE_MAX, QualityMap, grid_shape
from adaqual_ros.weather.fields import severity_field
from adaqual_ros.weather.haze import (
    HazeParams,
    dim_airlight,
    haze,
    normalise_depth,
    synthetic_depth,
)
from adaqual_ros.weather.layers import crop_mask
from adaqual_ros.weather.lowlight import (
    LowLightParams,
    exposure_of,
    gamma_of,
    low_light,
    noise_variance,
)
from adaqual_ros.weather.quality_grid import QualityChain, grey_of
from adaqual_ros.weather.rain import RainParams, mask_layer, screen, streak_layer
from adaqual_ros.weather.snow import VEIL_LEVEL, SnowParams, blend_snow, flake_layer, mask_alpha

CONDITIONS = ('clean', 'low', 'haze', 'rain', 'snow', 'low_haze', 'low_rain', 'low_snow',
              'haze_rain', 'haze_snow', 'low_haze_rain', 'low_haze_snow')

# condition -> degradation types it contains (DEGRADATION_TYPES names).
CONDITION_TYPES = {
    name: tuple({'low': 'low_light'}.get(part, part) for part in name.split('_'))
    if name != 'clean' else ()
    for name in CONDITIONS
}

# Snow fall per video frame in pixels at 256 x 256 (middle flake layer; scaled with frame size).
SNOW_FALL = 1.5

# Range of the mean severity drawn when `severity=None`.
RANDOM_SEVERITY = (0.1, 0.95)


@dataclass
class WeatherSample:
    """
    One synthetic degraded frame and its ground truth.

    Args:
        degraded (`np.ndarray` uint8, (H, W, 3)): RGB with weather.
        clean (`np.ndarray` uint8, (H, W, 3)): the RGB input.
        condition (`str`): one of CONDITIONS.
        severity (`dict[str, np.ndarray]`): DEGRADATION_TYPES name -> (H, W) float32 severity
            field in [0, 1] (zeros for absent types).
        quality (`np.ndarray` float32, (gh, gw)): regional quality in [1, 5] (None when made
            with ``ground_truth=False``).
        types (`np.ndarray` float32, (gh, gw, 4)): per-region damage of each type in [0, 1] in
            DEGRADATION_TYPES order (None without ground truth).
        cell (`int`): region size in pixels.
        strength (`dict[str, np.ndarray]`): present type -> (H, W) effective per-pixel strength in
            [0, 1]: haze airlight fraction 1 - t, rain/snow layer opacity (snow: or its veil),
            low-light severity.
    """

    degraded: np.ndarray
    clean: np.ndarray
    condition: str
    severity: dict
    quality: np.ndarray
    types: np.ndarray
    cell: int = 64
    strength: dict = None

    def quality_map(self):
        """The ground truth as a `QualityMap` (type strengths as type_probs)."""
        if self.quality is None:
            raise ValueError('this sample was made with ground_truth=False: no quality map')
        return QualityMap(self.quality.copy(), self.types.copy(), self.cell,
                          tuple(self.degraded.shape[:2]))


def check_condition(condition):
    if condition not in CONDITION_TYPES:
        raise ValueError(f'unknown weather condition {condition!r}; expected one of {CONDITIONS}')
    return CONDITION_TYPES[condition]


def check_image(image):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f'weather synthesis needs an (H, W, 3) uint8 RGB image, got {image.dtype} '
            f'{image.shape}')
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f'image too small for weather synthesis: {image.shape}')
    return image


def _mean_severities(severity, kinds, rng):
    """Resolve `severity` (None, float or dict) to a mean per present type."""
    drawn = rng.uniform(*RANDOM_SEVERITY, size=len(DEGRADATION_TYPES))
    means = {}
    for i, kind in enumerate(DEGRADATION_TYPES):
        if kind not in kinds:
            continue
        if severity is None:
            value = drawn[i]
        elif isinstance(severity, dict):
            unknown = set(severity) - set(DEGRADATION_TYPES)
            if unknown:
                raise ValueError(f'unknown severity keys {sorted(unknown)}; expected '
                                 f'{DEGRADATION_TYPES}')
            value = severity.get(kind, drawn[i])
        elif isinstance(severity, numbers.Real):
            value = severity
        else:
            raise ValueError(f'severity must be None, a float or a dict, got {type(severity)}')
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f'{kind} severity must be in [0, 1], got {value}')
        means[kind] = value
    return means


class _TypeState:
    """Per-type field draws (severity field and model constants) for one frame size."""

    def __init__(self, kind, mean, height, width, seed, variation, depth, dim_haze=0.0):
        rng = np.random.default_rng(seed)
        self.field = severity_field(height, width, mean, rng, variation)
        self.use_mask = None
        if kind == 'low_light':
            self.params = LowLightParams.draw(rng)
        elif kind == 'haze':
            self.params = HazeParams.draw(rng)
            if depth is not None:
                self.depth = normalise_depth(depth, height, width)
            else:
                self.depth = synthetic_depth(height, width, self.params, rng)
        elif kind == 'rain':
            self.params = RainParams.draw(rng)
        else:
            self.params = SnowParams.draw(rng)
        # Shared draws for the real-mask path, taken always so streams stay aligned.
        self.mask_u = float(rng.random())
        self.mask_gain = float(rng.uniform(1.0, 1.4))
        self.mask_seed = int(rng.integers(0, 2 ** 63 - 1))
        if kind == 'haze' and dim_haze > 0 and rng.random() < dim_haze:
            # Drawn after everything else so that dim_haze=0 keeps every seeded set as it was.
            self.params = replace(self.params, airlight=dim_airlight(rng))


def _apply(image, kinds, states, particle_seeds, layers, chain=None, fall=0.0):
    """
    Apply the present types in physical order -> (float image, strengths).

    ``strengths`` maps each present type to its effective per-pixel strength in [0, 1] (haze:
    airlight fraction 1 - t; rain/snow: layer opacity; low light: severity field). ``chain``
    (a `QualityChain`), when given, follows every step for the ground-truth quality. ``fall``
    (pixels at a 256 x 256 frame) moves snow down, for videos.
    """
    h, w = image.shape[:2]
    out = image.astype(np.float32) * (1.0 / 255.0)
    strengths = {}
    if 'haze' in kinds:
        st = states['haze']
        out, transmission = haze(out, st.field, st.params, st.depth)
        strengths['haze'] = 1.0 - transmission
        if chain is not None:
            chain.haze(transmission, float(np.mean(st.params.airlight)))
    for kind in ('rain', 'snow'):
        if kind not in kinds:
            continue
        st = states[kind]
        rng = np.random.default_rng(particle_seeds[kind])
        masks = layers.masks(kind) if layers is not None else []
        use_mask = bool(masks) and st.mask_u < layers.use_prob
        if use_mask:
            mrng = np.random.default_rng(st.mask_seed)
            mask = crop_mask(masks[int(mrng.integers(len(masks)))], h, w, rng)
            if fall and kind == 'snow':
                mask = np.roll(mask, int(round(fall * _unit(h, w))), axis=0)
        if kind == 'rain':
            if use_mask:
                # Real rain masks peak near 100/255: scale them up to visible streaks.
                layer = mask_layer(mask, st.field, 2.2 * st.mask_gain)
            else:
                layer = streak_layer(h, w, st.field, st.params, rng)
            out = screen(out, layer)
            strengths['rain'] = layer
            if chain is not None:
                chain.overlay('rain', layer, 1.0)
        else:
            if use_mask:
                alpha = mask_alpha(mask, st.field, st.mask_gain)
            else:
                alpha = flake_layer(h, w, st.field, st.params, rng, fall * _unit(h, w))
            out = blend_snow(out, alpha, st.field, st.params)
            veil = st.params.veil * st.field
            strengths['snow'] = np.maximum(alpha, veil)
            if chain is not None:
                chain.overlay('snow', alpha, st.params.white, veil, VEIL_LEVEL)
    if 'low_light' in kinds:
        st = states['low_light']
        rng = np.random.default_rng(particle_seeds['low_light'])
        if chain is not None:
            # The noise-free frame low light acts on, before `low_light` modifies `out`.
            scene = grey_of(out)
            exposure = exposure_of(st.field, st.params)
            gamma = gamma_of(st.field, st.params)
            dark = exposure * cv2.pow(np.maximum(scene, 0.0), gamma)
            chain.low_light(scene, exposure, gamma, noise_variance(dark, st.field, st.params))
        out = low_light(out, st.field, st.params, rng)
        strengths['low_light'] = st.field
    return out, strengths


def _unit(height, width):
    """Pixel scale relative to a 256 x 256 frame."""
    return float(np.sqrt(height * width)) / 256.0


def _to_uint8(image):
    # convertScaleAbs rounds and saturates at 255; values are >= 0 after the clamp.
    return cv2.convertScaleAbs(np.maximum(image, 0.0, out=image), alpha=255.0)


def _seeds(rng):
    keys = rng.integers(0, 2 ** 63 - 1, size=2 * len(DEGRADATION_TYPES))
    field = dict(zip(DEGRADATION_TYPES, (int(k) for k in keys[:4])))
    particle = dict(zip(DEGRADATION_TYPES, (int(k) for k in keys[4:])))
    return field, particle


def _sample(clean, condition, kinds, states, particle_seeds, cell, layers, ground_truth=True,
            fall=0.0):
    h, w = clean.shape[:2]
    chain = QualityChain(clean, cell) if ground_truth and kinds else None
    out, strengths = _apply(clean, kinds, states, particle_seeds, layers, chain, fall)
    degraded = _to_uint8(out) if kinds else clean.copy()
    severity = {kind: states[kind].field if kind in states else np.zeros((h, w), np.float32)
                for kind in DEGRADATION_TYPES}
    if not ground_truth:
        return WeatherSample(degraded, clean, condition, severity, None, None, cell, strengths)
    if chain is None:
        gh, gw = grid_shape(h, w, cell)
        quality = np.full((gh, gw), SCORE_MAX, dtype=np.float32)
        types = np.zeros((gh, gw, len(DEGRADATION_TYPES)), dtype=np.float32)
    else:
        quality, types = chain.result()
    return WeatherSample(degraded, clean, condition, severity, quality, types, cell, strengths)


def check_dim_haze(value):
    """`dim_haze` as a float in [0, 1], or ValueError (trainers check it before the workers)."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f'dim_haze must be in [0, 1], got {value}')
    return value


def synthesize(clean_rgb_uint8, condition, seed_or_rng=None, severity=None, cell=64,
               layers=None, depth=None, variation=None, ground_truth=True, dim_haze=0.0):
    """
    Apply one weather condition to a clean frame.

    Args:
        clean_rgb_uint8 (`np.ndarray` uint8, (H, W, 3)): clean RGB frame.
        condition (`str`): one of CONDITIONS.
        seed_or_rng (`int`, `np.random.Generator` or None): randomness; the same seed gives the
            same output (a Generator is advanced).
        severity (`float`, `dict` or None, *optional*): mean severity in [0, 1] for every present
            type (float), per type (dict keyed by DEGRADATION_TYPES), or random in
            RANDOM_SEVERITY (None).
        cell (`int`, defaults to 64): region size of the quality grid.
        layers (`WeatherLayers`, *optional*): real rain/snow masks (see `load_layers`).
        depth (`np.ndarray`, *optional*): (H', W') depth map for haze, larger = farther.
        variation (`float`, *optional*): spatial variation amplitude in [0, 1] of the severity
            fields (0 = uniform); random per type when None.
        ground_truth (`bool`, defaults to True): compute the quality grid; False leaves
            ``quality`` and ``types`` None and saves about a third of the time (video players).
        dim_haze (`float`, defaults to 0): probability that haze is lit as at dusk or at night
            (a dim, possibly blue or orange airlight, `weather.haze.dim_airlight`) instead of
            daylight; 0 leaves the draws, and so every seeded set, unchanged.

    Returns:
        `WeatherSample`.
    """
    clean = check_image(clean_rgb_uint8)
    kinds = check_condition(condition)
    if int(cell) <= 0:
        raise ValueError(f'cell must be positive, got {cell}')
    rng = np.random.default_rng(seed_or_rng)
    field_seeds, particle_seeds = _seeds(rng)
    means = _mean_severities(severity, kinds, rng)
    h, w = clean.shape[:2]
    dim_haze = check_dim_haze(dim_haze)
    states = {kind: _TypeState(kind, means[kind], h, w, field_seeds[kind], variation, depth,
                               dim_haze)
              for kind in kinds}
    return _sample(clean, condition, kinds, states, particle_seeds, int(cell), layers,
                   ground_truth)


class WeatherStream:
    """
    Weather for a video: severity fields and model constants fixed, rain streaks and sensor noise
    new every frame, snowflakes kept and falling (``SNOW_FALL`` pixels per frame at 256 x 256,
    near flakes faster).

    Args:
        condition (`str`): one of CONDITIONS.
        seed (`int`): the stream's seed; frame ``i`` is reproducible from (seed, i).
        severity, cell, layers, depth, variation, ground_truth, dim_haze: as in `synthesize`.

    Example:
        >>> stream = WeatherStream('low_rain', seed=3, severity=0.6)
        >>> sample = stream.apply(frame_rgb)   # call once per frame
    """

    def __init__(self, condition, seed=0, severity=None, cell=64, layers=None, depth=None,
                 variation=None, ground_truth=True, dim_haze=0.0):
        self.condition = condition
        self.dim_haze = check_dim_haze(dim_haze)
        self.kinds = check_condition(condition)
        self.seed = int(seed)
        self.severity = severity
        self.cell = int(cell)
        self.layers = layers
        self.depth = depth
        self.variation = variation
        self.ground_truth = bool(ground_truth)
        self.frame_index = 0
        self._states = None
        self._size = None
        rng = np.random.default_rng(self.seed)
        self._field_seeds, particle = _seeds(rng)
        self._snow_seed = particle['snow']
        self._means = _mean_severities(severity, self.kinds, rng)

    def apply(self, clean_rgb_uint8, frame_index=None):
        """Degrade the next frame (or frame ``frame_index``) -> `WeatherSample`."""
        clean = check_image(clean_rgb_uint8)
        h, w = clean.shape[:2]
        if self._size != (h, w):
            self._states = {
                kind: _TypeState(kind, self._means[kind], h, w, self._field_seeds[kind],
                                 self.variation, self.depth, self.dim_haze)
                for kind in self.kinds}
            self._size = (h, w)
        index = self.frame_index if frame_index is None else int(frame_index)
        self.frame_index = index + 1
        _, particle_seeds = _seeds(np.random.default_rng([self.seed, index]))
        # Snow keeps its flakes and lets them fall; rain and sensor noise are new every frame.
        particle_seeds['snow'] = self._snow_seed
        return _sample(clean, self.condition, self.kinds, self._states, particle_seeds,
                       self.cell, self.layers, self.ground_truth, SNOW_FALL * index)

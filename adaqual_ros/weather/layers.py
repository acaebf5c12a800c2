"""
Real weather layers: rain and snow masks and a scene with a depth map (OneRestore syn_data).

Layout under ``<assets>/data/weather_layers`` (or a folder given directly)::

    rain_mask/*.jpg   grey streak layers on black (values up to ~100 of 255)
    snow_mask/*.jpg   snowflake layers on black
    scene/clear.jpg, scene/depth_map.jpg (larger = farther), scene/light_map.jpg

Masks are loaded once (as float32 grey in [0, 1]) and cropped/resized per sample.
"""
from dataclasses import dataclass, field
import functools
from pathlib import Path

import cv2
import numpy as np

LAYERS_SUBDIR = Path('data') / 'weather_layers'
_EXTS = ('.jpg', '.jpeg', '.png', '.bmp')


@dataclass
class WeatherLayers:
    """
    Real masks used by `synthesize` for rain and snow.

    Args:
        rain (`list[np.ndarray]`): rain masks, float32 (h, w) in [0, 1].
        snow (`list[np.ndarray]`): snow masks, float32 (h, w) in [0, 1].
        scene_rgb (`np.ndarray`, *optional*): clear scene, uint8 RGB (H, W, 3).
        scene_depth (`np.ndarray`, *optional*): depth of that scene, float32 (H, W), larger =
            farther.
        use_prob (`float`, defaults to 0.5): probability that a rain or snow sample uses a real
            mask instead of procedural particles (so training sees both).
        root (`Path`, *optional*): where the layers came from.
    """

    rain: list = field(default_factory=list)
    snow: list = field(default_factory=list)
    scene_rgb: np.ndarray = None
    scene_depth: np.ndarray = None
    use_prob: float = 0.5
    root: Path = None

    def __post_init__(self):
        if not 0.0 <= float(self.use_prob) <= 1.0:
            raise ValueError(f'use_prob must be in [0, 1], got {self.use_prob}')

    def masks(self, kind):
        if kind not in ('rain', 'snow'):
            raise ValueError(f"mask kind must be 'rain' or 'snow', got {kind!r}")
        return self.rain if kind == 'rain' else self.snow


def _grey(path):
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f'cannot read weather layer {path}')
    return img.astype(np.float32) / 255.0


def _files(folder):
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _EXTS)


@functools.lru_cache(maxsize=4)
def _load(folder):
    rain = [_grey(p) for p in _files(folder / 'rain_mask')]
    snow = [_grey(p) for p in _files(folder / 'snow_mask')]
    scene_rgb = scene_depth = None
    clear, depth = folder / 'scene' / 'clear.jpg', folder / 'scene' / 'depth_map.jpg'
    if clear.is_file() and depth.is_file():
        bgr = cv2.imread(str(clear), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'cannot read scene image {clear}')
        scene_rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        scene_depth = _grey(depth)
    return rain, snow, scene_rgb, scene_depth


def load_layers(root, use_prob=0.5):
    """
    Load real weather layers, or return None when there are none.

    Args:
        root (`str` or `Path` or None): the assets root (holding data/weather_layers) or the
            weather_layers folder itself. None returns None.
        use_prob (`float`, defaults to 0.5): see `WeatherLayers.use_prob`.

    Returns:
        `WeatherLayers` with at least one rain or snow mask, or None.
    """
    if root is None:
        return None
    root = Path(root).expanduser()
    folder = root / LAYERS_SUBDIR if (root / LAYERS_SUBDIR).is_dir() else root
    if not folder.is_dir():
        return None
    rain, snow, scene_rgb, scene_depth = _load(folder.resolve())
    if not rain and not snow:
        return None
    return WeatherLayers(list(rain), list(snow), scene_rgb, scene_depth, use_prob, folder)


def crop_mask(mask, height, width, rng):
    """
    A random crop of ``mask`` resized to (height, width), randomly mirrored.

    The crop keeps the target aspect ratio and covers 70 to 100 % of the largest such window, so
    streak and flake sizes stay close to the mask's own.
    """
    mh, mw = mask.shape
    aspect = width / height
    ch = min(mh, mw / aspect)
    ch *= float(rng.uniform(0.7, 1.0))
    cw = ch * aspect
    ch_i, cw_i = max(int(ch), 1), max(int(cw), 1)
    y0 = int(rng.integers(0, mh - ch_i + 1))
    x0 = int(rng.integers(0, mw - cw_i + 1))
    crop = mask[y0:y0 + ch_i, x0:x0 + cw_i]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interp = cv2.INTER_AREA if ch_i > height else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=interp)

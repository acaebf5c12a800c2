"""
Clean-image splits and the seeded held-out synthetic set used to train and evaluate estimators.

Splits follow ASSETS.md: train on bsds500/train, bsds500/test, sun_hays80 and urban100; hold out
bsds500/val. BSDS500 test/104055 is left out of training because Rain100L reuses it.
"""
from pathlib import Path

import cv2
import numpy as np

TRAIN_DIRS = ('bsds500/train', 'bsds500/test', 'sun_hays80', 'urban100')
HELDOUT_DIR = 'bsds500/val'
EXCLUDED_STEMS = frozenset({'104055'})
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')


def clean_root(assets_root):
    """The data/clean folder of an assets root (raises when missing)."""
    if assets_root is None:
        raise FileNotFoundError('no assets folder: set ADAQUAL_ASSETS or pass --assets')
    root = Path(assets_root) / 'data' / 'clean'
    if not root.is_dir():
        raise FileNotFoundError(f'{root} not found (expected the shared assets layout)')
    return root


def list_images(folder):
    """Sorted image files of a folder (no recursion); raises when there are none."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.stem not in EXCLUDED_STEMS)
    if not files:
        raise FileNotFoundError(f'no images in {folder}')
    return files


def read_rgb(path, max_side=None):
    """Read an image as HxWx3 uint8 RGB, area-downscaled to at most ``max_side`` if given."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'cannot read image {path}')
    return np.ascontiguousarray(fit_max_side(bgr, max_side)[:, :, ::-1])


def fit_max_side(image, max_side=None):
    """Area-downscale `image` so its long side is at most `max_side` (None/0 = as is)."""
    h, w = image.shape[:2]
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    return image


def train_files(assets_root):
    root = clean_root(assets_root)
    return [f for d in TRAIN_DIRS for f in list_images(root / d)]


def extra_clean_images(sources, assets_root=None, stride=10, repeat=1, max_side=800):
    """
    Clean images from extra folders or videos, e.g. clean footage from the user's own camera.

    Args:
        sources (`str`): comma-separated image folders or video files, as given or relative to
            the assets root.
        stride (`int`): videos: keep every `stride`-th frame.
        repeat (`int`): list each image this many times (weights a few frames against the
            hundreds of photos of the standard splits).
        max_side (`int`): long side after an area downscale.

    Returns:
        `list[np.ndarray]`: RGB uint8 images (in memory: a video has no files to point at).
    """
    from adaqual_ros.io.video import FrameSource

    if int(stride) < 1 or int(repeat) < 1:
        raise ValueError(f'stride and repeat must be >= 1, got {stride}, {repeat}')
    images = []
    for source in (s.strip() for s in str(sources).split(',') if s.strip()):
        path = Path(source).expanduser()
        if not path.exists() and assets_root is not None:
            path = Path(assets_root) / source
        if not path.exists():
            raise FileNotFoundError(f'extra clean source {source!r} not found')
        if path.is_dir():
            found = [read_rgb(f, max_side) for f in list_images(path)]
        else:
            found = [fit_max_side(frame.image, max_side)
                     for frame in FrameSource(path, stride=stride)]
        if not found:
            raise ValueError(f'no images in extra clean source {source!r}')
        images += found
    return images * int(repeat)


def heldout_files(assets_root):
    return list_images(clean_root(assets_root) / HELDOUT_DIR)


def heldout_samples(assets_root, conditions=None, n_images=None, seed=0, cell=64, layers=None):
    """
    Yield the seeded held-out synthetic set: every held-out image under every condition.

    Each (image i, condition c) pair has its own seed derived from ``seed``, so the set is the same
    on every run and independent of ``n_images`` and of the condition list.

    Yields:
        `(name, WeatherSample)` with name 'stem/condition'.
    """
    from adaqual_ros.weather import CONDITIONS, synthesize

    conditions = CONDITIONS if conditions is None else tuple(conditions)
    files = heldout_files(assets_root)
    if n_images is not None:
        files = files[:n_images]
    for i, path in enumerate(files):
        image = read_rgb(path)
        for condition in conditions:
            c = CONDITIONS.index(condition)
            rng = np.random.default_rng([seed, i, c])
            yield f'{path.stem}/{condition}', synthesize(image, condition, rng, cell=cell,
                                                         layers=layers)

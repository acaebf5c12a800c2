"""
The demo's camera stream: a short folder of frames the player node plays, and its schedule.

With a video (the assets' people.mp4 or a user's file) the stream is `frames` frames spread
evenly over it; with nothing at all it is built from sample pictures that ship inside installed
packages (ultralytics' bus.jpg and zidane.jpg, scikit-image's astronaut, coffee, chelsea and
motorcycle), each shown as a slow pan so the stream moves like a camera. Frames are written as
PNG (lossless), so the clean frame the player reads is the reference the report scores against.
"""
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from adaqual_ros.assets import asset_path
from adaqual_ros.weather import CONDITIONS

DEFAULT_CONDITIONS = ('clean', 'haze', 'rain', 'low_haze_rain', 'snow')
ASSETS_VIDEO = 'data/video/people.mp4'
# (package, file inside it): detector-friendly pictures installed with our dependencies.
SAMPLE_IMAGES = (
    ('ultralytics', 'assets/bus.jpg'),
    ('ultralytics', 'assets/zidane.jpg'),
    ('skimage', 'data/astronaut.png'),
    ('skimage', 'data/motorcycle_left.png'),
    ('skimage', 'data/coffee.png'),
    ('skimage', 'data/chelsea.png'),
)


class DemoStreamError(ValueError):
    """The demo stream cannot be built (no source, bad option)."""


@dataclass
class DemoStream:
    """
    A folder of frames for the player node.

    Args:
        folder (`Path`): the PNG frames, sorted by name.
        frames (`int`): how many.
        size (`tuple[int, int]`): (H, W) of every frame.
        source (`str`): where the frames came from (for the report).
        names (`list[str]`): the frame file names, in play order.
    """

    folder: Path
    frames: int
    size: tuple
    source: str
    names: list = field(default_factory=list)


def parse_conditions(text):
    """
    Comma-separated weather conditions -> tuple, each checked against `CONDITIONS`.

    Raises DemoStreamError naming an unknown condition or a repeated one.
    """
    items = [c.strip() for c in str(text).split(',') if c.strip()]
    if not items:
        raise DemoStreamError('no weather conditions given')
    for item in items:
        if item not in CONDITIONS:
            raise DemoStreamError(f'unknown weather condition {item!r}; valid: '
                                  f'{", ".join(CONDITIONS)}')
    if len(set(items)) != len(items):
        raise DemoStreamError(f'a condition is listed twice in {text!r}')
    return tuple(items)


def sample_image_paths():
    """The installed sample pictures that exist on this machine (paths)."""
    import importlib.util

    found = []
    for package, relative in SAMPLE_IMAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(list(spec.submodule_search_locations)[0]) / relative
        if path.is_file():
            found.append(path)
    return found


def _read_rgb(path):
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DemoStreamError(f'cannot read image {str(path)!r}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _even(value):
    return max(2, int(round(value / 2.0)) * 2)


def pan_frames(rgb, count, size):
    """
    `count` frames of a slow pan and zoom over `rgb`, each resized to `size` (H, W).

    The crop keeps the output aspect, starts at 90 % of the largest such crop and drifts
    across the picture, so consecutive frames differ like a slowly moving camera (the whole
    drift takes 16 frames; shorter clips cover part of it).
    """
    out_h, out_w = size
    h, w = rgb.shape[:2]
    aspect = out_w / out_h
    full_w = min(w, h * aspect)
    frames = []
    for i in range(count):
        t = i / 15.0 if count <= 16 else i / (count - 1)
        crop_w = full_w * (0.9 - 0.1 * t)
        crop_h = crop_w / aspect
        x0 = (w - crop_w) * (0.2 + 0.6 * t)
        y0 = (h - crop_h) * (0.5 + 0.3 * (t - 0.5))
        x0, y0 = int(round(x0)), int(round(y0))
        crop = rgb[y0:y0 + int(round(crop_h)), x0:x0 + int(round(crop_w))]
        frames.append(cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA))
    return frames


def video_frames(path, count, width):
    """`count` frames spread evenly over a video, resized to `width` (aspect kept), RGB."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DemoStreamError(f'cannot open video {str(path)!r}')
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
        wanted = set(np.linspace(0, max(total - 1, 0), count).round().astype(int).tolist())
        frames, index = [], 0
        while len(frames) < len(wanted):
            ok, bgr = cap.read()
            if not ok:
                break
            if index in wanted:
                h, w = bgr.shape[:2]
                size = (_even(width), _even(h * width / w))
                bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                frames.append((index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            index += 1
    finally:
        cap.release()
    if not frames:
        raise DemoStreamError(f'no frames could be read from {str(path)!r}')
    return frames


def build_stream(out_dir, video=None, assets=None, frames=20, width=640):
    """
    Write the demo's frames into `out_dir` and describe them.

    Args:
        out_dir (`str` or `Path`): folder for the PNG frames (created; old frames removed).
        video (`str` or `Path`, *optional*): a video to sample; default: the assets'
            people.mp4 when assets are found, else the installed sample pictures.
        assets (`str`, *optional*): the assets folder (default $ADAQUAL_ASSETS).
        frames (`int`, *optional*, defaults to 20): frames in the stream.
        width (`int`, *optional*, defaults to 640): frame width in pixels (height keeps the
            aspect of a video; sample pictures give 4:3 frames).

    Returns:
        `DemoStream`.
    """
    if int(frames) < 1:
        raise DemoStreamError(f'frames must be >= 1, got {frames}')
    if int(width) < 64:
        raise DemoStreamError(f'width must be >= 64, got {width}')
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob('frame_*.png'):
        old.unlink()
    if video is None:
        found = asset_path(ASSETS_VIDEO, assets)
        video = found if found is not None else None
    if video is not None:
        video = Path(video).expanduser()
        if not video.is_file():
            raise DemoStreamError(f'video {str(video)!r} does not exist')
        items = [(f'frame_{n:04d}_{video.stem}_{index:05d}.png', rgb)
                 for n, (index, rgb) in enumerate(video_frames(video, int(frames), int(width)))]
        source = str(video)
    else:
        paths = sample_image_paths()
        if not paths:
            raise DemoStreamError('no video given, no assets found and no sample pictures in '
                                  'the installed packages (ultralytics, scikit-image)')
        size = (_even(int(width) * 3 / 4), _even(int(width)))
        # About four frames per picture, the most detector-friendly pictures first.
        paths = paths[:max(1, min(len(paths), int(frames) // 4))]
        per = [int(frames) // len(paths) + (i < int(frames) % len(paths))
               for i in range(len(paths))]
        items = []
        for path, count in zip(paths, per):
            for k, rgb in enumerate(pan_frames(_read_rgb(path), count, size) if count else []):
                items.append((f'frame_{len(items):04d}_{path.stem}_{k:02d}.png', rgb))
        source = 'sample pictures: ' + ', '.join(p.name for p in paths)
    for name, rgb in items:
        cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return DemoStream(folder=folder, frames=len(items), size=tuple(items[0][1].shape[:2]),
                      source=source, names=[name for name, _ in items])

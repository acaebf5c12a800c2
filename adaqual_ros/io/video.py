"""
Frames from a video file, an image folder or one image, as HxWx3 uint8 RGB.

BGR (OpenCV) -> RGB happens here, once, for every file source.
"""
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg')


@dataclass
class Frame:
    """
    One frame of a source.

    Args:
        index (`int`): 0-based position in the source.
        image (`np.ndarray` HxWx3 uint8): RGB pixels.
        time_s (`float`): time from the start of the source (index / fps for folders).
        name (`str`): file name (folders) or '<video>:<index>'.
    """

    index: int
    image: np.ndarray
    time_s: float
    name: str


def list_images(folder):
    """Sorted image files of a folder (by name); raises when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'image folder {str(folder)!r} does not exist')
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {str(folder)!r}')
    return files


def read_image(path):
    """Read one image file as HxWx3 uint8 RGB (alpha dropped, grey expanded)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'cannot read image {str(path)!r}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class FrameSource:
    """
    Iterate the frames of a video file, an image folder or a single image.

    Args:
        source (`str` or `Path`): the file or folder.
        fps (`float`, *optional*): rate for folders/images (videos use their own unless given).
        limit (`int`, *optional*): stop after this many frames.
        stride (`int`, *optional*, defaults to 1): keep every `stride`-th frame.
        resize (`tuple[int, int]`, *optional*): (W, H) to resize every frame to.

    Example:
        >>> for frame in FrameSource('people.mp4', limit=30):
        ...     detector.detect(frame.image)
    """

    def __init__(self, source, fps=None, limit=None, stride=1, resize=None):
        self.path = Path(source).expanduser()
        if not self.path.exists():
            raise FileNotFoundError(f'frame source {str(self.path)!r} does not exist')
        if int(stride) < 1:
            raise ValueError(f'stride must be >= 1, got {stride}')
        if limit is not None and int(limit) < 0:
            raise ValueError(f'limit must be >= 0, got {limit}')
        self.stride = int(stride)
        self.limit = None if limit is None else int(limit)
        self.resize = tuple(int(v) for v in resize) if resize else None
        if self.path.is_dir():
            self.kind, self.files = 'folder', list_images(self.path)
            self._count, native = len(self.files), None
        elif self.path.suffix.lower() in IMAGE_SUFFIXES:
            self.kind, self.files = 'image', [self.path]
            self._count, native = 1, None
        else:
            self.kind, self.files = 'video', []
            cap = cv2.VideoCapture(str(self.path))
            if not cap.isOpened():
                raise ValueError(f'cannot open video {str(self.path)!r}')
            self._count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
            native = cap.get(cv2.CAP_PROP_FPS) or None
            cap.release()
        self.fps = float(fps or native or 30.0)
        if self.fps <= 0:
            raise ValueError(f'fps must be > 0, got {fps}')

    def __len__(self):
        n = -(-self._count // self.stride)
        return n if self.limit is None else min(n, self.limit)

    def _prepare(self, image):
        if self.resize:
            image = cv2.resize(image, self.resize, interpolation=cv2.INTER_AREA)
        return image

    def __iter__(self):
        emitted = 0
        if self.kind == 'video':
            cap = cv2.VideoCapture(str(self.path))
            try:
                index = 0
                while self.limit is None or emitted < self.limit:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    if index % self.stride == 0:
                        rgb = self._prepare(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                        yield Frame(index, rgb, index / self.fps, f'{self.path.name}:{index}')
                        emitted += 1
                    index += 1
            finally:
                cap.release()
            return
        for index in range(0, len(self.files), self.stride):
            if self.limit is not None and emitted >= self.limit:
                break
            path = self.files[index]
            yield Frame(index, self._prepare(read_image(path)), index / self.fps, path.name)
            emitted += 1


def iter_frames(source, **kwargs):
    """Shorthand for `iter(FrameSource(source, **kwargs))`."""
    return iter(FrameSource(source, **kwargs))


def extract_frames(video, parent, stride=30, width=640):
    """
    Write every `stride`-th frame of `video`, `width` px wide, as PNGs under `parent`.

    The folder is ``parent/frames_<stem>_s<stride>_w<width>``; when it exists (an earlier run)
    it is returned as it is, so a set built from a video stays the same between runs.

    Returns:
        `Path`: the folder.
    """
    import shutil

    if int(stride) < 1 or int(width) < 64:
        raise ValueError(f'stride must be >= 1 and width >= 64, got {stride}, {width}')
    video = Path(video)
    folder = Path(parent) / f'frames_{video.stem}_s{int(stride)}_w{int(width)}'
    if folder.is_dir():
        return folder
    # Written aside and renamed, so an interrupted run never leaves a partial set to reuse.
    partial = folder.with_name(folder.name + '.partial')
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for frame in FrameSource(video, stride=stride):
        h, w = frame.image.shape[:2]
        size = (int(width), max(1, round(h * width / w)))
        img = cv2.resize(frame.image, size,
                         interpolation=cv2.INTER_AREA if w > width else cv2.INTER_LINEAR)
        cv2.imwrite(str(partial / f'{video.stem}_{frame.index:06d}.png'),
                    cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not list_images(partial):
        raise ValueError(f'no frames could be read from {str(video)!r}')
    partial.rename(folder)
    return folder

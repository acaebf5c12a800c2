"""
torch Datasets for training and evaluation: synthetic weather pairs, paired folders, YOLO folders,
and the fixed held-out composite set.

Images are read by `adaqual_ros.io.video.read_image`, the one place where OpenCV's BGR becomes
RGB. Items are dicts with named keys (BasicSR style): ``lq`` (degraded) and ``gt`` (clean) as
float32 (3, H, W) tensors in [0, 1] RGB, plus paths and ground truth where known. File lists are
sorted, and a paired folder raises when a partner file is missing.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from adaqual_ros.io.video import IMAGE_SUFFIXES, FrameSource, list_images, read_image
from adaqual_ros.quality.types import DEGRADATION_TYPES
from adaqual_ros.weather.compose import CONDITIONS, check_condition, synthesize

MANIFEST_NAME = 'manifest.json'
MANIFEST_VERSION = 1


def to_tensor(image_rgb_uint8):
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 tensor in [0, 1]."""
    array = np.ascontiguousarray(image_rgb_uint8.transpose(2, 0, 1))
    return torch.from_numpy(array).float().div_(255.0)


def _random_window(rng, height, width, crop):
    """Top-left corner of a random crop x crop window."""
    y0 = int(rng.integers(0, height - crop + 1))
    x0 = int(rng.integers(0, width - crop + 1))
    return y0, x0


def _fit_min_side(image, crop):
    """Upscale an image whose short side is below ``crop`` (no padding: padding adds edges)."""
    h, w = image.shape[:2]
    if min(h, w) >= crop:
        return image
    scale = crop / min(h, w)
    size = (max(crop, int(round(w * scale))), max(crop, int(round(h * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)


def _is_video(path):
    return path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES


class SyntheticPairs(Dataset):
    """
    Synthetic (degraded, clean) pairs from clean images or video frames.

    Each item takes one source image, a random crop (upscaled first when the image is smaller),
    a random horizontal flip, a random condition and random weather, all drawn from
    ``(seed, epoch, index)``, so an item is reproducible and DataLoader workers need no seeding.

    Args:
        images_or_video (`str`, `Path` or a list of them): image folders, image files and/or
            video files (frames are decoded once, every ``video_stride``-th frame, resized to a
            long side of at most ``max_side``).
        crop (`int`, defaults to 256): crop size in pixels; a multiple of ``cell`` keeps the
            quality grid whole.
        seed (`int`, defaults to 0): base seed.
        conditions (`tuple[str]`, defaults to all twelve): conditions to draw from.
        severity (`float`, `dict` or None): as in `synthesize` (None = random).
        cell (`int`, defaults to 64): quality grid cell.
        layers (`WeatherLayers`, *optional*): real rain/snow masks.
        length (`int`, *optional*): items per epoch; defaults to the number of source images.
        flip (`bool`, defaults to True): random horizontal flips.
        video_stride (`int`, defaults to 5), max_side (`int`, defaults to 960): video decoding.
        exclude (`iterable[str]`, *optional*): file names (not paths) to leave out.

    Items:
        ``lq``/``gt`` (3, crop, crop) float32 tensors; ``quality`` (gh, gw) float32 tensor;
        ``types`` (gh, gw, 4) float32 tensor; ``severity`` (4, crop, crop) float32 tensor in
        DEGRADATION_TYPES order; ``condition`` (str); ``condition_id`` (int, index in CONDITIONS);
        ``path`` (str).
    """

    def __init__(self, images_or_video, crop=256, seed=0, conditions=CONDITIONS, severity=None,
                 cell=64, layers=None, length=None, flip=True, video_stride=5, max_side=960,
                 exclude=()):
        if int(crop) <= 0:
            raise ValueError(f'crop must be positive, got {crop}')
        self.crop = int(crop)
        self.seed = int(seed)
        self.conditions = tuple(conditions)
        if not self.conditions:
            raise ValueError('conditions must not be empty')
        for name in self.conditions:
            check_condition(name)
        self.severity = severity
        self.cell = int(cell)
        self.layers = layers
        self.flip = bool(flip)
        self.epoch = 0
        sources = images_or_video if isinstance(images_or_video, (list, tuple)) else [
            images_or_video]
        exclude = set(exclude)
        self.files = []
        self.frames = []
        for source in sources:
            path = Path(source).expanduser()
            if path.is_dir():
                self.files.extend(p for p in list_images(path) if p.name not in exclude)
            elif _is_video(path):
                frames = FrameSource(path, stride=video_stride)
                for frame in frames:
                    self.frames.append((self._shrink(frame.image, max_side), frame.name))
            elif path.is_file():
                if path.name not in exclude:
                    self.files.append(path)
            else:
                raise FileNotFoundError(f'synthetic pair source {str(path)!r} does not exist')
        self.count = len(self.files) + len(self.frames)
        if self.count == 0:
            raise ValueError(f'no clean images found in {sources}')
        self.length = self.count if length is None else int(length)
        if self.length <= 0:
            raise ValueError(f'length must be positive, got {length}')

    @staticmethod
    def _shrink(image, max_side):
        h, w = image.shape[:2]
        if max_side and max(h, w) > max_side:
            scale = max_side / max(h, w)
            image = cv2.resize(image, (round(w * scale), round(h * scale)),
                               interpolation=cv2.INTER_AREA)
        return image

    def set_epoch(self, epoch):
        """Draw different crops and weather for the next epoch (same seed, same sequence)."""
        self.epoch = int(epoch)

    def __len__(self):
        return self.length

    def source(self, index):
        """(clean uint8 RGB image, name) of source ``index`` (0 <= index < self.count)."""
        if index < len(self.files):
            path = self.files[index]
            return read_image(path), str(path)
        image, name = self.frames[index - len(self.files)]
        return image, name

    def __getitem__(self, index):
        if not 0 <= index < self.length:
            raise IndexError(f'index {index} out of range for {self.length} items')
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, name = self.source(index % self.count)
        image = _fit_min_side(image, self.crop)
        y0, x0 = _random_window(rng, image.shape[0], image.shape[1], self.crop)
        clean = image[y0:y0 + self.crop, x0:x0 + self.crop]
        if self.flip and rng.random() < 0.5:
            clean = clean[:, ::-1]
        clean = np.ascontiguousarray(clean)
        condition = self.conditions[int(rng.integers(len(self.conditions)))]
        sample = synthesize(clean, condition, rng, severity=self.severity, cell=self.cell,
                            layers=self.layers)
        severity = np.stack([sample.severity[k] for k in DEGRADATION_TYPES])
        return {
            'lq': to_tensor(sample.degraded),
            'gt': to_tensor(sample.clean),
            'quality': torch.from_numpy(sample.quality),
            'types': torch.from_numpy(sample.types),
            'severity': torch.from_numpy(severity),
            'condition': condition,
            'condition_id': CONDITIONS.index(condition),
            'path': name,
        }


def _partner(folder, name):
    """The file in ``folder`` with the same name, or the same stem and any image suffix."""
    exact = folder / name
    if exact.is_file():
        return exact
    stem = Path(name).stem
    matches = sorted(p for p in folder.glob(f'{stem}.*') if p.suffix.lower() in IMAGE_SUFFIXES)
    return matches[0] if matches else None


class PairedFolder(Dataset):
    """
    Real (degraded, clean) pairs: ``root/degraded/NAME`` and ``root/clean/NAME``.

    Partners match by file name (or by stem when the suffixes differ). A degraded image without a
    clean partner raises `FileNotFoundError` at construction, and a size mismatch raises
    `ValueError` when the item is read.

    Args:
        root (`str` or `Path`): folder holding the two sub-folders.
        degraded (`str`, defaults to 'degraded'), clean (`str`, defaults to 'clean'): their names.
        crop (`int`, *optional*): random crop size (the same window in both images).
        flip (`bool`, defaults to False): random horizontal flips.
        seed (`int`, defaults to 0): seed for crops and flips.

    Items:
        ``lq``/``gt`` (3, H, W) float32 tensors in [0, 1] RGB; ``lq_path``/``gt_path`` (str).
    """

    def __init__(self, root, degraded='degraded', clean='clean', crop=None, flip=False, seed=0):
        self.root = Path(root).expanduser()
        lq_dir, gt_dir = self.root / degraded, self.root / clean
        for folder in (lq_dir, gt_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f'paired folder {str(folder)!r} does not exist')
        self.pairs = []
        for lq in list_images(lq_dir):
            gt = _partner(gt_dir, lq.name)
            if gt is None:
                raise FileNotFoundError(
                    f'{lq.name} in {str(lq_dir)!r} has no clean partner in {str(gt_dir)!r}')
            self.pairs.append((lq, gt))
        self.crop = None if crop is None else int(crop)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        lq_path, gt_path = self.pairs[index]
        lq, gt = read_image(lq_path), read_image(gt_path)
        if lq.shape != gt.shape:
            raise ValueError(f'{lq_path.name}: degraded {lq.shape} and clean {gt.shape} differ')
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.crop is not None:
            if min(lq.shape[:2]) < self.crop:
                raise ValueError(f'{lq_path.name} ({lq.shape[1]}x{lq.shape[0]}) is smaller than '
                                 f'crop {self.crop}')
            y0, x0 = _random_window(rng, lq.shape[0], lq.shape[1], self.crop)
            lq = lq[y0:y0 + self.crop, x0:x0 + self.crop]
            gt = gt[y0:y0 + self.crop, x0:x0 + self.crop]
        if self.flip and rng.random() < 0.5:
            lq, gt = lq[:, ::-1], gt[:, ::-1]
        return {'lq': to_tensor(lq), 'gt': to_tensor(gt), 'lq_path': str(lq_path),
                'gt_path': str(gt_path)}


def parse_yolo_labels(path, width, height):
    """
    Read a YOLO label file -> (boxes (N, 4) float32 xyxy pixels, class_ids (N,) int64).

    Lines are ``class cx cy w h`` normalised to [0, 1]; extra values (segments) are ignored and a
    malformed line raises `ValueError` naming the file and line.
    """
    boxes, classes = [], []
    text = Path(path).read_text()
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls = int(float(parts[0]))
            cx, cy, bw, bh = (float(v) for v in parts[1:5])
        except ValueError as exc:
            raise ValueError(f'{path}:{number}: cannot parse YOLO label {line!r}') from exc
        if len(parts) < 5 or cls < 0 or min(bw, bh) < 0:
            raise ValueError(f'{path}:{number}: expected "class cx cy w h", got {line!r}')
        boxes.append(((cx - bw / 2) * width, (cy - bh / 2) * height,
                      (cx + bw / 2) * width, (cy + bh / 2) * height))
        classes.append(cls)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return boxes, np.asarray(classes, dtype=np.int64)


class YoloFolder(Dataset):
    """
    Images with YOLO labels: ``images/NAME.jpg`` and ``labels/NAME.txt``.

    As in ultralytics, an image without a label file has no objects; ``strict=True`` raises
    `FileNotFoundError` instead.

    Args:
        images (`str` or `Path`): image folder.
        labels (`str` or `Path`, *optional*): label folder; defaults to ``images/../labels``.
        strict (`bool`, defaults to False): require a label file per image.

    Items:
        ``image`` (H, W, 3) uint8 RGB ndarray; ``boxes`` (N, 4) float32 xyxy pixels;
        ``class_ids`` (N,) int64; ``path`` (str).
    """

    def __init__(self, images, labels=None, strict=False):
        self.images_dir = Path(images).expanduser()
        self.labels_dir = (self.images_dir.parent / 'labels' if labels is None
                           else Path(labels).expanduser())
        self.files = list_images(self.images_dir)
        if strict:
            missing = [p.name for p in self.files if not self.label_path(p).is_file()]
            if missing:
                raise FileNotFoundError(f'{len(missing)} images have no label file in '
                                        f'{str(self.labels_dir)!r}, e.g. {missing[0]}')

    def label_path(self, image_path):
        return self.labels_dir / (Path(image_path).stem + '.txt')

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        path = self.files[index]
        image = read_image(path)
        label = self.label_path(path)
        if label.is_file():
            boxes, class_ids = parse_yolo_labels(label, image.shape[1], image.shape[0])
        else:
            boxes, class_ids = np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
        return {'image': image, 'boxes': boxes, 'class_ids': class_ids, 'path': str(path)}


def _write_png(path, image_rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f'cannot write {path}')


def build_heldout_set(clean_dir, out_dir, n, seed, conditions=CONDITIONS, severity=None,
                      cell=64, layers=None, overwrite=False):
    """
    Write a fixed held-out composite set: ``n`` clean images x the conditions, with a manifest.

    The ``n`` images are a seeded choice from the sorted images of ``clean_dir``; each
    (image, condition) pair uses its own seed derived from (seed, image index, condition index),
    so the frames do not depend on the order of generation.

    Layout under ``out_dir``: ``clean/NAME.png``, ``<condition>/NAME.png``,
    ``gt/<condition>/NAME.npz`` (``quality`` (gh, gw), ``types`` (gh, gw, 4)) and
    ``manifest.json`` with the settings and one entry per degraded frame (relative paths, mean
    severity per type, mean quality).

    Args:
        clean_dir (`str` or `Path`): folder of clean images (e.g. bsds500/val).
        out_dir (`str` or `Path`): output folder (created).
        n (`int`): number of clean images (at most the number available).
        seed (`int`): selection and weather seed.
        conditions, severity, cell, layers: as in `synthesize`.
        overwrite (`bool`, defaults to False): allow a non-empty ``out_dir``.

    Returns:
        `dict`: the manifest (also written to ``out_dir/manifest.json``).
    """
    clean_dir, out_dir = Path(clean_dir).expanduser(), Path(out_dir).expanduser()
    files = list_images(clean_dir)
    n = int(n)
    if not 1 <= n <= len(files):
        raise ValueError(f'n must be in [1, {len(files)}] for {str(clean_dir)!r}, got {n}')
    conditions = tuple(conditions)
    for name in conditions:
        check_condition(name)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f'{str(out_dir)!r} is not empty (pass overwrite=True)')
    rng = np.random.default_rng(int(seed))
    chosen = sorted(int(i) for i in rng.permutation(len(files))[:n])
    items = []
    for i in chosen:
        path = files[i]
        clean = read_image(path)
        name = path.stem + '.png'
        _write_png(out_dir / 'clean' / name, clean)
        for condition in conditions:
            sample = synthesize(clean, condition, [int(seed), i, CONDITIONS.index(condition)],
                                severity=severity, cell=cell, layers=layers)
            _write_png(out_dir / condition / name, sample.degraded)
            gt = out_dir / 'gt' / condition / (path.stem + '.npz')
            gt.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(gt, quality=sample.quality, types=sample.types)
            items.append({
                'id': f'{condition}/{path.stem}',
                'condition': condition,
                'source': path.name,
                'clean': f'clean/{name}',
                'degraded': f'{condition}/{name}',
                'gt': f'gt/{condition}/{path.stem}.npz',
                'severity': {k: round(float(sample.severity[k].mean()), 4)
                             for k in DEGRADATION_TYPES},
                'mean_quality': round(float(sample.quality.mean()), 4),
            })
    manifest = {
        'version': MANIFEST_VERSION,
        'seed': int(seed),
        'n': n,
        'cell': int(cell),
        'conditions': list(conditions),
        'severity': severity,
        'real_layers': layers is not None,
        'source_dir': clean_dir.name,
        'items': items,
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return manifest


def load_manifest(path):
    """Read a held-out manifest (``path`` is the manifest or its folder) -> (dict, folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f'no held-out manifest at {str(path)!r}')
    manifest = json.loads(path.read_text())
    if manifest.get('version') != MANIFEST_VERSION:
        raise ValueError(f'{path}: manifest version {manifest.get("version")!r}, expected '
                         f'{MANIFEST_VERSION}')
    return manifest, path.parent


class HeldoutSet(Dataset):
    """
    The frames written by `build_heldout_set`, read back in manifest order.

    Args:
        path (`str` or `Path`): the held-out folder or its manifest.json.
        conditions (`iterable[str]`, *optional*): keep only these conditions.

    Items:
        ``lq``/``gt`` (3, H, W) float32 tensors; ``quality`` (gh, gw) and ``types`` (gh, gw, 4)
        float32 tensors; ``condition``, ``id``, ``lq_path``, ``gt_path`` (str).
    """

    def __init__(self, path, conditions=None):
        self.manifest, self.root = load_manifest(path)
        items = self.manifest['items']
        if conditions is not None:
            wanted = set(conditions)
            for name in wanted:
                check_condition(name)
            items = [item for item in items if item['condition'] in wanted]
        self.items = items
        self.cell = int(self.manifest['cell'])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        lq_path, gt_path = self.root / item['degraded'], self.root / item['clean']
        with np.load(self.root / item['gt']) as gt:
            quality, types = gt['quality'], gt['types']
        return {'lq': to_tensor(read_image(lq_path)), 'gt': to_tensor(read_image(gt_path)),
                'quality': torch.from_numpy(quality), 'types': torch.from_numpy(types),
                'condition': item['condition'], 'id': item['id'], 'lq_path': str(lq_path),
                'gt_path': str(gt_path)}

"""
Offline YOLO detection returning plain dataclasses (no ROS, no plotting, no downloads).

Any format ultralytics loads works (.pt, .onnx, OpenVINO folder, TensorRT .engine). The model
path is always explicit: `find_detector` looks at a flag, $ADAQUAL_DETECTOR and the assets folder,
and returns None (it never falls back to a model name that ultralytics would download).
"""
from dataclasses import dataclass, field
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from adaqual_ros.assets import asset_path

DETECTOR_ENV = 'ADAQUAL_DETECTOR'
ASSETS_DETECTOR = 'models/yolov8n_int8.onnx'
NO_DETECTOR_MESSAGE = (
    'no YOLO detector found offline: pass --detector PATH (a .pt/.onnx/OpenVINO/TensorRT model), '
    f'set ${DETECTOR_ENV}, or set $ADAQUAL_ASSETS to a folder holding {ASSETS_DETECTOR}'
)

_LOG = logging.getLogger(__name__)


class DetectorError(RuntimeError):
    """The detector could not be found, loaded or run."""


@dataclass
class Detections:
    """
    Detections of one image, in that image's pixel coordinates.

    Args:
        boxes (`np.ndarray` of shape `(N, 4)`, float32): boxes as x1, y1, x2, y2 in pixels.
        scores (`np.ndarray` of shape `(N,)`, float32): confidences in [0, 1].
        class_ids (`np.ndarray` of shape `(N,)`, int64): class indices into `names`.
        names (`dict[int, str]`): the detector's class names.
        image_size (`tuple[int, int]`): (H, W) of the image the boxes refer to.
        speed_ms (`dict[str, float]`, *optional*): ultralytics' per-stage times in ms.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: dict
    image_size: tuple
    speed_ms: dict = field(default_factory=dict)

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        if not (len(self.boxes) == len(self.scores) == len(self.class_ids)):
            raise ValueError(
                f'Detections: {len(self.boxes)} boxes, {len(self.scores)} scores and '
                f'{len(self.class_ids)} class ids must have the same length')
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def __len__(self):
        return len(self.boxes)

    @property
    def labels(self):
        """Class names of the boxes, in order."""
        return [self.names.get(int(c), str(int(c))) for c in self.class_ids]

    def above(self, min_score):
        """The detections scoring at least `min_score` (a new object)."""
        keep = self.scores >= float(min_score)
        return Detections(self.boxes[keep], self.scores[keep], self.class_ids[keep], self.names,
                          self.image_size, dict(self.speed_ms))

    @classmethod
    def empty(cls, image_size, names=None):
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), dict(names or {}), image_size)

    def to_dict(self):
        """JSON-ready dict (the detection node's message body and the evaluation cache)."""
        return {
            'image_size': list(self.image_size),
            'detections': [
                {'bbox_xyxy': [round(float(v), 2) for v in box], 'score': round(float(s), 5),
                 'class_id': int(c), 'label': self.names.get(int(c), str(int(c)))}
                for box, s, c in zip(self.boxes, self.scores, self.class_ids)
            ],
            'speed_ms': {k: round(float(v), 3) for k, v in self.speed_ms.items()},
        }

    @classmethod
    def from_dict(cls, data, names=None):
        """Inverse of `to_dict` (names are rebuilt from the labels when not given)."""
        if 'detections' not in data or 'image_size' not in data:
            raise ValueError('detections dict needs "detections" and "image_size" keys')
        items = data['detections']
        found = {int(d['class_id']): d.get('label', str(d['class_id'])) for d in items}
        return cls(
            boxes=np.array([d['bbox_xyxy'] for d in items], dtype=np.float32).reshape(-1, 4),
            scores=np.array([d['score'] for d in items], dtype=np.float32),
            class_ids=np.array([d['class_id'] for d in items], dtype=np.int64),
            names=dict(names) if names is not None else found,
            image_size=tuple(data['image_size']),
            speed_ms=dict(data.get('speed_ms', {})),
        )


def find_detector(explicit=None):
    """
    Return the path of a local YOLO model, or None (with a logged reason) when there is none.

    Order: `explicit` (a CLI flag or ROS parameter), $ADAQUAL_DETECTOR, then
    $ADAQUAL_ASSETS/models/yolov8n_int8.onnx. Never downloads. An explicit path or env value that
    does not exist raises FileNotFoundError instead of silently falling through.
    """
    for source, value in (('explicit path', explicit), (f'${DETECTOR_ENV}',
                                                         os.environ.get(DETECTOR_ENV))):
        if value:
            path = Path(value).expanduser()
            if not path.exists():
                raise FileNotFoundError(f'detector {source} {str(path)!r} does not exist')
            return path.resolve()
    path = asset_path(ASSETS_DETECTOR)
    if path is not None:
        return Path(path).resolve()
    _LOG.warning(NO_DETECTOR_MESSAGE)
    return None


def _resolve_device(device):
    if device in (None, '', 'auto'):
        import torch
        return 'cuda:0' if torch.cuda.is_available() else 'cpu'
    return str(device)


class Detector:
    """
    A YOLO model loaded from a local file, returning `Detections`.

    Args:
        path (`str` or `Path`): model file or export folder; must exist (nothing is downloaded).
        conf (`float`, *optional*, defaults to 0.25): minimum confidence.
        iou (`float`, *optional*, defaults to 0.7): NMS IoU threshold.
        imgsz (`int`, *optional*, defaults to 640): inference size (fixed exports keep theirs).
        device (`str`, *optional*, defaults to 'cpu'): 'cpu', 'cuda', 'cuda:N' or 'auto'.
        half (`bool`, *optional*, defaults to False): fp16 inference (CUDA only).
        classes (`list[int]`, *optional*): keep only these class ids.
        max_det (`int`, *optional*, defaults to 300): most boxes per image.

    Example:
        >>> det = Detector(find_detector(), conf=0.25)
        >>> dets = det.detect(rgb_uint8)          # one HxWx3 RGB image -> Detections
        >>> batch = det.detect([rgb1, rgb2])      # list -> list[Detections]
    """

    def __init__(self, path, conf=0.25, iou=0.7, imgsz=640, device='cpu', half=False,
                 classes=None, max_det=300):
        if path is None:
            raise DetectorError(NO_DETECTOR_MESSAGE)
        path = Path(path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f'detector model {str(path)!r} does not exist')
        if not 0.0 <= float(conf) <= 1.0:
            raise ValueError(f'conf must be in [0, 1], got {conf}')
        if not 0.0 < float(iou) <= 1.0:
            raise ValueError(f'iou must be in (0, 1], got {iou}')
        if int(imgsz) < 32:
            raise ValueError(f'imgsz must be >= 32, got {imgsz}')
        if int(max_det) < 1:
            raise ValueError(f'max_det must be >= 1, got {max_det}')
        # adaqual_ros/__init__.py (already imported) set YOLO_OFFLINE before this import.
        from ultralytics import YOLO

        self.path = path
        self.conf = float(conf)
        self.iou = float(iou)
        self.imgsz = int(imgsz)
        self.device = _resolve_device(device)
        self.half = bool(half) and self.device.startswith('cuda')
        self.classes = [int(c) for c in classes] if classes else None
        self.max_det = int(max_det)
        try:
            self.model = YOLO(str(path), task='detect')
        except Exception as exc:  # ultralytics raises many types; keep the cause
            raise DetectorError(f'cannot load detector {str(path)!r}: {exc}') from exc
        self.names = {int(k): str(v) for k, v in dict(self.model.names).items()}

    def warmup(self, size=(64, 64)):
        """Run one dummy image so the first real frame does not pay for the lazy model load."""
        self._predict([np.zeros((*size, 3), np.uint8)])
        return self

    def _predict(self, bgr_list):
        kwargs = {'conf': self.conf, 'iou': self.iou, 'imgsz': self.imgsz,
                  'device': self.device, 'classes': self.classes, 'max_det': self.max_det,
                  'verbose': False, 'save': False, 'stream': False}
        if self.half:  # passing half=False still triggers a deprecation warning per call
            kwargs['half'] = True
        return self.model.predict(bgr_list, **kwargs)

    def detect(self, rgb_or_batch, color_order='rgb'):
        """
        Detect objects in one image or a list of images.

        Args:
            rgb_or_batch (`np.ndarray` HxWx3 uint8, or a list of them / an (B,H,W,3) array):
                images in `color_order` (RGB by default; mono HxW is accepted too).
            color_order (`str`, *optional*, defaults to 'rgb'): 'rgb' or 'bgr'.

        Returns:
            `Detections` for one image, `list[Detections]` for a batch.
        """
        if color_order not in ('rgb', 'bgr'):
            raise ValueError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
        single = isinstance(rgb_or_batch, np.ndarray) and rgb_or_batch.ndim in (2, 3)
        images = [rgb_or_batch] if single else list(rgb_or_batch)
        if not images:
            return []
        bgr = [self._to_bgr(im, color_order) for im in images]
        results = self._predict(bgr)
        out = [self._to_detections(r, im.shape[:2]) for r, im in zip(results, bgr)]
        return out[0] if single else out

    @staticmethod
    def _to_bgr(image, color_order):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f'detector input must be uint8, got {image.dtype}')
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f'detector input must be HxW, HxWx3 or HxWx4, got {image.shape}')
        image = image[..., :3]
        # ultralytics treats numpy input as BGR: convert here, nowhere else.
        return np.ascontiguousarray(image[..., ::-1] if color_order == 'rgb' else image)

    def _to_detections(self, result, image_size):
        boxes = result.boxes
        return Detections(
            boxes=boxes.xyxy.cpu().numpy() if len(boxes) else np.zeros((0, 4)),
            scores=boxes.conf.cpu().numpy() if len(boxes) else np.zeros(0),
            class_ids=boxes.cls.cpu().numpy() if len(boxes) else np.zeros(0),
            names=self.names, image_size=image_size, speed_ms=dict(result.speed or {}))


def _color(class_id):
    # A fixed, well-spread palette: the same class always gets the same colour.
    hue = (int(class_id) * 47) % 180
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_detections(rgb, detections, thickness=2):
    """
    Return a copy of `rgb` (HxWx3 uint8) with boxes and labels drawn with OpenCV.

    OpenCV's Hershey font needs no font file, unlike ultralytics' plotting (which may fetch one).
    """
    image = np.ascontiguousarray(np.array(rgb, dtype=np.uint8, copy=True))
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'draw_detections needs an HxWx3 image, got {image.shape}')
    scale = max(0.4, min(image.shape[:2]) / 900.0)
    for box, score, cls, label in zip(detections.boxes, detections.scores,
                                      detections.class_ids, detections.labels):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        color = _color(cls)
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
        text = f'{label} {score:.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(y1 - th - base - 2, 0)
        cv2.rectangle(image, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
        cv2.putText(image, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return image

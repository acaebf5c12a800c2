"""
Detection quality (precision, recall, mAP50, mAP50-95) accumulated image by image.

The matching (`DetectionValidator.match_predictions`), IoU (`box_iou`) and AP/PR computation
(`DetMetrics` -> `ap_per_class`) are ultralytics' own, so the numbers agree with `yolo val`
given the same predictions. Ground truth is either labels (YOLO txt files) or, for unlabelled
video, the detector's own boxes on the clean frames.
"""
from pathlib import Path
from types import SimpleNamespace

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
METRIC_KEYS = ('precision', 'recall', 'mAP50', 'mAP50-95')


def load_yolo_labels(path, image_size):
    """
    Read one YOLO label file into pixel boxes.

    Args:
        path (`str` or `Path`): text file with lines `class cx cy w h` (normalised to [0, 1]).
            A missing file means "no objects" (YOLO's convention for background images).
        image_size (`tuple[int, int]`): (H, W) of the image.

    Returns:
        `(boxes, class_ids)`: (N, 4) float32 x1 y1 x2 y2 in pixels and (N,) int64.
    """
    h, w = int(image_size[0]), int(image_size[1])
    path = Path(path)
    if not path.exists():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5:
            raise ValueError(f'{path}:{n}: a YOLO label needs "class cx cy w h", got {line!r}')
        try:
            rows.append([float(v) for v in parts[:5]])
        except ValueError:
            raise ValueError(f'{path}:{n}: non-numeric YOLO label {line!r}') from None
    if not rows:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    arr = np.array(rows, dtype=np.float64)
    cx, cy, bw, bh = arr[:, 1] * w, arr[:, 2] * h, arr[:, 3] * w, arr[:, 4] * h
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    return boxes.astype(np.float32), arr[:, 0].astype(np.int64)


def match_detections(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes):
    """
    Mark each prediction correct or not at the 10 IoU thresholds 0.50:0.95 (ultralytics' rule).

    Returns:
        `(tp, order)`: tp (N, 10) bool in descending-confidence order, and that order (indices).
    """
    import torch
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils.metrics import box_iou

    pred_scores = np.asarray(pred_scores, np.float32).reshape(-1)
    order = np.argsort(-pred_scores, kind='stable')
    n = len(order)
    if n == 0 or len(gt_classes) == 0:
        return np.zeros((n, len(IOU_THRESHOLDS)), bool), order
    pb = torch.as_tensor(np.asarray(pred_boxes, np.float32).reshape(-1, 4)[order])
    pc = torch.as_tensor(np.asarray(pred_classes, np.float32).reshape(-1)[order])
    gb = torch.as_tensor(np.asarray(gt_boxes, np.float32).reshape(-1, 4))
    gc = torch.as_tensor(np.asarray(gt_classes, np.float32).reshape(-1))
    iou = box_iou(gb, pb)
    # match_predictions only reads `self.iouv`; calling it unbound avoids building a validator
    # (whose constructor creates a run folder on disk).
    holder = SimpleNamespace(iouv=torch.as_tensor(IOU_THRESHOLDS, dtype=torch.float32))
    tp = DetectionValidator.match_predictions(holder, pc, gc, iou)
    return np.asarray(tp.cpu().numpy() if hasattr(tp, 'cpu') else tp, bool), order


class DetectionAccumulator:
    """
    Collect per-image predictions against ground truth, then compute detection metrics.

    Args:
        names (`dict[int, str]`, *optional*): the detector's class names (per-class rows).

    Example:
        >>> acc = DetectionAccumulator(detector.names)
        >>> acc.add(dets.boxes, dets.scores, dets.class_ids, gt_boxes, gt_classes)
        >>> acc.compute()['mAP50']
    """

    def __init__(self, names=None):
        self.names = {int(k): str(v) for k, v in dict(names or {}).items()}
        self.clear()

    def clear(self):
        self._tp, self._conf, self._pred_cls, self._target_cls = [], [], [], []
        self._target_img = []
        self.images = 0

    def __len__(self):
        return self.images

    def add(self, pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes):
        """Add one image: predictions (xyxy pixels, scores, classes) and its ground truth."""
        pred_boxes = np.asarray(pred_boxes, np.float32).reshape(-1, 4)
        pred_scores = np.asarray(pred_scores, np.float32).reshape(-1)
        pred_classes = np.asarray(pred_classes, np.int64).reshape(-1)
        gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
        gt_classes = np.asarray(gt_classes, np.int64).reshape(-1)
        if not len(pred_boxes) == len(pred_scores) == len(pred_classes):
            raise ValueError(f'predictions disagree in length: {len(pred_boxes)} boxes, '
                             f'{len(pred_scores)} scores, {len(pred_classes)} classes')
        if len(gt_boxes) != len(gt_classes):
            raise ValueError(f'ground truth disagrees in length: {len(gt_boxes)} boxes, '
                             f'{len(gt_classes)} classes')
        tp, order = match_detections(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes)
        self._tp.append(tp)
        self._conf.append(pred_scores[order])
        self._pred_cls.append(pred_classes[order].astype(np.float64))
        self._target_cls.append(gt_classes.astype(np.float64))
        self._target_img.append(np.unique(gt_classes).astype(np.float64))
        self.images += 1
        return tp

    def add_detections(self, pred, reference, reference_conf=0.0):
        """
        Add one image given two `Detections`: `reference` (labels or clean-frame boxes) is truth.

        Reference boxes below `reference_conf` are ignored (clean-frame detections carry scores).
        """
        keep = reference.scores >= reference_conf if len(reference) else slice(None)
        return self.add(pred.boxes, pred.scores, pred.class_ids, reference.boxes[keep],
                        reference.class_ids[keep])

    def compute(self, operating_conf=0.25):
        """
        Return the metrics as a JSON-ready dict.

        Keys: 'precision', 'recall', 'mAP50', 'mAP50-95' (overall: ultralytics' mean over the
        classes present in the ground truth, precision and recall at the confidence of best
        mean F1), 'images', 'instances', 'predictions', 'per_class' {name: {the four metrics,
        'instances'}}, and 'operating_point': {'conf', 'precision', 'recall', 'tp'} pooled over
        all objects for the boxes at or above `operating_conf` (IoU 0.5) — what a deployed
        detector with that threshold delivers.
        """
        from ultralytics.utils.metrics import DetMetrics

        result = dict.fromkeys(METRIC_KEYS, 0.0)
        op = {'conf': float(operating_conf), 'precision': 0.0, 'recall': 0.0, 'tp': 0}
        result.update(images=self.images, instances=0, predictions=0, per_class={},
                      operating_point=op)
        if not self.images:
            return result
        target_cls = np.concatenate(self._target_cls)
        pred_cls = np.concatenate(self._pred_cls)
        result.update(instances=int(len(target_cls)), predictions=int(len(pred_cls)))
        kept = np.concatenate(self._conf) >= operating_conf
        hits = int(np.concatenate(self._tp)[kept, 0].sum()) if kept.any() else 0
        op.update(tp=hits, precision=hits / int(kept.sum()) if kept.any() else 0.0,
                  recall=hits / len(target_cls) if len(target_cls) else 0.0)
        if not len(target_cls):
            return result
        names = dict(self.names)
        for c in np.unique(np.concatenate([target_cls, pred_cls])).astype(int):
            names.setdefault(int(c), str(int(c)))
        # DetMetrics indexes names by class id up to the largest one.
        names = {i: names.get(i, str(i)) for i in range(max(names) + 1)}
        metrics = DetMetrics(names=names)
        metrics.stats = {
            'tp': [np.concatenate(self._tp)], 'conf': [np.concatenate(self._conf)],
            'pred_cls': [pred_cls], 'target_cls': [target_cls],
            'target_img': [np.concatenate(self._target_img)],
        }
        metrics.process(plot=False)
        p, r, m50, m = metrics.mean_results()
        result.update(precision=float(p), recall=float(r), mAP50=float(m50),
                      **{'mAP50-95': float(m)})
        counts = np.bincount(target_cls.astype(int))
        for i, c in enumerate(metrics.ap_class_index):
            cp, cr, c50, cm = metrics.class_result(i)
            result['per_class'][names[int(c)]] = {
                'precision': float(cp), 'recall': float(cr), 'mAP50': float(c50),
                'mAP50-95': float(cm), 'instances': int(counts[int(c)]), 'class_id': int(c)}
        return result

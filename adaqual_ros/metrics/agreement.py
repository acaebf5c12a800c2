"""
Raw vs restored detections on the same frames, without ground truth: what a robot can measure.

On a camera with no labels and no clean reference, accuracy cannot be scored, but agreement can:
objects both streams see (matched one to one, same class, IoU >= 0.5), objects only restoration
finds, objects restoration loses, and the confidence of the objects both see. More objects is
not proof of better detection (some may be false), so these are reported as counts, next to
accuracy wherever a reference exists.
"""
import numpy as np


def match_pairs(boxes_a, classes_a, boxes_b, classes_b, iou=0.5):
    """
    One-to-one matches between two sets of boxes of the same class, greedily by IoU.

    Not `metrics.detection.match_detections`: ultralytics' matcher marks predictions correct
    but returns no pairs, and the confidence of an object in both streams needs the pairs.

    Returns:
        `list[tuple[int, int]]`: (index in a, index in b) pairs with IoU >= `iou`.
    """
    import torch
    from ultralytics.utils.metrics import box_iou

    if not len(boxes_a) or not len(boxes_b):
        return []
    overlap = box_iou(torch.as_tensor(np.asarray(boxes_a, np.float32).reshape(-1, 4)),
                      torch.as_tensor(np.asarray(boxes_b, np.float32).reshape(-1, 4))).numpy()
    overlap[np.asarray(classes_a)[:, None] != np.asarray(classes_b)[None, :]] = 0.0
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-overlap, axis=None, kind='stable'):
        i, j = divmod(int(flat), overlap.shape[1])
        if overlap[i, j] < iou:
            break
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    return pairs


class AgreementAccumulator:
    """
    Agreement of raw and restored detections, frame by frame.

    Args:
        conf (`float`, *optional*, defaults to 0.25): detections below this confidence are not
            counted (the detector's operating point).
        iou (`float`, *optional*, defaults to 0.5): IoU for two boxes to be the same object.
        names (`dict[int, str]`, *optional*): class names for the per-class rows.
    """

    def __init__(self, conf=0.25, iou=0.5, names=None):
        self.conf, self.iou = float(conf), float(iou)
        self.names = {int(k): str(v) for k, v in dict(names or {}).items()}
        self.images = 0
        self._classes = {}  # class id -> [raw, restored, matched]
        # sums, not lists: a node may count for hours
        self._conf_raw = self._conf_restored = 0.0

    def add(self, raw, restored):
        """Add one frame's `Detections` of both streams."""
        raw, restored = raw.above(self.conf), restored.above(self.conf)
        pairs = match_pairs(raw.boxes, raw.class_ids, restored.boxes, restored.class_ids,
                            self.iou)
        for cls in raw.class_ids:
            self._classes.setdefault(int(cls), [0, 0, 0])[0] += 1
        for cls in restored.class_ids:
            self._classes.setdefault(int(cls), [0, 0, 0])[1] += 1
        for i, j in pairs:
            self._classes[int(raw.class_ids[i])][2] += 1
            self._conf_raw += float(raw.scores[i])
            self._conf_restored += float(restored.scores[j])
        self.images += 1
        return pairs

    def compute(self):
        """
        JSON-ready counts: 'images', 'conf', 'iou', 'raw_objects', 'restored_objects',
        'matched', 'only_raw' (lost by restoration), 'only_restored' (found by it),
        'matched_conf_raw' / 'matched_conf_restored' (mean confidence of the objects both
        streams see, None without any) and 'per_class' {name: the same counts}.
        """
        def counts(raw, restored, matched):
            return {'raw_objects': raw, 'restored_objects': restored, 'matched': matched,
                    'only_raw': raw - matched, 'only_restored': restored - matched}
        totals = np.sum(list(self._classes.values()), axis=0) if self._classes else (0, 0, 0)
        out = {'images': self.images, 'conf': self.conf, 'iou': self.iou,
               **counts(*(int(v) for v in totals))}
        matched = out['matched']
        out['matched_conf_raw'] = self._conf_raw / matched if matched else None
        out['matched_conf_restored'] = self._conf_restored / matched if matched else None
        out['per_class'] = {self.names.get(c, str(c)): counts(*v)
                            for c, v in sorted(self._classes.items())}
        return out

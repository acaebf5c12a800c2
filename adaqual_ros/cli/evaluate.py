"""
`adaqual evaluate`: detection before/after restoration, no ROS needed.

    adaqual evaluate labelled --images DIR --labels DIR --detector PATH --out DIR
    adaqual evaluate video --video PATH --condition haze,rain --severity 0.6 --out DIR
    adaqual evaluate bag --bag PATH --topic /camera/image_raw --out DIR

Rows: 'raw' (the frames as they are), then each restoration backend run through
`adaqual_ros.runtime.Restorer` ('classical', 'adaqual'; 'clahe' is plain OpenCV CLAHE, the
reference baseline). Labelled folders are scored against their YOLO labels; video (and bags
without labels) against the detector's own boxes on the clean frames, with synthetic weather
(`--condition`) applied before restoration. Writes report.json, report.md and PNG plots.
"""
import argparse
from pathlib import Path
import platform
import shlex
import sys
import time

import cv2
import numpy as np

from adaqual_ros.cli.restorer_options import (
    add_model_options,
    add_restorer_options,
    model_changes,
    resolved_options,
    restorer_changes,
)

DEFAULT_BACKENDS = 'raw,classical,adaqual'
KNOWN_BACKENDS = ('raw', 'clahe', 'classical', 'adaqual', 'passthrough')
SHOW_CONF = 0.25  # boxes drawn in frames.png: the usual deployment threshold, not val's 0.001


def add_arguments(parser):
    sub = parser.add_subparsers(dest='mode', required=True, metavar='{labelled,video,bag}')

    def common(p):
        p.add_argument('--detector', default=None,
                       help='YOLO model (.pt/.onnx/...); default $ADAQUAL_DETECTOR or the assets '
                            'detector')
        p.add_argument('--out', required=True, help='report folder')
        p.add_argument('--backends', default=DEFAULT_BACKENDS,
                       help=f'comma-separated rows among {", ".join(KNOWN_BACKENDS)} '
                            f'(default {DEFAULT_BACKENDS})')
        p.add_argument('--limit', type=int, default=None, help='use at most N frames/images')
        p.add_argument('--conf', type=float, default=0.001,
                       help='detector confidence threshold (0.001 as in `yolo val`)')
        p.add_argument('--iou', type=float, default=0.7, help='NMS IoU threshold')
        p.add_argument('--imgsz', type=int, default=640, help='detector input size')
        p.add_argument('--batch', type=int, default=8, help='images per detector call')
        add_model_options(p, device='cpu', threads=2)
        add_restorer_options(p)
        p.add_argument('--noise-seed', type=int, default=None,
                       help="base seed of the restorer's start noise (the node's `seed`, default "
                            '0): run a few to see how much a figure moves with the noise alone')
        p.add_argument('--no-plots', action='store_true', help='skip the PNG plots')
        p.add_argument('--strip', type=int, default=3,
                       help='frames shown side by side with their boxes in frames.png')

    def reference(p):
        p.add_argument('--condition', default='clean',
                       help='synthetic weather, one or several comma-separated (clean = none)')
        p.add_argument('--severity', type=float, default=None,
                       help='mean weather severity 0..1 (default: random per condition)')
        p.add_argument('--seed', type=int, default=0, help='weather seed')
        p.add_argument('--dim-haze', type=float, default=0.0,
                       help='share of haze lit as at dusk or at night (dim, blue or sodium '
                            'airlight), 0-1 (default 0: daylight haze)')
        p.add_argument('--reference-conf', type=float, default=0.25,
                       help='clean-frame detections at or above this count as objects')
        p.add_argument('--stride', type=int, default=1, help='use every N-th frame')
        p.add_argument('--width', type=int, default=0,
                       help='resize frames to this width first (0 = as is)')

    p = sub.add_parser('labelled', help='a YOLO-labelled image folder (mAP vs labels)')
    p.add_argument('--images', required=True, help='image folder')
    p.add_argument('--labels', required=True, help='YOLO label folder (same file stems)')
    common(p)
    p = sub.add_parser('video', help='a video with synthetic weather, vs clean-frame detections')
    p.add_argument('--video', required=True, help='video file or image folder')
    common(p)
    reference(p)
    p = sub.add_parser('bag', help='a ROS 2 MCAP bag image topic')
    p.add_argument('--bag', required=True, help='.mcap file (or a rosbag2 folder with one)')
    p.add_argument('--topic', default=None, help='image topic (default: the only one)')
    p.add_argument('--labels', default=None,
                   help='YOLO label folder, matched to frames by sorted order')
    common(p)
    reference(p)


# ---- rows (restoration backends) -------------------------------------------------------------

class Row:
    """One evaluated row: a name and a function rgb -> (rgb, ms, backend actually used)."""

    def __init__(self, name, args):
        self.name = name
        self.restorer = None
        self.used = set()
        self.note = ''
        if name in ('raw', 'clahe'):
            return
        from adaqual_ros.runtime import Restorer, RestorerSettings

        # the same knobs as the node's parameters; unset = the runtime's defaults
        settings = RestorerSettings(
            backend=name, half=False, **model_changes(args), **restorer_changes(args),
            **({} if args.noise_seed is None else {'seed': args.noise_seed}))
        try:
            self.restorer = Restorer(settings)
        except Exception as exc:  # noqa: BLE001 - retried below, and the reason is reported
            # An estimator asked for by name is not swapped; nor is the classical one.
            if args.quality_backend or settings.quality_backend == 'classical':
                raise
            # No learned-estimator weights yet: the no-weights estimator still lets the row run.
            self.restorer = Restorer(settings.with_changes(quality_backend='classical'))
            self.note = f'quality estimator fell back to classical ({exc})'
            print(f'adaqual evaluate: {name}: {self.note}', file=sys.stderr)

    def __call__(self, rgb, stream_id, stamp=None):
        """
        (image, ms, share of the pixels left untouched; None for raw and CLAHE). ``stamp``: the
        frame's time in its video or bag (seconds), so the quality cache does not follow the
        wall clock of this machine.
        """
        t0 = time.perf_counter()
        if self.name == 'raw':
            return rgb, 0.0, None
        if self.name == 'clahe':
            from adaqual_ros.runtime.classical import clahe_lightness  # torch-free until here

            out = clahe_lightness(rgb)  # the reference's plain CLAHE
            return out, (time.perf_counter() - t0) * 1e3, None
        result = self.restorer.restore(rgb, stream_id=stream_id, color_order='rgb', stamp=stamp)
        self.used.add(result.backend)
        return result.image, (time.perf_counter() - t0) * 1e3, result.skipped_fraction


def build_rows(args):
    """Return ([Row], {name: reason}) for the requested rows; unavailable ones are skipped."""
    names = [n.strip() for n in args.backends.split(',') if n.strip()]
    unknown = [n for n in names if n not in KNOWN_BACKENDS]
    if unknown:
        raise ValueError(f'unknown backend(s) {unknown}; valid: {", ".join(KNOWN_BACKENDS)}')
    if not names:
        raise ValueError('--backends names no rows')
    rows, skipped = [], {}
    for name in dict.fromkeys(names):
        try:
            rows.append(Row(name, args))
        except Exception as exc:  # noqa: BLE001 - report the row as unavailable, run the rest
            skipped[name] = f'{type(exc).__name__}: {exc}'
            print(f'adaqual evaluate: skipping {name}: {exc}', file=sys.stderr)
    if not rows:
        raise ValueError(f'no usable rows: {skipped}')
    return rows, skipped


# ---- the evaluation loop ---------------------------------------------------------------------

class Evaluation:
    """
    Accumulate every row against the ground truth, per condition and pooled.

    Args:
        detector (`Detector`): the detector (its names label the classes).
        rows (`list[Row]`): the rows to compare.
        batch (`int`): images per detector call.
        agree_conf (`float`): confidence from which each restored row's detections are matched
            to the raw row's on the same frame (agreement, no reference needed).
    """

    def __init__(self, detector, rows, batch=8, strip=0, agree_conf=0.25):
        from adaqual_ros.metrics.agreement import AgreementAccumulator
        from adaqual_ros.metrics.detection import DetectionAccumulator

        self._acc_type = DetectionAccumulator
        self.detector = detector
        self.rows = rows
        self.batch = max(1, int(batch))
        self.pooled = {r.name: DetectionAccumulator(detector.names) for r in rows}
        self.groups = {}
        self.restore_ms = {r.name: [] for r in rows}
        self.skipped = {}  # row -> 'all' / condition -> [share of pixels left untouched]
        self.detect_ms = []
        self._pending = []
        self.strip = int(strip)
        self.samples = []  # [[(caption, rgb with boxes)] per sampled frame], for the report
        names = [r.name for r in rows]
        self.agreement = ({n: AgreementAccumulator(agree_conf, names=detector.names)
                           for n in names if n != 'raw'} if 'raw' in names else {})

    def add(self, rgb, gt_boxes, gt_classes, stream_id, group=None, stamp=None):
        """Restore `rgb` with every row and queue it for detection against the ground truth."""
        for row in self.rows:
            image, ms, untouched = row(rgb, stream_id, stamp)
            self.restore_ms[row.name].append(ms)
            if untouched is not None:
                skipped = self.skipped.setdefault(row.name, {})
                for key in ('all',) if group is None else ('all', group):
                    skipped.setdefault(key, []).append(untouched)
            self._pending.append((row.name, group, image, gt_boxes, gt_classes))
        if len(self._pending) >= self.batch * len(self.rows):
            self.flush()

    def flush(self):
        if not self._pending:
            return
        t0 = time.perf_counter()
        dets = self.detector.detect([p[2] for p in self._pending])
        self.detect_ms.append((time.perf_counter() - t0) * 1e3 / len(self._pending))
        self._sample(dets)
        n = len(self.rows)  # pending items come frame by frame, one per row
        for start in range(0, len(self._pending), n):
            frame = {item[0]: d for item, d in zip(self._pending[start:start + n],
                                                   dets[start:start + n])}
            for name, acc in self.agreement.items():
                acc.add(frame['raw'], frame[name])
        for (name, group, _, gb, gc), d in zip(self._pending, dets):
            self.pooled[name].add(d.boxes, d.scores, d.class_ids, gb, gc)
            if group is not None:
                accs = self.groups.setdefault(group, {})
                acc = accs.setdefault(name, self._acc_type(self.detector.names))
                acc.add(d.boxes, d.scores, d.class_ids, gb, gc)
        self._pending = []

    def _sample(self, dets):
        # Pending items come in frame order, one per row: keep the first `strip` frames drawn.
        from adaqual_ros.detection.yolo import draw_detections

        n = len(self.rows)
        for start in range(0, len(self._pending), n):
            if len(self.samples) >= self.strip:
                return
            items = self._pending[start:start + n]
            shown = [d.above(SHOW_CONF) for d in dets[start:start + n]]
            self.samples.append([
                (f'{name}{f" ({group})" if group else ""}: {len(d)} boxes',
                 draw_detections(image, d))
                for (name, group, image, _, _), d in zip(items, shown)])

    def results(self):
        self.flush()
        results = {name: acc.compute() for name, acc in self.pooled.items()}
        groups = {g: {name: acc.compute() for name, acc in accs.items()}
                  for g, accs in self.groups.items()}
        return results, groups


def _reference(detector, rgb, ref_conf):
    dets = detector.detect(rgb)
    keep = dets.scores >= ref_conf
    return dets.boxes[keep], dets.class_ids[keep]


def _resize(rgb, width):
    if width and width != rgb.shape[1]:
        height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return rgb


def _conditions(text):
    from adaqual_ros.weather import CONDITIONS

    conds = [c.strip() for c in text.split(',') if c.strip()]
    bad = [c for c in conds if c not in CONDITIONS]
    if bad or not conds:
        raise ValueError(f'unknown condition(s) {bad or text!r}; valid: {", ".join(CONDITIONS)}')
    return conds


def _tqdm(iterable, total, desc):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit='img', file=sys.stderr, dynamic_ncols=True)


def evaluate_labelled(evaluation, images, labels, limit=None):
    """Score an image folder against YOLO labels (file stems match). Returns the image count."""
    from adaqual_ros.io.video import list_images, read_image
    from adaqual_ros.metrics.detection import load_yolo_labels

    files = list_images(images)[:limit] if limit else list_images(images)
    labels = Path(labels)
    if not labels.is_dir():
        raise FileNotFoundError(f'label folder {str(labels)!r} does not exist')
    for path in _tqdm(files, len(files), 'labelled'):
        rgb = read_image(path)
        gb, gc = load_yolo_labels(labels / (path.stem + '.txt'), rgb.shape[:2])
        # One stream per image: unrelated photos must not share a cached quality map.
        evaluation.add(rgb, gb, gc, stream_id=path.name)
    return len(files)


def evaluate_frames(evaluation, frames, conditions, severity, seed, ref_conf, width=0,
                    total=None, labels=None, dim_haze=0.0):
    """
    Score frames under synthetic weather against detections on the clean frames.

    `frames` yields (index, rgb, time in seconds or None); `labels` (optional: a list of label
    files by position) replaces the clean-frame reference. Each condition is one group (and one
    weather stream).
    """
    from adaqual_ros.metrics.detection import load_yolo_labels
    from adaqual_ros.weather import WeatherStream

    streams = {c: (WeatherStream(c, seed=seed, severity=severity, dim_haze=dim_haze)
                   if c != 'clean' else None)
               for c in conditions}
    count = 0
    for position, (index, rgb, time_s) in enumerate(_tqdm(frames, total, 'frames')):
        rgb = _resize(rgb, width)
        if labels is not None:
            if position >= len(labels):
                break
            gb, gc = load_yolo_labels(labels[position], rgb.shape[:2])
        else:
            gb, gc = _reference(evaluation.detector, rgb, ref_conf)
        for cond, stream in streams.items():
            degraded = rgb if stream is None else stream.apply(rgb, frame_index=index).degraded
            evaluation.add(degraded, gb, gc, stream_id=f'video-{cond}',
                           group=cond if len(conditions) > 1 else None, stamp=time_s)
        count += 1
    return count


def recall_recovered(results):
    """
    Share of the object recall lost to weather that each restored row wins back.

    Against clean-frame detections the clean recall at the operating confidence is 1 by
    construction, so the loss is 1 - raw recall (both at the operating point).
    """
    raw = results.get('raw')
    if not raw:
        return {}
    base = raw['operating_point']['recall']
    if base >= 1.0:
        return {}
    return {name: (r['operating_point']['recall'] - base) / (1.0 - base)
            for name, r in results.items() if name != 'raw'}


def run(args):
    import torch

    from adaqual_ros.detection.yolo import NO_DETECTOR_MESSAGE, Detector, find_detector
    from adaqual_ros.metrics.report import agreement_section, summary_table, write_report

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.limit is not None and args.limit < 1:
        raise SystemExit('adaqual evaluate: --limit must be >= 1')
    try:
        path = find_detector(args.detector)
    except FileNotFoundError as exc:
        print(f'adaqual evaluate: {exc}', file=sys.stderr)
        return 2
    if path is None:
        print(f'adaqual evaluate: {NO_DETECTOR_MESSAGE}', file=sys.stderr)
        return 2
    try:
        detector = Detector(path, conf=args.conf, iou=args.iou, imgsz=args.imgsz,
                            device=args.device)
        rows, skipped = build_rows(args)
    except ValueError as exc:
        print(f'adaqual evaluate: {exc}', file=sys.stderr)
        return 2
    strip = 0 if args.no_plots else max(0, args.strip)
    evaluation = Evaluation(detector, rows, args.batch, strip=strip,
                            agree_conf=getattr(args, 'reference_conf', 0.25))
    meta = {'command': _command_line(args),
            'mode': args.mode, 'detector': str(path), 'conf': args.conf, 'iou': args.iou,
            'imgsz': args.imgsz, 'device': args.device,
            'noise_seed': 0 if args.noise_seed is None else args.noise_seed,
            **{k: v for k, v in resolved_options(args).items() if k != 'skip_threshold'},
            'machine': f'{platform.machine()}, {torch.get_num_threads()} torch threads, '
                       f'{_cpu_count()} CPUs'}
    started = time.perf_counter()
    try:
        if args.mode == 'labelled':
            meta.update(images=str(args.images), labels=str(args.labels),
                        reference='YOLO labels')
            count = evaluate_labelled(evaluation, args.images, args.labels, args.limit)
        else:
            conditions = _conditions(args.condition)
            meta.update(condition=args.condition, severity=args.severity, seed=args.seed,
                        dim_haze=args.dim_haze)
            labels = None
            if args.mode == 'video':
                from adaqual_ros.io.video import FrameSource

                source = FrameSource(args.video, limit=args.limit, stride=args.stride)
                frames = ((f.index, f.image, f.time_s) for f in source)
                total = len(source)
                meta['video'] = str(args.video)
            else:
                from adaqual_ros.io.bags import image_topics, list_topics, resolve_bag_path

                bag = resolve_bag_path(args.bag)
                frames, total = _bag_frames(bag, args.topic, args.stride, args.limit)
                topic = args.topic or (image_topics(bag) or [None])[0]
                meta['bag_topics'] = list_topics(bag)
                meta.update(bag=str(bag), topic=topic)
                if args.labels:
                    labels = sorted(Path(args.labels).glob('*.txt'))
                    if not labels:
                        raise ValueError(f'no .txt label files in {args.labels!r}')
            meta['reference'] = ('YOLO labels by frame order' if labels else
                                 f'detections on the clean frames (conf >= '
                                 f'{args.reference_conf})')
            if not labels and conditions == ['clean']:
                # A recording from real weather: its own frames are the "clean" reference, so
                # raw scores itself; the agreement table is the measure there.
                meta['reference'] += ('; no synthetic weather: the frames as recorded, so the '
                                      'raw row scores itself (see the agreement table)')
            count = evaluate_frames(evaluation, frames, conditions, args.severity, args.seed,
                                    args.reference_conf, args.width, total, labels,
                                    args.dim_haze)
    except (ValueError, FileNotFoundError) as exc:
        print(f'adaqual evaluate: {exc}', file=sys.stderr)
        return 2
    results, groups = evaluation.results()
    if count == 0:
        print('adaqual evaluate: no frames were read', file=sys.stderr)
        return 2
    meta['frames'] = count
    meta['wall_s'] = round(time.perf_counter() - started, 1)
    if evaluation.skipped:
        # How much of each frame the restorer left untouched (skip_threshold, skip_margin); the
        # same measure as RestoreResult.skipped_fraction and the demo report's.
        meta['skipped_fraction'] = {name: {k: round(float(np.mean(v)), 3) for k, v in by.items()}
                                    for name, by in evaluation.skipped.items()}
    if skipped:
        meta['skipped_rows'] = skipped
    used = {r.name: sorted(r.used) for r in rows if r.used}
    notes = {r.name: r.note for r in rows if r.note}
    if notes:
        meta['notes'] = notes
    mismatched = {k: v for k, v in used.items() if v != [k]}
    if mismatched:
        meta['backend_used'] = mismatched
    extra = {'timing_ms': {
        'detector_per_image': float(np.mean(evaluation.detect_ms)) if evaluation.detect_ms
        else None,
        'restore_per_frame': {k: (float(np.mean(v)) if v else None)
                              for k, v in evaluation.restore_ms.items()}}}
    if args.mode != 'labelled':
        extra['recall_recovered'] = {'pooled': recall_recovered(results)}
        extra['recall_recovered'].update({g: recall_recovered(r) for g, r in groups.items()})
    latency = {k: v for k, v in evaluation.restore_ms.items() if k != 'raw'}
    figures = {}
    if evaluation.samples:
        from adaqual_ros.metrics.report import save_frame_strip

        figures['frames'] = save_frame_strip(Path(args.out) / 'frames.png', evaluation.samples)
    agreement = {name: acc.compute() for name, acc in evaluation.agreement.items()}
    files = write_report(args.out, results, title=f'adaqual evaluate {args.mode}', meta=meta,
                         groups=groups or None, latency_ms=latency or None, extra=extra,
                         plots=not args.no_plots, figures=figures, agreement=agreement or None)
    print(summary_table(results))
    if groups:
        for cond, rows_ in groups.items():
            print(f'\n{cond}:\n{summary_table(rows_)}')
    if agreement:  # the measure of a recording without labels: on the console too
        print('\n' + '\n'.join(agreement_section(agreement)[2:]).rstrip())
    print(f'\nreport: {files["json"]} and {files["md"]}')
    return 0


def _bag_frames(bag, topic, stride, limit):
    """(index, rgb, header stamp in s or None) frames of a bag topic and their expected count."""
    from adaqual_ros.io.bags import list_topics, read_images

    images = read_images(bag, topic)
    # An unset header stamp (0) leaves the cache on the wall clock rather than freezing its age.
    frames = ((im.index, im.image, im.stamp_ns * 1e-9 if im.stamp_ns else None)
              for im in images if im.index % stride == 0)
    if limit:
        frames = (f for f, _ in zip(frames, range(limit)))
    counts = [v['count'] for t, v in list_topics(bag).items() if topic in (None, t)]
    total = -(-counts[0] // stride) if len(counts) == 1 else None
    if limit:
        total = min(total, limit) if total else limit
    return frames, total


def _command_line(args):
    """The command that reproduces ``args``: every option that differs from its default, with
    its value (a value option set to True or False, such as ``--cpu-bf16``, keeps its value)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    modes = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ['adaqual', 'evaluate', args.mode]
    for action in modes.choices[args.mode]._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or value is None or value == action.default:
            continue
        flag = action.option_strings[-1]
        parts += [flag] if action.nargs == 0 else [flag, shlex.quote(str(value))]
    return ' '.join(parts)


def _cpu_count():
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()

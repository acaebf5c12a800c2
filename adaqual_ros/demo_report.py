"""
What the demo graph produced, joined per frame stamp, and the report written from it.

`DemoRecorder` is plain Python: the ROS side (`adaqual_ros.ros.demo_graph`) hands it the player's
frame_info, the detection JSON of the raw, restored and clean streams, the images and the
restoration node's per-frame JSON, all keyed by the header stamp the graph carries through.
`DemoRecorder.summary()` then scores, per weather condition:

- detection: the detector on the raw (degraded) and the restored frames against its own boxes on
  the clean frames (for the 'clean' condition the raw frame is the clean frame);
- restoration quality: PSNR/SSIM of raw and restored frames against the clean frame;
- latency: restored frame arrival and detection publish time minus the image stamp;
- accounting: frames played, restored, detected and scored; frames the graph dropped.

`write_demo_report` writes report.json / report.md (via `adaqual_ros.metrics.report`) plus the
strip of side-by-side frames and the restoration plots.
"""
from collections import OrderedDict
import threading

import cv2
import numpy as np

from adaqual_ros.detection.yolo import Detections, draw_detections
from adaqual_ros.metrics.detection import DetectionAccumulator
from adaqual_ros.metrics.image import psnr, ssim
from adaqual_ros.metrics.report import write_report
from adaqual_ros.quality.overlay import quality_overlay

STREAMS = ('raw', 'restored', 'clean')
WEATHER_ROW = 'all weather'
# Frame images are dropped once this many newer stamps have been seen (bounded memory).
_PENDING_IMAGES = 12


class _Frame:
    __slots__ = ('stamp', 'info', 'dets', 'images', 'quality', 'restore', 'arrival_ns',
                 'image_quality', 'seen')

    def __init__(self, stamp):
        self.stamp = stamp
        self.info = None
        self.dets = {}
        self.images = {}
        self.quality = None
        self.restore = None
        self.arrival_ns = {}
        self.image_quality = {}
        self.seen = 0


class DemoRecorder:
    """
    Join everything the demo graph publishes by image stamp, then score it.

    Args:
        strip_index (`int`, *optional*): source frame index kept (raw, restored, clean, quality,
            boxes) for the side-by-side strip, one per condition; default: the first frame seen.
        detection (`bool`, *optional*, defaults to True): whether detections are expected.
        reference_conf (`float`, *optional*, defaults to 0.25): clean-frame boxes at or above this
            confidence count as objects.
        image_metrics (`bool`, *optional*, defaults to True): compute PSNR/SSIM per frame.
    """

    def __init__(self, strip_index=None, detection=True, reference_conf=0.25,
                 image_metrics=True):
        self.strip_index = strip_index
        self.detection = bool(detection)
        self.reference_conf = float(reference_conf)
        self.image_metrics = bool(image_metrics)
        self._lock = threading.Lock()
        self._frames = OrderedDict()
        self._counter = 0
        self.strip = OrderedDict()  # condition -> dict of images and detections
        self.names = {}
        self.ends = 0
        self.bad_messages = 0

    # ---- inputs (thread-safe; called from ROS callbacks) ------------------------------------

    def _frame(self, stamp):
        frame = self._frames.get(stamp)
        if frame is None:
            frame = self._frames[stamp] = _Frame(stamp)
            self._counter += 1
            frame.seen = self._counter
            self._evict_images()
        return frame

    def add_frame_info(self, body):
        """The player's frame_info JSON (dict); the end marker is counted."""
        with self._lock:
            if body.get('end'):
                self.ends += 1
                return
            frame = self._frame(int(body['stamp_ns']))
            frame.info = dict(body)
            self._update(frame)

    def add_detections(self, stream, body, arrival_ns=None):
        """A detection node's JSON (dict) for `stream` in STREAMS."""
        if stream not in STREAMS:
            raise ValueError(f'unknown stream {stream!r}; expected one of {STREAMS}')
        try:
            dets = Detections.from_dict(body)
            stamp = int(body['stamp_ns'])
        except (KeyError, TypeError, ValueError):
            with self._lock:
                self.bad_messages += 1
            return
        with self._lock:
            self.names.update(dets.names)
            frame = self._frame(stamp)
            frame.dets[stream] = (dets, body.get('published_ns'), body.get('timing_ms', {}))
            self._update(frame)

    def add_image(self, stream, stamp, rgb, arrival_ns=None):
        """A decoded RGB frame of `stream` (raw, restored or clean) with its header stamp."""
        if stream not in STREAMS:
            raise ValueError(f'unknown stream {stream!r}; expected one of {STREAMS}')
        with self._lock:
            frame = self._frame(int(stamp))
            frame.images[stream] = rgb
            if arrival_ns is not None:
                frame.arrival_ns[stream] = int(arrival_ns)
            self._update(frame)

    def add_quality(self, stamp, scores):
        """The restoration node's quality grid (gh, gw) for a stamp."""
        with self._lock:
            frame = self._frame(int(stamp))
            frame.quality = np.asarray(scores, np.float32)
            self._update(frame)

    def add_restoration(self, stamp, body):
        """The restoration node's per-frame JSON (restored/prompts): backend, timings, cache."""
        with self._lock:
            frame = self._frame(int(stamp))
            frame.restore = {k: body.get(k) for k in ('backend', 'cache_hit', 'skipped_fraction',
                                                      'timings_ms', 'cell')}
            self._update(frame)

    # ---- joining ----------------------------------------------------------------------------

    def _condition(self, frame):
        return frame.info.get('condition') if frame.info else None

    def _update(self, frame):
        condition = self._condition(frame)
        if condition is None:
            return
        images = frame.images
        clean = images.get('clean')
        if clean is None and condition == 'clean':
            clean = images.get('raw')
        if self.image_metrics and clean is not None:
            for stream in ('raw', 'restored'):
                image = images.get(stream)
                if image is not None and stream not in frame.image_quality:
                    if image.shape != clean.shape:
                        frame.image_quality[stream] = None
                        continue
                    frame.image_quality[stream] = _image_quality(image, clean)
        self._keep_for_strip(frame, condition, clean)
        done = {'raw', 'restored'} <= set(images) and clean is not None
        if done and (not self.image_metrics or len(frame.image_quality) == 2):
            images.clear()

    def _keep_for_strip(self, frame, condition, clean):
        # One frame per condition: the first restored one at or after `strip_index` (the frame
        # at the index itself may have been dropped by the graph).
        entry = self.strip.get(condition)
        if entry is None:
            index = frame.info.get('index', 0)
            if self.strip_index is None:
                self.strip_index = index
            images = frame.images
            if (index < self.strip_index or clean is None
                    or not {'raw', 'restored'} <= set(images)):
                return
            entry = self.strip[condition] = {'stamp': frame.stamp, 'index': index,
                                             'raw': images['raw'],
                                             'restored': images['restored'], 'clean': clean}
        if entry['stamp'] != frame.stamp:
            return
        if frame.quality is not None and frame.restore is not None:
            entry['quality'] = frame.quality, frame.restore['cell']  # the grid and its cell
        for stream, (dets, _, _) in frame.dets.items():
            entry[f'dets_{stream}'] = dets

    def service_ms(self, last=8):
        """
        Median compute time per node over the last `last` frames that have it (ms).

        Keys: 'restoration' (the restorer's total) and 'detection <stream>' (decode +
        inference); the conductor paces the player with these.
        """
        with self._lock:
            frames = list(self._frames.values())[-4 * last:]
        out = {}
        values = [f.restore['timings_ms'].get('total') for f in frames
                  if f.restore and f.restore.get('timings_ms')]
        values = [v for v in values if v is not None][-last:]
        if values:
            out['restoration'] = float(np.median(values))
        for stream in STREAMS:
            values = [sum(float(f.dets[stream][2].get(k, 0.0)) for k in ('decode', 'inference'))
                      for f in frames if stream in f.dets and f.dets[stream][2]][-last:]
            if values:
                out[f'detection {stream}'] = float(np.median(values))
        return out

    def _evict_images(self):
        # Frames whose partners never came (a dropped restored frame) release their pixels.
        limit = self._counter - _PENDING_IMAGES
        for frame in self._frames.values():
            if frame.seen > limit:
                break
            frame.images.clear()

    def pending_frames(self, condition=None):
        """Frames of `condition` (all when None) whose expected results have not all arrived."""
        with self._lock:
            return sum(1 for f in self._frames.values() if f.info is not None
                       and (condition is None or self._condition(f) == condition)
                       and not self._complete(f))

    def _complete(self, frame):
        if 'restored' not in frame.arrival_ns:
            return False
        if not self.detection:
            return True
        wanted = {'raw', 'restored'} | ({'clean'} if self._condition(frame) != 'clean' else set())
        return wanted <= set(frame.dets)

    def played(self, condition=None):
        """Frames the player announced (of `condition`, or all)."""
        with self._lock:
            return sum(1 for f in self._frames.values() if f.info is not None
                       and (condition is None or self._condition(f) == condition))

    def completed(self, condition=None):
        """Frames (of `condition`, or all) with every expected result."""
        with self._lock:
            return sum(1 for f in self._frames.values() if f.info is not None
                       and (condition is None or self._condition(f) == condition)
                       and self._complete(f))

    # ---- scoring ----------------------------------------------------------------------------

    def summary(self):
        """
        Score everything recorded so far.

        Returns:
            `dict` with 'conditions' (ordered as played), 'detection' {condition: {'raw',
            'restored'}} plus WEATHER_ROW (all non-clean conditions), 'restoration'
            {condition: figures}, 'recall_recovered' {condition: share of the recall lost to
            weather that the restored frames win back}, 'latency_ms' {name: [per-frame ms]},
            'accounting' {condition: counts}, 'backends' (seen per frame), 'cache_hit_rate'.
        """
        with self._lock:
            frames = [f for f in self._frames.values() if f.info is not None]
            names = dict(self.names)
        conditions = list(OrderedDict.fromkeys(self._condition(f) for f in frames))
        acc = {c: {'raw': DetectionAccumulator(names), 'restored': DetectionAccumulator(names)}
               for c in conditions + [WEATHER_ROW]}
        restoration, accounting = {}, {}
        latency = {'restoration': [], 'detection raw': [], 'detection restored': []}
        backends, cache = {}, []
        for cond in conditions:
            mine = [f for f in frames if self._condition(f) == cond]
            count = {'played': len(mine), 'restored': 0, 'scored': 0,
                     **{f'detections_{s}': 0 for s in STREAMS}}
            iq = {'raw': [], 'restored': []}
            stage = {}
            skipped = []
            for f in mine:
                if 'restored' in f.arrival_ns:
                    count['restored'] += 1
                    latency['restoration'].append((f.arrival_ns['restored'] - f.stamp) / 1e6)
                for s in STREAMS:
                    count[f'detections_{s}'] += int(s in f.dets)
                for s, value in f.image_quality.items():
                    if value is not None:
                        iq[s].append(value)
                if f.restore:
                    name = f.restore.get('backend') or '?'
                    backends[name] = backends.get(name, 0) + 1
                    if f.restore.get('cache_hit') is not None:
                        cache.append(bool(f.restore['cache_hit']))
                    if f.restore.get('skipped_fraction') is not None:
                        skipped.append(float(f.restore['skipped_fraction']))
                    for key, ms in (f.restore.get('timings_ms') or {}).items():
                        if ms is not None:
                            stage.setdefault(key, []).append(float(ms))
                for s in ('raw', 'restored'):
                    if s in f.dets and f.dets[s][1]:
                        latency[f'detection {s}'].append((int(f.dets[s][1]) - f.stamp) / 1e6)
                reference = f.dets.get('raw' if cond == 'clean' else 'clean')
                if reference is None or not {'raw', 'restored'} <= set(f.dets):
                    continue
                count['scored'] += 1
                for s in ('raw', 'restored'):
                    rows = [cond] + ([WEATHER_ROW] if cond != 'clean' else [])
                    for row in rows:
                        acc[row][s].add_detections(f.dets[s][0], reference[0],
                                                   self.reference_conf)
            accounting[cond] = count
            restoration[cond] = {
                'frames': len(iq['restored']),
                **{f'{s}_{m}': _mean_finite([v[k] for v in iq[s]])
                   for s in ('raw', 'restored') for k, m in ((0, 'psnr'), (1, 'ssim'))},
                'restored_identical': (sum(1 for v in iq['restored'] if np.isinf(v[0]))
                                       / len(iq['restored'])) if iq['restored'] else None,
                'skipped_fraction': _mean_finite(skipped),
                'stage_ms_p50': {k: float(np.median(v)) for k, v in stage.items()},
            }
        detection, recovered = {}, {}
        if self.detection:
            for row, pair in acc.items():
                if pair['raw'].images:
                    detection[row] = {s: a.compute() for s, a in pair.items()}
                    # Share of the recall lost to weather that restoration wins back (the
                    # reference's own recall is 1 by definition).
                    raw, rest = (detection[row][s]['recall'] for s in ('raw', 'restored'))
                    recovered[row] = (rest - raw) / (1.0 - raw) if raw < 0.999 else None
        return {'conditions': conditions, 'detection': detection, 'recall_recovered': recovered,
                'restoration': restoration,
                'latency_ms': latency, 'accounting': accounting, 'backends': backends,
                'cache_hit_rate': (sum(cache) / len(cache)) if cache else None}


def _image_quality(image, clean):
    # Bit-identical frames have infinite PSNR; skimage would warn about the division by zero.
    if np.array_equal(image, clean):
        return float('inf'), 1.0
    return psnr(image, clean), ssim(image, clean)


def _mean_finite(values):
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    return float(arr.mean()) if len(arr) else None


# ---- report -----------------------------------------------------------------------------------

def _fmt(value, digits=3):
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    return str(value)


def detection_table(summary):
    """Plain-text table: per condition, recall / precision / mAP50 raw -> restored."""
    rows = [('condition', 'frames', 'recall raw', 'recall rest.', 'lost recall won back',
             'prec. raw', 'prec. rest.', 'mAP50 raw', 'mAP50 rest.')]
    recovered = summary.get('recall_recovered', {})
    for cond, pair in summary['detection'].items():
        raw, rest = pair['raw'], pair['restored']
        back = recovered.get(cond)
        rows.append((cond, str(raw['images']), _fmt(raw['recall']), _fmt(rest['recall']),
                     '-' if back is None else f'{back:.0%}',
                     *(_fmt(r['precision']) for r in (raw, rest)),
                     *(_fmt(r['mAP50']) for r in (raw, rest))))
    return _text_table(rows)


def restoration_table(summary):
    """Plain-text table: per condition, PSNR/SSIM of raw and restored frames vs clean."""
    rows = [('condition', 'frames', 'PSNR raw', 'PSNR rest.', 'SSIM raw', 'SSIM rest.',
             'identical', 'restore ms')]
    for cond, r in summary['restoration'].items():
        total = r['stage_ms_p50'].get('total')
        same = r.get('restored_identical')
        rows.append((cond, str(r['frames']), _fmt(r['raw_psnr'], 2), _fmt(r['restored_psnr'], 2),
                     _fmt(r['raw_ssim']), _fmt(r['restored_ssim']),
                     '-' if same is None else f'{same:.0%}', _fmt(total, 0)))
    return _text_table(rows)


def _text_table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ['  '.join(str(v).rjust(w) if i else str(v).ljust(w)
                       for i, (v, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def _md_table(text):
    lines = text.splitlines()
    head = [c for c in lines[0].split('  ') if c.strip()]
    out = ['| ' + ' | '.join(c.strip() for c in head) + ' |',
           '| --- |' + ' ---: |' * (len(head) - 1)]
    for line in lines[2:]:
        cells = [c for c in line.split('  ') if c.strip()]
        out.append('| ' + ' | '.join(c.strip() for c in cells) + ' |')
    return '\n'.join(out)


def _label(image, text):
    image = image.copy()
    cv2.rectangle(image, (0, 0), (image.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(image, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                cv2.LINE_AA)
    return image


def render_strip(strip, path, tile_width=320):
    """
    Save a grid: one row per condition of raw | restored | raw with its quality map | clean.

    Boxes are drawn where detections were recorded (raw boxes on raw, restored boxes on
    restored, reference boxes on clean). Returns the path, or None when nothing was kept.
    """
    rows = []
    for cond, entry in strip.items():
        base = entry.get('raw')
        if base is None:
            continue
        h, w = base.shape[:2]
        size = (tile_width, max(2, round(h * tile_width / w)))
        tiles = []
        for key, title in (('raw', f'{cond}: raw'), ('restored', 'restored'),
                           ('quality', 'quality map of raw (red = poor)'),
                           ('clean', 'clean reference')):
            if key == 'quality':
                image = quality_overlay(base, *entry['quality']) if 'quality' in entry else None
            else:
                image = entry.get(key)
                dets = entry.get(f'dets_{key}')
                if key == 'clean' and cond == 'clean':
                    dets = entry.get('dets_raw')
                if image is not None and dets is not None:
                    image = draw_detections(image, dets)
            if image is None:
                image = np.full_like(base, 64)
                title += ' (missing)'
            tiles.append(_label(cv2.resize(image, size, interpolation=cv2.INTER_AREA), title))
        rows.append(np.concatenate(tiles, axis=1))
    if not rows:
        return None
    grid = np.concatenate(rows, axis=0)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path


def _plot_restoration(path, restoration):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    conds = [c for c, r in restoration.items() if r['raw_psnr'] is not None]
    if not conds:
        return None
    x = np.arange(len(conds))
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.6 * len(conds) + 3), 3.4), dpi=100)
    for ax, metric in zip(axes, ('psnr', 'ssim')):
        for i, stream in enumerate(('raw', 'restored')):
            vals = [restoration[c][f'{stream}_{metric}'] or 0.0 for c in conds]
            ax.bar(x + (i - 0.5) * 0.4, vals, 0.4, label=stream)
        ax.set_xticks(x, conds, rotation=20)
        ax.set_title(f'{metric.upper()} vs clean frame')
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_demo_report(out_dir, summary, strip=None, meta=None, extra=None, plots=True):
    """
    Write report.json, report.md and the PNG plots of a demo run.

    Args:
        out_dir (`Path`): the report folder.
        summary (`dict`): `DemoRecorder.summary()`.
        strip (`dict`, *optional*): `DemoRecorder.strip`.
        meta (`dict`, *optional*): how the run was made.
        extra (`dict`, *optional*): more top-level JSON keys (graph accounting, node reports).
        plots (`bool`, *optional*, defaults to True): write the PNGs.

    Returns:
        `dict[str, Path]`: the files written.
    """
    from pathlib import Path

    out = Path(out_dir)
    detection = summary['detection']
    results = {}
    if WEATHER_ROW in detection:
        results = {f'{s} ({WEATHER_ROW})': r for s, r in detection[WEATHER_ROW].items()}
    elif detection:
        first = next(iter(detection))
        results = {f'{s} ({first})': r for s, r in detection[first].items()}
    groups = {c: pair for c, pair in detection.items() if c != WEATHER_ROW}
    body = {'conditions': summary['conditions'], 'restoration': summary['restoration'],
            'recall_recovered': summary.get('recall_recovered', {}),
            'accounting': summary['accounting'], 'backends': summary['backends'],
            'cache_hit_rate': summary['cache_hit_rate'], 'detection_per_condition': detection}
    body.update(extra or {})
    files = write_report(out, results, title='adaqual demo: the ROS 2 graph end to end',
                         meta=meta, groups=groups or None, latency_ms=summary['latency_ms'],
                         extra=body, plots=plots)
    more = []
    if plots:
        path = _plot_restoration(out / 'restoration_quality.png', summary['restoration'])
        if path:
            files['plot_restoration'] = path
        if strip:
            path = render_strip(strip, out / 'frames_strip.png')
            if path:
                files['plot_strip'] = path
    more += ['Latency is end to end from the image stamp: `restoration` until the restored frame '
             'reached the demo, `detection raw` / `detection restored` until the detections '
             'were published.', '']
    more += ['## Restoration quality (vs the clean frame)', '',
             _md_table(restoration_table(summary)), '']
    more += ['## Frame accounting', '',
             '| condition | played | restored | det. raw | det. restored | det. clean | scored |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: |']
    for cond, c in summary['accounting'].items():
        more.append(f'| {cond} | {c["played"]} | {c["restored"]} | {c["detections_raw"]} | '
                    f'{c["detections_restored"]} | {c["detections_clean"]} | {c["scored"]} |')
    more.append('')
    graph = (extra or {}).get('graph', {})
    drops = graph.get('restoration_node', {})
    if drops:
        more += ['Restoration node accounting (from /diagnostics): '
                 + ', '.join(f'{k} {v}' for k, v in sorted(drops.items())), '']
    backends = summary['backends']
    if backends:
        more += ['Restoration backend per frame: '
                 + ', '.join(f'{k} ({v})' for k, v in backends.items())
                 + (f'; quality-map cache hit rate {summary["cache_hit_rate"]:.2f}'
                    if summary['cache_hit_rate'] is not None else ''), '']
    if detection:
        more += ['## Detection per condition (raw -> restored)', '',
                 'Reference: the detector on the clean frame (for `clean`, the raw frame).', '',
                 _md_table(detection_table(summary)), '']
    node = (extra or {}).get('metrics_node')
    if node:
        pairing = node.get('pairing', {})
        more += [f'The metrics node (its own process) scored {pairing.get("paired")} stamps with '
                 'raw, restored and clean-frame detections (the `all weather` row above); '
                 f'{pairing.get("pending")} stamps stay unpaired there: the clean pass has no '
                 'clean/image_raw, and frames the graph dropped miss a partner. Its report: '
                 f'`{node.get("report")}`.', '']
        a = node.get('agreement')
        if a and a.get('images'):
            # what a camera without a reference would see (README: numbers from your own camera)
            more += [f'Raw vs restored on the same {a["images"]} frames (no reference needed; '
                     f'confidence {a["conf"]:g} or more): {a["raw_objects"]} objects raw, '
                     f'{a["restored_objects"]} restored, {a["matched"]} in both, '
                     f'{a["only_restored"]} only after restoration, {a["only_raw"]} lost by it.',
                     '']
    for key in ('plot_restoration', 'plot_strip'):
        if key in files:
            more += [f'![{files[key].stem}]({files[key].name})', '']
    with open(files['md'], 'a') as handle:
        handle.write('\n' + '\n'.join(more))
    return files

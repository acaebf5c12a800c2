"""
Before/after detection reports: report.json, report.md and PNG plots (matplotlib, Agg backend).

`results` maps a row name (a restoration backend: 'raw', 'classical', 'adaqual', ...) to the dict
that `DetectionAccumulator.compute()` returns. `groups` (optional) holds the same per condition,
e.g. {'haze': {'raw': {...}, 'adaqual': {...}}}, and `latency_ms` per-frame latencies per row.
"""
from datetime import datetime, timezone
import json
import math
from pathlib import Path
import platform

import numpy as np

from adaqual_ros.metrics.detection import METRIC_KEYS

REPORT_JSON = 'report.json'
REPORT_MD = 'report.md'


def _clean(value):
    """Make numpy scalars/arrays and non-finite floats JSON-safe."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def latency_summary(values_ms):
    """Count, mean, p50, p95 and max of a list of latencies in ms (empty list -> count 0)."""
    arr = np.asarray([v for v in values_ms if v is not None], dtype=np.float64)
    if not len(arr):
        return {'count': 0}
    return {'count': int(len(arr)), 'mean': float(arr.mean()),
            'p50': float(np.percentile(arr, 50)), 'p95': float(np.percentile(arr, 95)),
            'max': float(arr.max())}


def _fmt(value):
    return '-' if value is None else f'{value:.3f}' if isinstance(value, float) else str(value)


def summary_table(results):
    """Markdown table: one row per results entry with the four headline metrics."""
    op_conf = next((r['operating_point']['conf'] for r in results.values()
                    if 'operating_point' in r), None)
    op_head = f' P@{op_conf:g} | R@{op_conf:g} |' if op_conf is not None else ''
    lines = ['| run | images | instances | precision | recall | mAP50 | mAP50-95 |' + op_head,
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: |'
             + (' ---: | ---: |' if op_head else '')]
    for name, r in results.items():
        op = r.get('operating_point') or {}
        tail = f' {_fmt(op.get("precision"))} | {_fmt(op.get("recall"))} |' if op_head else ''
        lines.append(f'| {name} | {r.get("images", "-")} | {r.get("instances", "-")} | '
                     + ' | '.join(_fmt(r.get(k)) for k in METRIC_KEYS) + ' |' + tail)
    return '\n'.join(lines)


def agreement_section(agreements):
    """report.md lines for {row: `AgreementAccumulator.compute()`} (each row against raw)."""
    first = next(iter(agreements.values()))
    lines = ['## Raw vs restored on the same frames (no reference needed)', '',
             f'Detections at confidence {_fmt(first["conf"])} or more; the same object = same '
             f'class and IoU {_fmt(first["iou"])} or more. More objects after restoration is not '
             'proof of better detection: some may be false.', '',
             '| restored by | frames | raw objects | restored objects | both | only restored | '
             'only raw | mean conf of both, raw → restored |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |']
    for name, a in agreements.items():
        conf = (f'{_fmt(a["matched_conf_raw"])} → {_fmt(a["matched_conf_restored"])}'
                if a['matched_conf_raw'] is not None else '–')
        lines.append(f'| {name} | {a["images"]} | {a["raw_objects"]} | {a["restored_objects"]} '
                     f'| {a["matched"]} | {a["only_restored"]} | {a["only_raw"]} | {conf} |')
    return lines + ['']


def _per_class_table(results):
    classes = sorted({c for r in results.values() for c in r.get('per_class', {})})
    if not classes:
        return ''
    runs = list(results)
    head = '| class | instances | ' + ' | '.join(f'{r} mAP50' for r in runs) + ' |'
    lines = [head, '| --- | ---: |' + ' ---: |' * len(runs)]
    for c in classes:
        inst = next((r['per_class'][c].get('instances') for r in results.values()
                     if c in r.get('per_class', {})), '-')
        vals = [_fmt(results[r].get('per_class', {}).get(c, {}).get('mAP50')) for r in runs]
        lines.append(f'| {c} | {inst} | ' + ' | '.join(vals) + ' |')
    return '\n'.join(lines)


def _plot_bars(path, results, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    runs = list(results)
    x = np.arange(len(METRIC_KEYS))
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    for i, run in enumerate(runs):
        vals = [results[run].get(k) or 0.0 for k in METRIC_KEYS]
        bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, vals, width, label=run)
        ax.bar_label(bars, fmt='%.2f', fontsize=7)
    ax.set_xticks(x, METRIC_KEYS)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_groups(path, groups, metric):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    conds = list(groups)
    runs = sorted({r for g in groups.values() for r in g}, key=lambda r: (r != 'raw', r))
    x = np.arange(len(conds))
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(conds) + 2), 3.6), dpi=100)
    for i, run in enumerate(runs):
        vals = [(groups[c].get(run) or {}).get(metric) or 0.0 for c in conds]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, vals, width, label=run)
    ax.set_xticks(x, conds, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel(metric)
    ax.set_title(f'{metric} per condition')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_latency(path, latency_ms):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    for run, values in latency_ms.items():
        if len(values):
            ax.plot(np.arange(len(values)), values, label=run, linewidth=1)
    ax.set_xlabel('frame')
    ax.set_ylabel('ms')
    ax.set_title('per-frame latency')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def frame_strip(rows, tile_width=320, gap=4):
    """
    Tile images into one RGB picture: one row per entry, one column per image, with captions.

    Args:
        rows (`list[list[tuple[str, np.ndarray]]]`): per row, (caption, HxWx3 uint8 RGB) pairs,
            e.g. [[('raw', a), ('adaqual', b), ('quality', c)], ...].
        tile_width (`int`, *optional*, defaults to 320): every image is resized to this width.
        gap (`int`, *optional*, defaults to 4): white border in pixels.

    Returns:
        `np.ndarray` HxWx3 uint8 RGB (write it with cv2 after RGB->BGR, or `save_frame_strip`).
    """
    import cv2

    if not rows or not all(rows):
        raise ValueError('frame_strip needs at least one non-empty row')
    cols = max(len(r) for r in rows)
    tiles = []
    for row in rows:
        line = []
        for caption, image in row:
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f'frame_strip: {caption!r} must be HxWx3 uint8, got '
                                 f'{image.shape} {image.dtype}')
            h = max(1, round(image.shape[0] * tile_width / image.shape[1]))
            tile = cv2.resize(image, (tile_width, h), interpolation=cv2.INTER_AREA)
            cv2.putText(tile, str(caption), (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(tile, str(caption), (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        (255, 255, 255), 1, cv2.LINE_AA)
            line.append(tile)
        tiles.append(line)
    row_h = [max(t.shape[0] for t in line) for line in tiles]
    out = np.full((sum(row_h) + gap * (len(rows) + 1),
                   cols * tile_width + gap * (cols + 1), 3), 255, np.uint8)
    y = gap
    for line, h in zip(tiles, row_h):
        x = gap
        for tile in line:
            out[y:y + tile.shape[0], x:x + tile_width] = tile
            x += tile_width + gap
        y += h + gap
    return out


def save_frame_strip(path, rows, **kwargs):
    """Write `frame_strip(rows)` as a PNG at `path`; return the path."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), frame_strip(rows, **kwargs)[:, :, ::-1]):
        raise ValueError(f'cannot write {path}')
    return path


def write_report(out_dir, results, title='Detection before/after restoration', meta=None,
                 groups=None, latency_ms=None, extra=None, plots=True, figures=None,
                 agreement=None):
    """
    Write report.json, report.md and (with `plots`) PNG charts into `out_dir`.

    Args:
        out_dir (`str` or `Path`): created when missing.
        results (`dict[str, dict]`): row name -> metrics dict (`DetectionAccumulator.compute()`).
        title (`str`, *optional*): report heading.
        meta (`dict`, *optional*): how the numbers were made (command, detector, data, machine).
        groups (`dict[str, dict[str, dict]]`, *optional*): condition -> row name -> metrics.
        latency_ms (`dict[str, list[float]]`, *optional*): row name -> per-frame latencies.
        extra (`dict`, *optional*): more top-level JSON keys (e.g. restoration timings).
        plots (`bool`, *optional*, defaults to True): also write PNG charts.
        figures (`dict[str, Path]`, *optional*): more pictures already in `out_dir` (e.g. a
            `save_frame_strip` PNG) to list in report.md and report.json.
        agreement (`dict`, *optional*): {restored row: `AgreementAccumulator.compute()`}, each
            row's detections against the raw frames' (no reference needed).

    Returns:
        `dict[str, Path]`: the files written ('json', 'md', and one key per plot).
    """
    if not isinstance(results, dict):
        raise ValueError(f'results must be a dict of row name -> metrics, got {type(results)}')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    meta.setdefault('created', datetime.now(timezone.utc).isoformat(timespec='seconds'))
    meta.setdefault('machine', f'{platform.machine()} {platform.processor() or ""}'.strip())
    latency = {k: latency_summary(v) for k, v in (latency_ms or {}).items()}
    doc = {'title': title, 'meta': meta, 'results': results}
    if groups:
        doc['groups'] = groups
    if agreement is not None:
        doc['agreement'] = agreement
    if latency:
        doc['latency_ms'] = latency
    doc.update(extra or {})
    files = {'json': out / REPORT_JSON, 'md': out / REPORT_MD}
    if plots and results:
        files['plot_metrics'] = out / 'metrics.png'
        _plot_bars(files['plot_metrics'], results, title)
    if plots and groups:
        for metric in ('mAP50', 'recall', 'precision'):
            files[f'plot_{metric}_per_condition'] = out / f'{metric}_per_condition.png'
            _plot_groups(files[f'plot_{metric}_per_condition'], groups, metric)
    if plots and latency_ms and any(len(v) for v in latency_ms.values()):
        files['plot_latency'] = out / 'latency.png'
        _plot_latency(files['plot_latency'], latency_ms)
    for key, path in (figures or {}).items():
        files[f'plot_{key}'] = Path(path)
    doc['files'] = {k: p.name for k, p in files.items()}
    files['json'].write_text(json.dumps(_clean(doc), indent=2) + '\n')

    md = [f'# {title}', '']
    for key, value in meta.items():
        md.append(f'- **{key}**: {value}')
    md += ['', '## Overall', '', summary_table(results) if results else '(no results)', '']
    per_class = _per_class_table(results)
    if per_class:
        md += ['## Per class (mAP50)', '', per_class, '']
    if groups:
        md.append('## Per condition')
        for cond, rows in groups.items():
            md += ['', f'### {cond}', '', summary_table(rows)]
        md.append('')
    if agreement is not None:
        md += agreement_section(agreement)
    if latency:
        md += ['## Latency (ms)', '', '| run | frames | mean | p50 | p95 | max |',
               '| --- | ---: | ---: | ---: | ---: | ---: |']
        for run, s in latency.items():
            md.append(f'| {run} | {s["count"]} | ' + ' | '.join(
                _fmt(s.get(k)) for k in ('mean', 'p50', 'p95', 'max')) + ' |')
        md.append('')
    pngs = [p for k, p in files.items() if k.startswith('plot_')]
    if pngs:
        md += ['## Plots', ''] + [f'![{p.stem}]({p.name})' for p in pngs] + ['']
    files['md'].write_text('\n'.join(md))
    return files

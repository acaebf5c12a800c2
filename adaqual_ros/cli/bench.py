"""
`adaqual bench`: speed and memory of the restorer runtime, per resolution, backend and stream.

For each resolution and backend it times a degraded stream (synthetic weather over real video
frames from $ADAQUAL_ASSETS/data/video/people.mp4, or a synthetic moving scene without assets)
and the clean stream, stage by stage, and measures peak memory. In the same run it measures three
ratios: clean / degraded frame cost, adaptive vs full-frame processing of a half-clean frame, and
quality cache on vs off. Writes DIR/bench.json and prints a table. Runs unchanged on CUDA.

    adaqual bench --out bench_out --frames 10 --resolutions 640x480 --backends adaqual,classical
"""
import json
import os
from pathlib import Path
import platform
import resource
import sys
import time
import tracemalloc
import warnings

import cv2
import numpy as np

from adaqual_ros.cli.restorer_options import (
    add_model_options,
    add_restorer_options,
    model_changes,
    restorer_changes,
)

DEFAULT_RESOLUTIONS = '640x480,1280x720,1920x1080'
DEFAULT_BACKENDS = 'adaqual,classical,passthrough'
VIDEO = 'data/video/people.mp4'
STAGES = ('quality', 'prompts', 'model', 'blend', 'convert')
# Goals on the 2-core development CPU (issue 6).
GOAL_FPS_640 = 4.0
GOAL_CLEAN_OVER_DEGRADED = 0.10
GOAL_ADAPTIVE_SPEEDUP = 2.0


def add_arguments(parser):
    parser.add_argument('--out', required=True, help='output folder for bench.json')
    parser.add_argument('--frames', type=int, default=10, help='timed frames per stream')
    parser.add_argument('--warmup', type=int, default=2, help='untimed frames first per stream')
    parser.add_argument('--frame-stride', type=int, default=1,
                        help='every N-th frame of the video (1: consecutive frames from its '
                             'start; more spreads the streams over the clip, whose later clean '
                             'frames the estimator reads differently)')
    parser.add_argument('--resolutions', default=DEFAULT_RESOLUTIONS,
                        help='comma-separated WxH list (default: %(default)s)')
    parser.add_argument('--backends', default=DEFAULT_BACKENDS,
                        help='comma-separated backends (default: %(default)s)')
    parser.add_argument('--condition', default='haze_rain', help='weather of the degraded stream')
    parser.add_argument('--severity', type=float, default=0.6, help='mean weather severity 0..1')
    parser.add_argument('--no-half', action='store_true', help='float32 on CUDA too')
    parser.add_argument('--compile', action='store_true', help='torch.compile the denoiser')
    parser.add_argument('--compile-mode', default='default',
                        help="torch.compile mode with --compile: 'default', 'reduce-overhead' "
                             "(CUDA graphs) or 'max-autotune-no-cudagraphs'")
    parser.add_argument('--cudnn-benchmark', action='store_true',
                        help='CUDA: let cuDNN time its convolution algorithms per shape '
                             '(default: its heuristic choice)')
    add_model_options(parser)
    parser.add_argument('--model-config', default='',
                        help="time an untrained pipeline of this config ('tiny', 'small', "
                             "'paper', 'paper_rt') instead of a checkpoint (same cost, no "
                             'weights needed)')
    parser.add_argument('--tile-size', type=int, default=None,
                        help='tile size in pixels (0 = whole frame; default: auto, as the node)')
    add_restorer_options(parser)
    parser.add_argument('--profile', action='store_true',
                        help='also write torch.profiler tables (top ops) of the degraded stream '
                             'to OUT/profile_<resolution>_<backend>.txt')
    parser.add_argument('--flops', action='store_true',
                        help="also count the torch FLOPs of restoring one degraded frame (eager "
                             "ops, estimator included; the record's 'gflops_per_frame')")
    parser.add_argument('--no-ratios', action='store_true', help='skip the ratio measurements')
    parser.add_argument('--assets', default=None, help='assets folder (default $ADAQUAL_ASSETS)')
    parser.add_argument('--seed', type=int, default=0, help='weather seed')
    parser.add_argument('--oracle-quality', action='store_true',
                        help='give the restorer the synthetic ground-truth quality maps instead '
                             'of estimating them (isolates the runtime from estimator accuracy)')


def parse_resolutions(text):
    """'640x480,1280x720' -> [(640, 480), (1280, 720)]; ValueError naming a bad entry."""
    out = []
    for item in (t.strip() for t in str(text).split(',') if t.strip()):
        parts = item.lower().split('x')
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f'bad resolution {item!r}: use WxH, e.g. 640x480')
        out.append((int(parts[0]), int(parts[1])))
    if not out:
        raise ValueError('no resolution given')
    return out


def parse_backends(text):
    from adaqual_ros.runtime.settings import BACKENDS

    names = [t.strip() for t in str(text).split(',') if t.strip()]
    bad = [n for n in names if n not in BACKENDS]
    if bad or not names:
        raise ValueError(f'unknown backend(s) {bad}; valid names: {list(BACKENDS)}')
    return names


# -- frames ------------------------------------------------------------------------------------

def _video_frames(path, count, stride=1):
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        index = 0
        while len(frames) < count:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % stride == 0:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()
    if not frames:
        raise RuntimeError(f'cannot read frames from {path}')
    while len(frames) < count:  # short video: play it back and forth
        frames.extend(frames[::-1][:count - len(frames)])
    return frames


def _synthetic_frames(count, width=1920, height=1080):
    """A moving synthetic street-like scene, when no assets are present."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([0.45 + 0.25 * np.sin(xx / (40 + 9 * c)) * np.cos(yy / 57.0)
                     for c in range(3)], 2)
    base[int(height * 0.6):] *= 0.6
    boxes = [(int(rng.integers(0, width - 200)), int(rng.integers(height // 3, height - 300)),
              rng.random(3)) for _ in range(12)]
    frames = []
    for i in range(count):
        img = base.copy()
        for x, y, colour in boxes:
            x = (x + 7 * i) % (width - 120)
            img[y:y + 240, x:x + 100] = colour
        frames.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return frames


def load_source_frames(count, assets=None, stride=1):
    """(frames, description): RGB uint8 frames of the benchmark video, every ``stride``-th (or
    a synthetic scene)."""
    from adaqual_ros.assets import asset_path

    path = asset_path(VIDEO, assets)
    if path is not None:
        return (_video_frames(path, count, stride),
                str(VIDEO) + (f', every {stride}th frame' if stride > 1 else ''))
    return _synthetic_frames(count), 'synthetic scene (no assets)'


def make_streams(sources, size, condition, severity, seed, cell=64):
    """
    Clean, degraded and half-clean (left half clean) frames at ``size`` (W, H), and for each
    stream the ground-truth QualityMaps of the synthetic weather.
    """
    from adaqual_ros.quality.types import QualityMap, grid_shape
    from adaqual_ros.weather import WeatherStream

    width, height = size
    clean = [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in sources]
    weather = WeatherStream(condition, seed=seed, severity=severity, cell=cell)
    samples = [weather.apply(f) for f in clean]
    degraded = [s.degraded for s in samples]
    truth = [QualityMap(s.quality, s.types, cell, (height, width)) for s in samples]
    gh, gw = grid_shape(height, width, cell)
    pristine = QualityMap(np.full((gh, gw), 5.0), np.zeros((gh, gw, 4)), cell, (height, width))
    # Half on a cell boundary so exactly half the cells are clean.
    cut_cells = (width // 2) // cell
    half, half_truth = [], []
    for c, d, q in zip(clean, degraded, truth):
        mixed = d.copy()
        mixed[:, :cut_cells * cell] = c[:, :cut_cells * cell]
        half.append(mixed)
        scores, types = q.scores.copy(), q.type_probs.copy()
        scores[:, :cut_cells], types[:, :cut_cells] = 5.0, 0.0
        half_truth.append(QualityMap(scores, types, cell, (height, width)))
    return ({'clean': clean, 'degraded': degraded, 'half_clean': half},
            {'clean': [pristine] * len(clean), 'degraded': truth, 'half_clean': half_truth})


# -- measurement ------------------------------------------------------------------------------

def _peak_rss_mb():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == 'darwin' else rss / 1024.0


def run_stream(restorer, frames, stream_id, warmup, qmaps=None):
    """
    Time restorer.restore over frames (after ``warmup`` untimed ones); returns a summary.

    ``qmaps`` (one per frame) are handed to the restorer instead of estimating quality.
    """
    from adaqual_ros.runtime.device import synchronize

    backend = restorer._runtime.backend
    plan = getattr(backend, 'plan', None)
    qmaps = qmaps or [None] * len(frames)
    for frame, qmap in zip(frames[:warmup], qmaps):
        restorer.restore(frame, stream_id, quality_map=qmap)
    totals, stages, skipped, hits, windows = [], {k: [] for k in STAGES}, [], [], []
    cpu, processed = [], []
    used = set()
    for frame, qmap in zip(frames[warmup:], qmaps[warmup:]):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = restorer.restore(frame, stream_id, quality_map=qmap)
        if plan is not None:
            synchronize(plan)
        totals.append((time.perf_counter() - start) * 1000.0)
        cpu.append((time.process_time() - start_cpu) * 1000.0)
        processed.append(result.processed_fraction)
        for key in STAGES:
            stages[key].append(result.timings.get(key, 0.0))
        skipped.append(result.skipped_fraction)
        hits.append(bool(result.cache_hit))
        windows.append(result.windows)
        used.add(result.backend)
    ms = float(np.mean(totals))
    return {
        'frames': len(totals),
        'ms_per_frame': ms,
        'fps': 1000.0 / ms if ms > 0 else float('inf'),
        'ms_p50': float(np.percentile(totals, 50)),
        'ms_p90': float(np.percentile(totals, 90)),
        # CPU time of this process: steadier than wall time on a shared machine.
        'cpu_ms_per_frame': float(np.mean(cpu)),
        'processed_fraction': float(np.mean(processed)),
        'ms_by_stage': {k: float(np.mean(v)) for k, v in stages.items()},
        'skipped_fraction': float(np.mean(skipped)),
        'cache_hit_rate': float(np.mean(hits)),
        'windows_per_frame': float(np.mean(windows)),
        'backend_used': ','.join(sorted(used)),
        # compile_mode reduce-overhead: graphs torch.compile ran without CUDA graphs so far
        'cudagraph_skips': restorer.stats()['cudagraph_skips'],
    }


def profile_stream(restorer, frames, stream_id, qmaps=None, rows=30):
    """torch.profiler tables (top ops by device time, then by CPU time) of restoring frames."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from adaqual_ros.runtime.device import synchronize

    plan = getattr(restorer._runtime.backend, 'plan', None)
    cuda = plan is not None and plan.is_cuda
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    qmaps = qmaps or [None] * len(frames)
    with profile(activities=activities) as prof:
        for frame, qmap in zip(frames[-2:], qmaps[-2:]):
            restorer.restore(frame, stream_id, quality_map=qmap)
        if cuda:
            synchronize(plan)
    averages = prof.key_averages()
    tables = [f'torch {torch.__version__}, {len(frames[-2:])} frames, device '
              f'{plan.device if plan is not None else "cpu"}']
    if cuda:
        tables += ['', 'by device time', averages.table(sort_by='device_time_total',
                                                         row_limit=rows)]
    tables += ['', 'by CPU time', averages.table(sort_by='cpu_time_total', row_limit=rows)]
    return '\n'.join(tables)


def count_gflops(restorer, frame, stream_id, qmap=None):
    """
    GFLOPs of the torch ops of one restore (torch.utils.flop_counter: convolutions, matmuls and
    attention; ops inside a compiled graph are not seen). Pass a stream id of its own, so the
    quality cache cannot skip the estimator.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        restorer.restore(frame, stream_id, quality_map=qmap)
    return counter.get_total_flops() / 1e9


def measure_memory(restorer, frame, stream_id):
    """Peak memory of one restore: Python/numpy (tracemalloc), CUDA, and the process max RSS."""
    import torch

    backend = restorer._runtime.backend
    plan = getattr(backend, 'plan', None)
    cuda = plan is not None and plan.is_cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats(plan.device)
    tracemalloc.start()
    try:
        restorer.restore(frame, stream_id)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        'python_traced_mb': traced_peak / 2 ** 20,
        'cuda_mb': (torch.cuda.max_memory_allocated(plan.device) / 2 ** 20) if cuda else 0.0,
        'process_max_rss_mb': _peak_rss_mb(),
    }


def _restorer(base, backend, pipeline, **changes):
    from adaqual_ros.runtime import Restorer
    from adaqual_ros.runtime.restorer import RestorationError

    settings = base.with_changes(backend=backend, **changes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            restorer = Restorer(settings, pipeline=pipeline if backend == 'adaqual' else None)
        except RestorationError as exc:
            raise SystemExit(f'adaqual bench: {exc}') from exc
    notes = sorted({str(w.message) for w in caught})
    return restorer, notes


def _ratio(a, b):
    return float(a / b) if b else None


# -- the command --------------------------------------------------------------------------------

def _base_settings(args):
    from adaqual_ros.runtime import RestorerSettings

    changes = {'half': not args.no_half, 'compile': args.compile,
               'compile_mode': args.compile_mode, 'cudnn_benchmark': args.cudnn_benchmark,
               **model_changes(args)}
    if args.tile_size is not None:
        changes['tile_size'] = args.tile_size
    changes.update(restorer_changes(args))
    return RestorerSettings(**changes)


def _pipeline(args):
    """An untrained pipeline of --model-config, or None (the restorer loads the checkpoint)."""
    if not args.model_config:
        return None, args.model_path or 'shipped checkpoint'
    from adaqual_ros.pipelines import AdaQualPipeline

    return (AdaQualPipeline.from_components_config(args.model_config),
            f'untrained {args.model_config!r} config (timing only)')


def _machine(settings):
    import torch

    from adaqual_ros.runtime.device import resolve_device

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        device = resolve_device(settings.device)
    info = {'platform': platform.platform(), 'python': platform.python_version(),
            'cpu_count': os.cpu_count(), 'torch': torch.__version__,
            'torch_threads': torch.get_num_threads(), 'device': str(device)}
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def run(args):
    try:
        resolutions = parse_resolutions(args.resolutions)
        backends = parse_backends(args.backends)
    except ValueError as exc:
        print(f'adaqual bench: {exc}', file=sys.stderr)
        return 2
    if args.frames < 1 or args.warmup < 0 or args.frame_stride < 1:
        print('adaqual bench: --frames and --frame-stride must be >= 1 and --warmup >= 0',
              file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from adaqual_ros.runtime.device import configure_threads
    from adaqual_ros.runtime.restorer import validate_settings

    configure_threads(args.threads)
    try:
        base = validate_settings(_base_settings(args))
    except ValueError as exc:
        print(f'adaqual bench: {exc}', file=sys.stderr)
        return 2
    pipeline, model_desc = _pipeline(args)
    sources, source_desc = load_source_frames(args.frames + args.warmup + 1, args.assets,
                                              args.frame_stride)
    report = {
        'machine': _machine(base), 'model': model_desc, 'source': source_desc,
        'condition': args.condition, 'severity': args.severity,
        'quality_source': 'ground truth' if args.oracle_quality else 'estimator',
        'settings': {k: v for k, v in vars(base).items() if k != 'cache'},
        'cache': vars(base.cache), 'records': [], 'ratio_details': [], 'notes': [],
    }
    for width, height in resolutions:
        streams, truth = make_streams(sources, (width, height), args.condition, args.severity,
                                      args.seed)
        if not args.oracle_quality:
            truth = dict.fromkeys(truth)
        for backend in backends:
            restorer, notes = _restorer(base, backend, pipeline)
            report['notes'].extend(n for n in notes if n not in report['notes'])
            records = {}
            for stream in ('degraded', 'clean'):
                rec = run_stream(restorer, streams[stream], f'{stream}-{width}x{height}',
                                 args.warmup, truth[stream])
                rec['peak_memory'] = measure_memory(restorer, streams[stream][-1],
                                                    f'{stream}-{width}x{height}')
                stats = restorer.stats()
                rec.update(resolution=f'{width}x{height}', width=width, height=height,
                           backend=backend, stream=stream,
                           tile_size=stats['tile_size'],  # auto resolved
                           precision=stats['precision'])  # cpu_bf16 resolved
                if args.flops and stream == 'degraded':
                    rec['gflops_per_frame'] = count_gflops(
                        restorer, streams[stream][-1], f'flops-{width}x{height}',
                        truth[stream][-1] if truth[stream] else None)
                records[stream] = rec
                report['records'].append(rec)
                _print_row(rec)
            if args.profile:
                path = out_dir / f'profile_{width}x{height}_{backend}.txt'
                path.write_text(profile_stream(restorer, streams['degraded'],
                                               f'degraded-{width}x{height}', truth['degraded']))
                print(f'wrote {path}')
            detail = {'resolution': f'{width}x{height}', 'backend': backend,
                      'clean_over_degraded': _ratio(records['clean']['ms_per_frame'],
                                                    records['degraded']['ms_per_frame']),
                      'clean_over_degraded_cpu': _ratio(records['clean']['cpu_ms_per_frame'],
                                                        records['degraded']['cpu_ms_per_frame'])}
            if not args.no_ratios and backend != 'passthrough':
                detail.update(_side_by_side(base, backend, pipeline, streams, truth,
                                            args.warmup, records['degraded'], (width, height)))
            report['ratio_details'].append(detail)
            restorer.close()
    report['ratios'] = _headline_ratios(report['ratio_details'], backends)
    report['goals'] = _goals(report)
    path = out_dir / 'bench.json'
    path.write_text(json.dumps(report, indent=2, default=_json_default))
    _print_summary(report, path)
    return 0


def _side_by_side(base, backend, pipeline, streams, truth, warmup, degraded_rec, size):
    """Adaptive vs full-frame on half-clean frames; cache on vs off on the degraded stream."""
    width, height = size
    tag = f'{width}x{height}'
    adaptive, _ = _restorer(base, backend, pipeline)
    # Full frame: every cell counts as degraded (scores never exceed 5).
    full, _ = _restorer(base, backend, pipeline, skip_threshold=5.01)
    a = run_stream(adaptive, streams['half_clean'], f'half-{tag}', warmup, truth['half_clean'])
    f = run_stream(full, streams['half_clean'], f'half-{tag}', warmup, truth['half_clean'])
    adaptive.close()
    full.close()
    out = {
        'adaptive_speedup': _ratio(f['ms_per_frame'], a['ms_per_frame']),
        'adaptive_speedup_cpu': _ratio(f['cpu_ms_per_frame'], a['cpu_ms_per_frame']),
        'half_clean_processed_fraction': a['processed_fraction'],
        'half_clean_adaptive_ms': a['ms_per_frame'],
        'half_clean_full_frame_ms': f['ms_per_frame'],
        'half_clean_skipped_fraction': a['skipped_fraction'],
        'cache_speedup': None, 'cache_speedup_cpu': None,
    }
    if truth['degraded'] is not None:
        return out  # given maps: there is no estimation for a cache to save
    no_cache, _ = _restorer(base, backend, pipeline,
                            cache=base.cache.__class__(**{**vars(base.cache), 'enabled': False}))
    off = run_stream(no_cache, streams['degraded'], f'degraded-{tag}', warmup)
    no_cache.close()
    out.update({
        'cache_speedup': _ratio(off['ms_per_frame'], degraded_rec['ms_per_frame']),
        'cache_speedup_cpu': _ratio(off['cpu_ms_per_frame'], degraded_rec['cpu_ms_per_frame']),
        'cache_off_ms': off['ms_per_frame'],
        'cache_on_ms': degraded_rec['ms_per_frame'],
        'cache_on_hit_rate': degraded_rec['cache_hit_rate'],
    })
    return out


def _headline_ratios(details, backends):
    """The contract's three ratios: first resolution, first network backend (else the first)."""
    if not details:
        return {'clean_over_degraded': None, 'adaptive_speedup': None, 'cache_speedup': None}
    order = [b for b in ('adaqual', 'classical', 'passthrough') if b in backends]
    first_res = details[0]['resolution']
    pick = next((d for b in order for d in details
                 if d['backend'] == b and d['resolution'] == first_res), details[0])
    out = {k: pick.get(k) for k in ('clean_over_degraded', 'adaptive_speedup', 'cache_speedup',
                                    'clean_over_degraded_cpu', 'adaptive_speedup_cpu',
                                    'cache_speedup_cpu')}
    out.update(resolution=pick['resolution'], backend=pick['backend'])
    return out


def _goals(report):
    rec = next((r for r in report['records'] if r['backend'] == 'adaqual'
                and r['resolution'] == '640x480' and r['stream'] == 'degraded'), None)
    ratios = report['ratios']
    goals = {}
    if rec is not None:
        goals['fps_640x480_degraded'] = {'value': rec['fps'], 'goal': GOAL_FPS_640,
                                         'met': rec['fps'] >= GOAL_FPS_640}
    if ratios.get('clean_over_degraded') is not None:
        goals['clean_over_degraded'] = {'value': ratios['clean_over_degraded'],
                                        'goal': GOAL_CLEAN_OVER_DEGRADED,
                                        'met': ratios['clean_over_degraded']
                                        <= GOAL_CLEAN_OVER_DEGRADED}
    if ratios.get('adaptive_speedup') is not None:
        goals['adaptive_speedup'] = {'value': ratios['adaptive_speedup'],
                                     'goal': GOAL_ADAPTIVE_SPEEDUP,
                                     'met': ratios['adaptive_speedup'] >= GOAL_ADAPTIVE_SPEEDUP}
    return goals


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


_HEADER = (f'{"resolution":>10} {"backend":>11} {"stream":>8} {"ms/frame":>9} {"cpu ms":>8} '
           f'{"fps":>7} {"quality":>8} {"prompts":>8} {"model":>8} {"blend":>7} {"skip":>5} '
           f'{"run":>5} {"peak MB":>8}')
_printed_header = []


def _print_row(rec):
    if not _printed_header:
        print(_HEADER)
        _printed_header.append(True)
    st = rec['ms_by_stage']
    mem = rec['peak_memory']
    peak = mem['cuda_mb'] or mem['python_traced_mb']
    print(f'{rec["resolution"]:>10} {rec["backend"]:>11} {rec["stream"]:>8} '
          f'{rec["ms_per_frame"]:9.1f} {rec["cpu_ms_per_frame"]:8.1f} {rec["fps"]:7.2f} '
          f'{st["quality"]:8.1f} {st["prompts"]:8.1f} {st["model"]:8.1f} {st["blend"]:7.1f} '
          f'{rec["skipped_fraction"]:5.2f} {rec["processed_fraction"]:5.2f} {peak:8.1f}',
          flush=True)


def _print_summary(report, path):
    print()
    for d in report['ratio_details']:
        parts = [f'{k}={v:.3f}' for k, v in d.items()
                 if isinstance(v, float) and k.split('_cpu')[0] in (
                     'clean_over_degraded', 'adaptive_speedup', 'cache_speedup')]
        if d.get('half_clean_processed_fraction') is not None:
            # the share of the half-clean frame the network ran on: what the speed-up follows
            parts.append(f'half_clean_run={d["half_clean_processed_fraction"]:.2f}')
        print(f'{d["resolution"]:>10} {d["backend"]:>11}  ' + '  '.join(parts))
    for rec in report['records']:
        if 'gflops_per_frame' in rec:
            print(f'{rec["resolution"]:>10} {rec["backend"]:>11}  GFLOPs per degraded frame '
                  f'{rec["gflops_per_frame"]:.1f}')
    for name, goal in report['goals'].items():
        print(f'goal {name}: {goal["value"]:.3f} (goal {goal["goal"]}) '
              f'{"met" if goal["met"] else "NOT met"}')
    for note in report['notes']:
        print(f'note: {note}')
    precision = sorted({r['precision'] for r in report['records'] if r['backend'] == 'adaqual'})
    print(f'model: {report["model"]}; quality maps: {report["quality_source"]}; frames: '
          f'{report["source"]}; device: {report["machine"]["device"]}'
          + (f'; network in {", ".join(precision)}' if precision else ''))
    print(f'wrote {path}')

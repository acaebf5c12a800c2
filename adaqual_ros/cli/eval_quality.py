"""
`adaqual eval-quality`: evaluate the quality estimators and the quality cache.

Writes DIR/quality.json with (at least) "spearman" (overall, held-out synthetic, the evaluated
default estimator), "type_accuracy" and "cache": {"hit_rate", "mean_abs_error"} for the default
cache settings, plus per-estimator and per-condition numbers, the DAWN fog vs clean people.mp4
ordering check and the cache benchmark for several settings; prints a table.
"""
from dataclasses import asdict
import json
import math
from pathlib import Path
import time

from adaqual_ros.assets import assets_root

# Cache settings benchmarked besides the defaults (label -> QualityCache kwargs).
BENCH_SETTINGS = {
    'tight (5, 0.25 s, 0.04)': {'max_frames': 5, 'max_age_s': 0.25, 'scene_threshold': 0.04},
    'long (30, 2 s, 0.08)': {'max_frames': 30, 'max_age_s': 2.0, 'scene_threshold': 0.08},
    'loose (60, 5 s, 0.15)': {'max_frames': 60, 'max_age_s': 5.0, 'scene_threshold': 0.15},
}


def add_arguments(parser):
    parser.add_argument('--out', required=True, help='output folder for quality.json')
    parser.add_argument('--assets', default=None, help='assets root (default: $ADAQUAL_ASSETS)')
    parser.add_argument('--estimators', default='learned,classical',
                        help='comma-separated estimators; the first is the headline one')
    parser.add_argument('--path', default=None,
                        help='weights folder of the learned estimator (default: shipped)')
    parser.add_argument('--cell', type=int, default=64, help='cell size in pixels')
    parser.add_argument('--n-images', type=int, default=None,
                        help='use only the first N held-out images (default: all 68)')
    parser.add_argument('--seed', type=int, default=0, help='held-out set seed')
    parser.add_argument('--bench-frames', type=int, default=None,
                        help='people.mp4 frames in the cache benchmark (default: all)')
    parser.add_argument('--ordering-images', type=int, default=None,
                        help='DAWN fog images (and at most 30 clean frames) in the ordering '
                             'check (default: all 100 fog images, 30 frames)')
    parser.add_argument('--skip-bench', action='store_true', help='skip the cache benchmark')
    parser.add_argument('--threads', type=int, default=2, help='torch threads')


def _fmt(value, digits=3):
    if isinstance(value, float):
        return 'nan' if math.isnan(value) else f'{value:.{digits}f}'
    return str(value)


def _table(rows, header):
    widths = [max(len(str(h)), *(len(_fmt(r[i])) for r in rows)) for i, h in enumerate(header)]
    lines = ['  '.join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines.append('  '.join('-' * w for w in widths))
    lines += ['  '.join(_fmt(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
    return '\n'.join(lines)


def _nan_to_none(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def run(args):
    import torch

    from adaqual_ros.quality import build_estimator
    from adaqual_ros.quality.evaluation import (
        cache_benchmark,
        evaluate_heldout,
        ordering_check,
        time_estimator,
    )
    from adaqual_ros.runtime.settings import CacheSettings
    from adaqual_ros.weather import load_layers

    root = assets_root(args.assets)
    if root is None:
        print('adaqual eval-quality: no assets folder; set ADAQUAL_ASSETS or pass --assets')
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.estimators.split(',') if n.strip()]
    if not names:
        print('adaqual eval-quality: --estimators is empty')
        return 2
    estimators = {}
    for name in names:
        path = args.path if name == 'learned' else None
        estimators[name] = build_estimator(name, cell=args.cell, path=path)
    layers = load_layers(root)
    start = time.monotonic()

    speed = {name: time_estimator(est) for name, est in estimators.items()}
    heldout = evaluate_heldout(estimators, root, n_images=args.n_images, seed=args.seed,
                               cell=args.cell, layers=layers)
    n_order = args.ordering_images
    ordering = ordering_check(estimators, root, n_fog=n_order,
                              n_clean=30 if n_order is None else max(1, min(30, n_order)))
    head = names[0]
    report = {
        'estimator': head,
        'spearman': heldout[head]['spearman'],
        'pearson': heldout[head]['pearson'],
        'mae': heldout[head]['mae'],
        'type_accuracy': heldout[head]['type_accuracy'],
        'heldout': {'set': 'bsds500/val x every condition', 'seed': args.seed,
                    'cell': args.cell, 'estimators': heldout},
        'ordering': ordering,
        'speed': {'threads': args.threads, 'estimators': speed},
    }
    rows = []
    for name, res in heldout.items():
        rows.append([name, 'overall', res['spearman'], res['pearson'], res['mae'],
                     res['type_accuracy'], res['ms_per_frame']])
        for cond, c in res['per_condition'].items():
            rows.append([name, cond, c['spearman'], c['pearson'], c['mae'], c['type_accuracy'],
                         ''])
    print(f'Held-out synthetic set ({heldout[head]["frames"]} frames, cell {args.cell})')
    print(_table(rows, ['estimator', 'condition', 'spearman', 'pearson', 'mae', 'type_acc',
                        'ms/frame']))
    print('\nType strengths (all held-out cells): predicted vs true mean, MAE, Pearson')
    print(_table([[name, t, v['pred_mean'], v['true_mean'], v['mae'], v['pearson']]
                  for name, res in heldout.items() for t, v in res['type_strength'].items()],
                 ['estimator', 'type', 'pred_mean', 'true_mean', 'mae', 'pearson']))
    print(f'\nSpeed, 640x480 frame, {args.threads} torch thread(s)')
    print(_table([[n, v['median_ms'], v['p90_ms'], v['cpu_median_ms']]
                  for n, v in speed.items()],
                 ['estimator', 'wall_median_ms', 'wall_p90_ms', 'thread_cpu_median_ms']))
    print('\nOrdering check: DAWN fog vs clean people.mp4 (mean predicted quality)')
    print(_table([[n, o['fog_mean'], o['clean_mean'], o['ordered']] for n, o in ordering.items()],
                 ['estimator', 'fog', 'clean', 'fog<clean']))

    if not args.skip_bench:
        defaults = CacheSettings()
        settings = {f'default ({defaults.max_frames}, {defaults.max_age_s} s, '
                    f'{defaults.scene_threshold})': {
                        'max_frames': defaults.max_frames, 'max_age_s': defaults.max_age_s,
                        'scene_threshold': defaults.scene_threshold}}
        settings.update(BENCH_SETTINGS)
        bench = cache_benchmark(estimators[head], root, settings, limit=args.bench_frames,
                                layers=layers)
        default_label = next(iter(settings))
        report['cache'] = {'settings': asdict(defaults), **{
            k: bench[default_label][k] for k in
            ('hit_rate', 'mean_abs_error', 'mean_abs_error_all', 'time_saved_s')}}
        report['cache_benchmark'] = {'estimator': head, 'clip': 'people.mp4 at 640x360, 30 fps',
                                     'results': bench}
        print(f'\nCache benchmark ({head} estimator, people.mp4 under synthetic weather)')
        print(_table([[label, r['hit_rate'], r['mean_abs_error'], r['max_abs_error'],
                       r['time_saved_s'], ' '.join(f'{k}:{v}' for k, v in
                                                   r['misses_by_reason'].items())]
                      for label, r in bench.items()],
                     ['settings (frames, age, scene)', 'hit_rate', 'err_hits', 'err_max',
                      'saved_s', 'misses']))
    report['wall_s'] = round(time.monotonic() - start, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'quality.json').write_text(json.dumps(_nan_to_none(report), indent=1))
    print(f'\nwrote {out / "quality.json"} ({report["wall_s"]} s)')
    return 0

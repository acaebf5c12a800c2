"""
`adaqual eval-restore`: PSNR / SSIM of the degraded input, the classical baseline and AdaQual-Diff.

Sets: the seeded held-out synthetic composite set (bsds500/val x the 11 degraded conditions,
built with adaqual_ros.training.datasets.build_heldout_set) and the real pairs in
data/paired/{rain100l,raindrop}. Ablations on the synthetic frames: prompts on / empty / shuffled
between regions, quality-map conditioning on / off (a flat map at the frame's mean), ground-truth
vs estimated quality maps (and which half of the estimate costs what: ground-truth scores with
the estimated types, estimated scores with the ground-truth types), and 1 / 2 / 4 sampling
steps. With --noise-seeds N every AdaQual row is repeated with N start-noise seeds: the tables
give the mean over seeds, the "noise" section each seed's figures and the spread, paired per seed
for the ablation costs. --clean-dir / --clean-video build the synthetic set from other clean
images or from a clean video's frames (choosing between checkpoints without the held-out set, or
on footage like one's own camera). Writes DIR/restore.json and DIR/restore.md.
"""
import json
from pathlib import Path
import sys
import time

import cv2
import numpy as np

from adaqual_ros.cli.restorer_options import QUALITY_MODEL_PATH_HELP, parse_bool

REAL_SETS = ('rain100l', 'raindrop')
ABLATION_COSTS = ('prompts_empty', 'prompts_shuffled', 'quality_off')
HELDOUT_CLEAN_DIR = 'data/clean/bsds500/val'


def add_arguments(parser):
    parser.add_argument('--out', required=True, help='output folder (restore.json, restore.md)')
    parser.add_argument('--assets', help='assets root (default $ADAQUAL_ASSETS)')
    parser.add_argument('--limit', type=int, default=0,
                        help='at most N frames per set (spread over the conditions); 0 = all')
    parser.add_argument('--images', type=int, default=6,
                        help='clean bsds500/val images in the held-out set (x 11 conditions)')
    parser.add_argument('--clean-dir', default=HELDOUT_CLEAN_DIR,
                        help='clean images of the synthetic set, relative to the assets root or '
                             'absolute (another folder, e.g. training images under new weather, '
                             'to choose between checkpoints without looking at the held-out set)')
    parser.add_argument('--clean-video', default=None,
                        help='a clean video instead of --clean-dir (relative to the assets root '
                             'or absolute): every --video-stride-th frame, --video-width px wide, '
                             "is a clean image of the synthetic set (e.g. your own camera's "
                             'footage: how a checkpoint does on frames like it)')
    parser.add_argument('--video-stride', type=int, default=30,
                        help='with --clean-video: keep every N-th frame (default 30)')
    parser.add_argument('--video-width', type=int, default=640,
                        help='with --clean-video: frame width in pixels (default 640)')
    parser.add_argument('--no-real', action='store_true',
                        help='skip the real paired sets (rain100l, raindrop)')
    parser.add_argument('--seed', type=int, default=0, help='held-out set and start-noise seed')
    parser.add_argument('--noise-seeds', type=int, default=1,
                        help='run every AdaQual row with N start-noise seeds (seed, seed+1, ...): '
                             'tables give the mean, the "noise" section the per-seed figures and '
                             'their spread (how large a difference is before it means anything)')
    parser.add_argument('--model', help='pipeline folder (default: the shipped checkpoint)')
    parser.add_argument('--estimator', default='learned',
                        help="quality estimator for AdaQual and classical ('learned', "
                        "'classical'); falls back to 'classical' when 'learned' cannot load")
    parser.add_argument('--quality-model-path', default='',
                        help=QUALITY_MODEL_PATH_HELP)
    parser.add_argument('--steps', type=int, default=2, help='DDIM steps of the main row')
    parser.add_argument('--residual-guide', type=int, default=None,
                        help='radius (px) of the guided filter of the predicted residual '
                             '(0 = off; default: the runtime default)')
    parser.add_argument('--skip-threshold', type=float, default=None,
                        help='score the AdaQual rows as the node delivers them: cells the '
                             'map scores at or above this pass through (soft borders, as the '
                             'runtime); default: every cell restored (the checkpoint itself)')
    parser.add_argument('--skip-margin', type=int, default=0,
                        help='with --skip-threshold: cells around each degraded cell restored '
                             "too (the node's `skip_margin`)")
    parser.add_argument('--whole-frame-share', type=float, default=None,
                        help='with --skip-threshold: share of degraded cells at which the whole '
                             "frame is restored (the node's `whole_frame_share`; default: the "
                             'runtime default; 1 = off)')
    parser.add_argument('--fog-contrast', type=parse_bool, default=False,
                        help="true/false: the classical row with the node's `fog_contrast` "
                             '(contrast equalised after dehazing a fog frame; default false)')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--no-ablations', action='store_true', help='skip the ablations')


def _spread(n_total, limit):
    if not limit or limit >= n_total:
        return list(range(n_total))
    return sorted(set(np.linspace(0, n_total - 1, limit).round().astype(int).tolist()))


def _to_uint8(t):
    return (t.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def _skip_as_runtime(degraded, restored, qmap, threshold, margin, whole_share):
    """``restored`` with the cells the runtime would skip put back from ``degraded`` (uint8)."""
    from adaqual_ros.runtime.restorer import degraded_cells
    from adaqual_ros.runtime.settings import RestorerSettings
    from adaqual_ros.runtime.tiling import skip_alpha

    cells = degraded_cells(qmap.scores, threshold, margin, whole_share, qmap.skip_scores)
    if not cells.any():
        return degraded
    alpha = skip_alpha(cells, degraded.shape[:2], qmap.cell, RestorerSettings().blend_ramp)
    if alpha is None:
        return restored
    # The runtime's uint8 blend (restorer._blend_back), so the figures are the node's frames.
    return cv2.blendLinear(restored, degraded, alpha, 1.0 - alpha)


def _summary(rows, repeats=1):
    """Mean PSNR/SSIM of a list of (psnr, ssim); n = frames (rows / noise seeds per frame)."""
    if not rows:
        return {'psnr': None, 'ssim': None, 'n': 0}
    arr = np.asarray(rows, dtype=np.float64)
    return {'psnr': round(float(arr[:, 0].mean()), 3), 'ssim': round(float(arr[:, 1].mean()), 4),
            'n': len(rows) // repeats}


class _Scores:
    """Accumulates (psnr, ssim) per method, set and condition."""

    def __init__(self):
        self.rows = {}

    def add(self, method, dataset, condition, restored, clean):
        from adaqual_ros.metrics.image import psnr, ssim

        value = (psnr(restored, clean), ssim(restored, clean))
        self.rows.setdefault(method, {}).setdefault(dataset, {}).setdefault(
            condition, []).append(value)
        return value

    @classmethod
    def merged(cls, parts):
        """One _Scores holding the rows of all `parts` (e.g. every noise seed's)."""
        out = cls()
        for part in parts:
            for method, per_set in part.rows.items():
                for dataset, per_cond in per_set.items():
                    for condition, rows in per_cond.items():
                        out.rows.setdefault(method, {}).setdefault(dataset, {}).setdefault(
                            condition, []).extend(rows)
        return out

    def table(self, method, repeats=1):
        """Per-set summaries of `method`; `repeats`: noise seeds each frame was scored with."""
        out = {}
        for dataset, per_cond in self.rows.get(method, {}).items():
            rows = [r for v in per_cond.values() for r in v]
            entry = _summary(rows, repeats)
            if len(per_cond) > 1 or dataset == 'synthetic':
                entry['per_condition'] = {c: _summary(v, repeats)
                                          for c, v in sorted(per_cond.items())}
            out[dataset] = entry
        return out


def _load_estimator(name, cell, path=''):
    from adaqual_ros.quality import build_estimator
    from adaqual_ros.runtime.restorer import estimator_options
    from adaqual_ros.runtime.settings import RestorerSettings

    # The runtime's local context too, so "as the node delivers" skips the node's cells.
    options = estimator_options(name, RestorerSettings().quality_context)
    try:
        return build_estimator(name, cell=cell, path=path or None, **options), name
    except (FileNotFoundError, OSError, ValueError) as exc:
        if name == 'classical' or path:
            raise
        print(f'eval-restore: estimator {name!r} unavailable ({exc}); using classical')
        return build_estimator('classical', cell=cell), 'classical'


def _whole_share(args):
    """--whole-frame-share, or the runtime's default (it applies with --skip-threshold only)."""
    from adaqual_ros.runtime.settings import RestorerSettings

    if args.whole_frame_share is None:
        return RestorerSettings().whole_frame_share
    return args.whole_frame_share


def _restored_whole(qmap, args):
    """Whether the runtime would restore this frame whole (every cell without --skip-threshold)."""
    from adaqual_ros.runtime.restorer import degraded_cells

    if args.skip_threshold is None:
        return True
    return bool(degraded_cells(qmap.scores, args.skip_threshold, args.skip_margin,
                               _whole_share(args), qmap.skip_scores).all())


def _argument_problem(args):
    """The reason the arguments cannot run, or None."""
    if args.clean_video and args.clean_dir != HELDOUT_CLEAN_DIR:
        return 'give --clean-dir or --clean-video, not both'
    if args.noise_seeds < 1:
        return f'--noise-seeds must be at least 1, got {args.noise_seeds}'
    if args.skip_margin and args.skip_threshold is None:
        return '--skip-margin needs --skip-threshold (without it every cell is restored)'
    if args.whole_frame_share is not None and args.skip_threshold is None:
        return '--whole-frame-share needs --skip-threshold (without it every cell is restored)'
    if args.skip_threshold is not None:
        from adaqual_ros.runtime.restorer import validate_settings
        from adaqual_ros.runtime.settings import RestorerSettings

        try:
            validate_settings(RestorerSettings(skip_threshold=args.skip_threshold,
                                               skip_margin=args.skip_margin,
                                               whole_frame_share=_whole_share(args)))
        except ValueError as exc:
            return str(exc)
    if args.video_stride < 1 or args.video_width < 64:
        return (f'--video-stride must be >= 1 and --video-width >= 64, got {args.video_stride}, '
                f'{args.video_width}')
    return None


def run(args):
    problem = _argument_problem(args)
    if problem:
        print(f'adaqual eval-restore: {problem}', file=sys.stderr)
        return 2
    import torch

    from adaqual_ros.assets import assets_root
    from adaqual_ros.pipelines.pipeline_adaqual import AdaQualPipeline, neutral_quality_map
    from adaqual_ros.prompting.prompter import empty_prompts, shuffle_prompts
    from adaqual_ros.quality.types import QualityMap
    from adaqual_ros.runtime.settings import RestorerSettings
    from adaqual_ros.training.datasets import HeldoutSet, PairedFolder, build_heldout_set
    from adaqual_ros.weather import CONDITIONS, load_layers

    try:
        from adaqual_ros.runtime.classical import classical_restore
    except ImportError:  # the runtime's classical restorer is optional here
        classical_restore = None

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    root = assets_root(args.assets)
    if root is None:
        raise FileNotFoundError('no assets: pass --assets DIR or set ADAQUAL_ASSETS')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    pipe = AdaQualPipeline.from_pretrained(args.model) if args.model else \
        AdaQualPipeline.from_pretrained()
    cell = pipe.config.cell
    from adaqual_ros.pipelines import estimator_weights
    quality_path = estimator_weights(args.estimator, args.quality_model_path,
                                     args.model or None) or ''
    estimator, est_name = _load_estimator(args.estimator, cell, quality_path)
    pipe.estimator = estimator
    # The classical row reads frames as the classical backend does: with the default estimator,
    # not the one the model was trained with (`estimator_weights`, paired=False).
    classical_path = estimator_weights(args.estimator, args.quality_model_path, paired=False) \
        or ''
    classical_estimator = estimator if classical_path == quality_path else \
        _load_estimator(args.estimator, cell, classical_path)[0]

    # The held-out set is written once per (images, seed) and reused.
    if args.clean_video:
        from adaqual_ros.io.video import extract_frames
        clean_dir = extract_frames(root / args.clean_video, out, args.video_stride,
                                   args.video_width)
        tag = '_' + clean_dir.name
    else:
        clean_dir = root / args.clean_dir
        tag = '' if Path(args.clean_dir) == Path(HELDOUT_CLEAN_DIR) else \
            '_' + '_'.join(Path(args.clean_dir).parts[-2:])
    held_dir = out / f'heldout{tag}_n{args.images}_s{args.seed}'
    if not (held_dir / 'manifest.json').is_file():
        layers = load_layers(root / 'data' / 'weather_layers')
        build_heldout_set(clean_dir, held_dir, args.images,
                          args.seed, conditions=CONDITIONS[1:], cell=cell, layers=layers,
                          overwrite=True)
    held = HeldoutSet(held_dir)

    noise_seeds = [args.seed + k for k in range(args.noise_seeds)]
    # Deterministic rows (input, classical) once per frame; AdaQual rows once per noise seed.
    scores, per_seed, t0 = _Scores(), {s: _Scores() for s in noise_seeds}, time.time()
    # The estimator's cells next to the synthesis' on this set: what the restorer is told.
    cells = {'pq': [], 'tq': [], 'pt': [], 'tt': []}
    timing = {'adaqual_ms': []}

    guide = (RestorerSettings().residual_guide if args.residual_guide is None
             else args.residual_guide)

    def restore(x, qmap, seed, steps=args.steps, prompts=None):
        g = torch.Generator().manual_seed(seed)
        t = time.perf_counter()
        res = pipe(x[None], [qmap], generator=g, num_inference_steps=steps,
                   prompts=None if prompts is None else [prompts], residual_guide=guide)
        timing['adaqual_ms'].append((time.perf_counter() - t) * 1000)
        restored = _to_uint8(res.images[0])
        if args.skip_threshold is not None:
            restored = _skip_as_runtime(_to_uint8(x), restored, qmap, args.skip_threshold,
                                        args.skip_margin, _whole_share(args))
        return restored, res.prompts[0]

    def evaluate(dataset, condition, lq_t, gt, gt_qmap=None, ablate=False):
        lq = _to_uint8(lq_t)
        qmap = estimator.estimate(lq)
        if gt_qmap is not None and gt_qmap.scores.shape == qmap.scores.shape:
            cells['pq'].append(qmap.scores.reshape(-1))
            cells['tq'].append(gt_qmap.scores.reshape(-1))
            cells['pt'].append(qmap.type_probs.reshape(-1, qmap.type_probs.shape[-1]))
            cells['tt'].append(gt_qmap.type_probs.reshape(-1, gt_qmap.type_probs.shape[-1]))
        scores.add('input', dataset, condition, lq, gt)
        if classical_restore is not None:
            cmap = qmap if classical_estimator is estimator else classical_estimator.estimate(lq)
            scores.add('classical', dataset, condition,
                       classical_restore(lq, cmap, _restored_whole(cmap, args),
                                         args.fog_contrast), gt)
        for seed in noise_seeds:
            evaluate_adaqual(per_seed[seed], seed, dataset, condition, lq_t, gt, qmap, gt_qmap,
                             ablate)

    def evaluate_adaqual(seed_scores, seed, dataset, condition, lq_t, gt, qmap, gt_qmap,
                         ablate):
        def add(method, restored):
            seed_scores.add(method, dataset, condition, restored, gt)

        restored, prompts = restore(lq_t, qmap, seed)
        add('adaqual', restored)
        if gt_qmap is not None:
            add('adaqual_gt_quality', restore(lq_t, gt_qmap, seed)[0])
        if not ablate:
            return
        # The shuffle is part of the ablation, not of the noise: the same for every noise seed.
        rng = np.random.default_rng(args.seed)
        abl = {
            'prompts_empty': {'prompts': empty_prompts(prompts)},
            'prompts_shuffled': {'prompts': shuffle_prompts(prompts, rng)},
        }
        for name, kw in abl.items():
            add(f'ablation/{name}', restore(lq_t, qmap, seed, **kw)[0])
        flat = neutral_quality_map(qmap)
        add('ablation/quality_off', restore(lq_t, flat, seed, prompts=prompts)[0])
        if gt_qmap is not None:
            # Where the estimated map's cost comes from: its scores or its type strengths.
            mixes = {'gt_scores': QualityMap(gt_qmap.scores, qmap.type_probs, qmap.cell,
                                             qmap.image_size),
                     'gt_types': QualityMap(qmap.scores, gt_qmap.type_probs, qmap.cell,
                                            qmap.image_size)}
            for name, mixed in mixes.items():
                add(f'ablation/{name}', restore(lq_t, mixed, seed)[0])
        for steps in (1, 2, 4):
            img = restored if steps == args.steps else restore(lq_t, qmap, seed, steps=steps)[0]
            add(f'ablation/steps_{steps}', img)

    picked = _spread(len(held), args.limit)
    for k, i in enumerate(picked):
        item = held[i]
        gt = _to_uint8(item['gt'])
        gt_qmap = QualityMap(item['quality'].numpy(), item['types'].numpy(), held.cell,
                             gt.shape[:2])
        evaluate('synthetic', item['condition'], item['lq'], gt, gt_qmap,
                 ablate=not args.no_ablations)
        print(f'synthetic {k + 1}/{len(picked)} {item["id"]}', flush=True)
    for name in () if args.no_real else REAL_SETS:
        folder = root / 'data' / 'paired' / name
        if not folder.is_dir():
            print(f'eval-restore: {folder} missing, skipping {name}')
            continue
        pairs = PairedFolder(folder)
        for i in _spread(len(pairs), args.limit):
            item = pairs[i]
            evaluate(name, name, item['lq'], _to_uint8(item['gt']))
        print(f'{name}: {len(pairs)} pairs', flush=True)

    pooled = _Scores.merged(per_seed.values())  # the tables: means over frames and seeds
    results = {m: scores.table(m) for m in ('input', 'classical') if m in scores.rows}
    results.update({m: pooled.table(m, len(noise_seeds))
                    for m in ('adaqual', 'adaqual_gt_quality') if m in pooled.rows})
    ablations = {}
    if not args.no_ablations:
        syn = {'prompts_on': results['adaqual'].get('synthetic')}
        for name in ('prompts_empty', 'prompts_shuffled', 'quality_off', 'gt_scores',
                     'gt_types', 'steps_1', 'steps_2', 'steps_4'):
            syn[name] = pooled.table(f'ablation/{name}', len(noise_seeds)).get('synthetic')
        syn['quality_on'] = syn['prompts_on']
        base = syn['prompts_on']['psnr']
        ablations = {'synthetic': syn, 'psnr_cost_db': {
            k: round(base - syn[k]['psnr'], 3) for k in ABLATION_COSTS}}
    report = {
        'results': results,
        'ablations': ablations,
        'quality_map': _map_agreement(cells),
        'noise': _noise_spread(per_seed, ablate=not args.no_ablations),
        'settings': {'model': str(args.model or 'shipped'), 'estimator': est_name,
                     'estimator_path': str(quality_path or 'shipped'),
                     'classical_estimator_path': str(classical_path or 'shipped'),
                     'steps': args.steps, 'residual_guide': guide, 'seed': args.seed,
                     'fog_contrast': args.fog_contrast,
                     'skip_threshold': args.skip_threshold,
                     'skip_margin': args.skip_margin if args.skip_threshold is not None else None,
                     'whole_frame_share': (_whole_share(args)
                                           if args.skip_threshold is not None else None),
                     'noise_seeds': noise_seeds,
                     'images': args.images,
                     'limit': args.limit, 'heldout': str(held_dir),
                     'clean_dir': str(clean_dir if args.clean_video else args.clean_dir),
                     'clean_video': args.clean_video,
                     'frames_synthetic': len(picked),
                     'classical': classical_restore is not None},
        'timing': {'adaqual_ms_mean': round(float(np.mean(timing['adaqual_ms'])), 1),
                   'wall_s': round(time.time() - t0, 1)},
    }
    (out / 'restore.json').write_text(json.dumps(report, indent=1))
    (out / 'restore.md').write_text(_markdown(report))
    print(_markdown(report))
    return 0



def _map_agreement(cells):
    """Estimated vs synthesised quality map on the synthetic frames (None without them)."""
    from adaqual_ros.quality.evaluation import score_cells

    if not cells['pq']:
        return None
    block = score_cells(*(np.concatenate(cells[k]) for k in ('pq', 'tq', 'pt', 'tt')))
    return {'cells': block['cells'], 'spearman': block['spearman'], 'mae': block['mae'],
            'type_strength': block['type_strength']}


def _noise_spread(per_seed, ablate):
    """Each start-noise seed's mean PSNR per AdaQual row and set, and the spread over seeds.

    Ablation costs are paired per seed (same noise with and without the ablation), which is the
    spread a cost has to clear to mean something.
    """
    seeds = sorted(per_seed)
    rows = {}
    for method in ('adaqual', 'adaqual_gt_quality'):
        for dataset in ('synthetic', *REAL_SETS):
            vals = [per_seed[s].table(method).get(dataset, {}).get('psnr') for s in seeds]
            if all(v is not None for v in vals):
                rows[f'{method}/{dataset}'] = vals
    costs = {}
    if ablate:
        for name in ABLATION_COSTS:
            vals = []
            for s in seeds:
                on = per_seed[s].table('adaqual')['synthetic']['psnr']
                off = per_seed[s].table(f'ablation/{name}')['synthetic']['psnr']
                vals.append(round(on - off, 3))
            costs[name] = vals

    def spread(vals):
        arr = np.asarray(vals, dtype=np.float64)
        return {'per_seed': [round(float(v), 3) for v in arr],
                'mean': round(float(arr.mean()), 3),
                'std': round(float(arr.std(ddof=1)), 3) if len(arr) > 1 else None,
                'range': round(float(arr.max() - arr.min()), 3)}

    return {'seeds': seeds, 'psnr': {k: spread(v) for k, v in rows.items()},
            'psnr_cost_db': {k: spread(v) for k, v in costs.items()}}


def _fmt(entry):
    if not entry or entry.get('psnr') is None:
        return '-'
    return f'{entry["psnr"]:.2f} / {entry["ssim"]:.3f}'


def _markdown(report):
    res = report['results']
    sets = ['synthetic', *REAL_SETS]
    lines = ['# Restoration quality (PSNR dB / SSIM)', '',
             '| method | ' + ' | '.join(sets) + ' |', '|---' * (len(sets) + 1) + '|']
    for m, per in res.items():
        lines.append(f'| {m} | ' + ' | '.join(_fmt(per.get(s)) for s in sets) + ' |')
    syn = {m: per.get('synthetic', {}).get('per_condition', {}) for m, per in res.items()}
    conds = sorted({c for v in syn.values() for c in v})
    if conds:
        lines += ['', '## Synthetic, per condition', '',
                  '| condition | ' + ' | '.join(res) + ' |', '|---' * (len(res) + 1) + '|']
        for c in conds:
            lines.append(f'| {c} | ' + ' | '.join(_fmt(syn[m].get(c)) for m in res) + ' |')
    abl = report.get('ablations', {}).get('synthetic')
    if abl:
        lines += ['', '## Ablations (synthetic)', '', '| variant | PSNR / SSIM |', '|---|---|']
        for k, v in abl.items():
            lines.append(f'| {k} | {_fmt(v)} |')
        cost = report['ablations']['psnr_cost_db']
        lines += ['', 'PSNR cost vs full model (dB): ' + ', '.join(
            f'{k} {v:+.3f}' for k, v in cost.items())]
    qm = report.get('quality_map')
    if qm:
        lines += ['', f'## Estimated vs synthesised quality map ({qm["cells"]} synthetic cells: '
                  f'score Spearman {qm["spearman"]:.3f}, MAE {qm["mae"]:.3f})', '',
                  '| type | mean strength, estimated | mean strength, synthesis | Pearson |',
                  '|---|---|---|---|']
        for name, v in qm['type_strength'].items():
            lines.append(f'| {name} | {v["pred_mean"]:.3f} | {v["true_mean"]:.3f} | '
                         f'{v["pearson"]:.3f} |')
    noise = report.get('noise', {})
    if len(noise.get('seeds', [])) > 1:
        lines += ['', f'## Start-noise spread ({len(noise["seeds"])} seeds: '
                  f'{", ".join(map(str, noise["seeds"]))})', '',
                  '| row | per seed (PSNR dB) | mean | std | range |', '|---|---|---|---|---|']
        for key, v in {**noise['psnr'],
                       **{f'cost/{k}': v for k, v in noise['psnr_cost_db'].items()}}.items():
            lines.append(f'| {key} | {" ".join(f"{x:.2f}" for x in v["per_seed"])} | '
                         f'{v["mean"]:.3f} | {v["std"]:.3f} | {v["range"]:.3f} |')
    s = report['settings']
    lines += ['', f'Estimator: {s["estimator"]}; steps {s["steps"]}; seed {s["seed"]}; '
              f'noise seeds {len(s["noise_seeds"])}; '
              f'{s["frames_synthetic"]} synthetic frames; mean AdaQual time '
              f'{report["timing"]["adaqual_ms_mean"]} ms per frame.', '']
    return '\n'.join(lines)

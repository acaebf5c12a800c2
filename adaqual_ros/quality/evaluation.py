"""
Evaluation of quality estimators and of the quality cache (used by `adaqual eval-quality`).

- `evaluate_heldout`: Spearman/Pearson/MAE of regional scores and type accuracy on the seeded
  held-out synthetic set, overall and per condition.
- `ordering_check`: mean predicted quality on real DAWN fog images versus clean people.mp4 frames.
- `cache_benchmark`: people.mp4 under synthetic weather (`WeatherStream`) through `QualityCache`
  for several settings: hit rate, misses by reason, estimator time saved, and the error of the
  maps the cache served against a fresh estimate of the same frame.
"""
from pathlib import Path
import time

import cv2
import numpy as np
from scipy import stats as sstats

from adaqual_ros.quality.cache import QualityCache
from adaqual_ros.quality.data import heldout_samples, list_images, read_rgb
from adaqual_ros.quality.types import DEGRADATION_TYPES

# A cell counts as degraded for type accuracy when its true quality is at most this.
DEGRADED_MAX_QUALITY = 4.0
# A type counts as present in a cell when its damage (true) or strength (predicted) reaches this.
TYPE_PRESENT = 0.1


def _corr(pred, true):
    if len(pred) < 3 or np.ptp(true) < 1e-6 or np.ptp(pred) < 1e-6:
        return float('nan'), float('nan')
    return (float(sstats.spearmanr(pred, true).statistic),
            float(sstats.pearsonr(pred, true).statistic))


def score_cells(pred_q, true_q, pred_t, true_t):
    """Metrics of one pool of cells (1-D scores, (N, 4) types): eval-quality and eval-restore."""
    spearman, pearson = _corr(pred_q, true_q)
    degraded = true_q <= DEGRADED_MAX_QUALITY
    dominant = (float(np.mean(pred_t[degraded].argmax(1) == true_t[degraded].argmax(1)))
                if degraded.any() else float('nan'))
    presence = np.mean((pred_t >= TYPE_PRESENT) == (true_t >= TYPE_PRESENT), axis=0)
    # Per type: how well the strength itself is predicted (the restorer's FiLM and prompts read
    # the strengths, not only the strongest type).
    strength = {}
    for k, name in enumerate(DEGRADATION_TYPES):
        pearson_k = _corr(pred_t[:, k], true_t[:, k])[1]
        strength[name] = {'mae': float(np.mean(np.abs(pred_t[:, k] - true_t[:, k]))),
                          'pearson': pearson_k,
                          'pred_mean': float(pred_t[:, k].mean()),
                          'true_mean': float(true_t[:, k].mean())}
    return {
        'cells': int(len(true_q)),
        'spearman': spearman,
        'pearson': pearson,
        'mae': float(np.mean(np.abs(pred_q - true_q))),
        'type_accuracy': dominant,
        'type_presence_accuracy': float(presence.mean()),
        'type_strength': strength,
    }


def evaluate_heldout(estimators, assets, n_images=None, seed=0, cell=64, layers=None):
    """
    Score estimators on the seeded held-out synthetic set (bsds500/val under every condition).

    Args:
        estimators (`dict[str, estimator]`): name -> object with `.estimate`.
        assets: assets root.
        n_images (`int`, *optional*): use only the first n held-out images.

    Returns:
        `dict`: name -> {overall metrics, 'per_condition': {condition: metrics}, 'ms_per_frame'}.
        ``type_accuracy`` is the share of degraded cells (true quality <= 4) whose strongest
        predicted type is the strongest true type.
    """
    pools = {name: {'pq': [], 'pt': [], 'ms': 0.0} for name in estimators}
    true_q, true_t, conds = [], [], []
    frames = 0
    for name, sample in heldout_samples(assets, n_images=n_images, seed=seed, cell=cell,
                                        layers=layers):
        condition = name.split('/')[1]
        true_q.append(sample.quality.reshape(-1))
        true_t.append(sample.types.reshape(-1, 4))
        conds.extend([condition] * sample.quality.size)
        frames += 1
        for est_name, est in estimators.items():
            start = time.perf_counter()
            qmap = est.estimate(sample.degraded)
            pools[est_name]['ms'] += (time.perf_counter() - start) * 1000
            pools[est_name]['pq'].append(qmap.scores.reshape(-1))
            pools[est_name]['pt'].append(qmap.type_probs.reshape(-1, 4))
    if not frames:
        raise ValueError('the held-out set is empty')
    tq, tt, conds = np.concatenate(true_q), np.concatenate(true_t), np.asarray(conds)
    results = {}
    for est_name, pool in pools.items():
        pq, pt = np.concatenate(pool['pq']), np.concatenate(pool['pt'])
        entry = score_cells(pq, tq, pt, tt)
        entry['frames'] = frames
        entry['ms_per_frame'] = pool['ms'] / frames
        entry['per_condition'] = {
            c: score_cells(pq[conds == c], tq[conds == c], pt[conds == c], tt[conds == c])
            for c in dict.fromkeys(conds)}
        results[est_name] = entry
    return results


def read_video_frames(path, every=1, limit=None, size=None):
    """RGB uint8 frames of a video (every n-th, at most ``limit``, resized to ``size`` (w, h))."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f'cannot open video {path}')
    frames, index = [], 0
    try:
        while limit is None or len(frames) < limit:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % every == 0:
                if size is not None:
                    bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
            index += 1
    finally:
        cap.release()
    if not frames:
        raise ValueError(f'no frames read from {path}')
    return frames


def ordering_check(estimators, assets, n_fog=None, n_clean=30, max_side=640):
    """
    Mean predicted quality on real fog (DAWN) versus clean street frames (people.mp4).

    Both sets are area-downscaled to at most ``max_side`` on the long side first, so the
    comparison is not a resolution effect.

    Returns:
        `dict`: name -> {'fog_mean', 'clean_mean', 'fog_haze_prob', 'clean_haze_prob',
        'ordered' (fog_mean < clean_mean)}.
    """
    root = Path(assets)
    fog_files = list_images(root / 'data' / 'dawn_fog_dev' / 'images')[:n_fog]
    fog = [read_rgb(f, max_side) for f in fog_files]
    video = root / 'data' / 'video' / 'people.mp4'
    clean = [_fit(f, max_side)
             for f in read_video_frames(video, every=max(1, 302 // n_clean), limit=n_clean)]
    out = {}
    for name, est in estimators.items():
        fog_maps = est.estimate_batch(fog)
        clean_maps = est.estimate_batch(clean)
        fog_mean = float(np.mean([m.scores.mean() for m in fog_maps]))
        clean_mean = float(np.mean([m.scores.mean() for m in clean_maps]))
        out[name] = {
            'fog_images': len(fog), 'clean_frames': len(clean),
            'fog_mean': fog_mean, 'clean_mean': clean_mean,
            'fog_haze_prob': float(np.mean([m.type_probs[..., 1].mean() for m in fog_maps])),
            'clean_haze_prob': float(np.mean([m.type_probs[..., 1].mean() for m in clean_maps])),
            'ordered': fog_mean < clean_mean,
        }
    return out


def _fit(frame, max_side):
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    return cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


DEFAULT_BENCH_CONDITIONS = ('clean', 'rain', 'haze', 'snow', 'low_rain', 'haze_snow')


def cache_benchmark(estimator, assets, settings, conditions=DEFAULT_BENCH_CONDITIONS,
                    size=(640, 360), fps=30.0, severity=0.5, seed=0, limit=None, layers=None):
    """
    Replay people.mp4 under synthetic weather through `QualityCache` for several settings.

    Args:
        estimator: the estimator whose maps are cached.
        settings (`dict[str, dict]`): label -> QualityCache kwargs (max_frames, max_age_s,
            scene_threshold).
        conditions (`tuple[str]`): weather conditions, each a `WeatherStream` (fields fixed,
            particles and noise new every frame).
        size (`tuple[int, int]`): frames are resized to (w, h).
        fps (`float`): frame timestamps are index / fps.

    Returns:
        `dict`: label -> {'hit_rate', 'mean_abs_error' (served cached maps vs a fresh map of the
        same frame, over hits), 'mean_abs_error_all' (over every frame; misses count 0),
        'max_abs_error', 'time_saved_s', 'estimator_s', 'misses_by_reason', 'per_condition'}.
    """
    from adaqual_ros.weather import WeatherStream

    clean_frames = read_video_frames(Path(assets) / 'data' / 'video' / 'people.mp4', size=size,
                                     limit=limit)
    streams = {}
    for k, condition in enumerate(conditions):
        stream = WeatherStream(condition, seed=seed + k, severity=severity if condition != 'clean'
                               else None, layers=layers)
        degraded = [stream.apply(f).degraded for f in clean_frames]
        fresh = [estimator.estimate(f) for f in degraded]
        streams[condition] = (degraded, fresh)
    results = {}
    for label, kwargs in settings.items():
        per_condition = {}
        totals = {'frames': 0, 'hits': 0, 'err_hits': 0.0, 'err_max': 0.0, 'saved': 0.0,
                  'spent': 0.0, 'misses': {}}
        for condition, (degraded, fresh) in streams.items():
            cache = QualityCache(**kwargs)
            errors, hits = [], 0
            for i, frame in enumerate(degraded):
                qmap, decision = cache.get_or_compute(condition, frame, estimator, now=i / fps)
                err = float(np.mean(np.abs(qmap.scores - fresh[i].scores)))
                if decision.hit:
                    hits += 1
                    errors.append(err)
            st = cache.stats()
            n = len(degraded)
            per_condition[condition] = {
                'hit_rate': hits / n,
                'mean_abs_error': float(np.mean(errors)) if errors else 0.0,
                'max_abs_error': float(np.max(errors)) if errors else 0.0,
                'misses_by_reason': {k: v for k, v in st['misses_by_reason'].items() if v},
            }
            totals['frames'] += n
            totals['hits'] += hits
            totals['err_hits'] += float(np.sum(errors))
            totals['err_max'] = max(totals['err_max'], per_condition[condition]['max_abs_error'])
            totals['saved'] += st['time_saved_s']
            totals['spent'] += st['compute_s']
            for k, v in st['misses_by_reason'].items():
                if v:
                    totals['misses'][k] = totals['misses'].get(k, 0) + v
        hits = totals['hits']
        results[label] = {
            'settings': dict(kwargs),
            'frames': totals['frames'],
            'hit_rate': hits / totals['frames'],
            'mean_abs_error': totals['err_hits'] / hits if hits else 0.0,
            'mean_abs_error_all': totals['err_hits'] / totals['frames'],
            'max_abs_error': totals['err_max'],
            'time_saved_s': totals['saved'],
            'estimator_s': totals['spent'],
            'misses_by_reason': totals['misses'],
            'per_condition': per_condition,
        }
    return results


def time_estimator(estimator, size=(480, 640), repeats=30, warmup=3, seed=0):
    """
    Wall time (median, 90th percentile) and calling-thread CPU time (median) of `estimate`, in ms.

    On a shared machine the wall time includes waiting for a core; with one torch thread the
    thread CPU time is what the frame costs on an otherwise idle core.
    """
    frame = np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)
    for _ in range(warmup):
        estimator.estimate(frame)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        estimator.estimate(frame)
        cpu.append((time.thread_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    return {'size': list(size), 'median_ms': float(np.median(wall)),
            'p90_ms': float(np.percentile(wall, 90)), 'cpu_median_ms': float(np.median(cpu)),
            'repeats': repeats}

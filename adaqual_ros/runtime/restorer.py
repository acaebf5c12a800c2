"""
The Restorer: one call per camera frame, compute that follows degradation.

    restorer = Restorer(RestorerSettings(backend='adaqual'))
    result = restorer.restore(frame_bgr, stream_id='front', color_order='bgr')
    result.image          # same shape, dtype and colour order as the input

Per frame: convert once to RGB -> quality map through the per-stream cache -> cells at or above
``skip_threshold`` are skipped unless within ``skip_margin`` cells of a degraded one, or unless
``whole_frame_share`` of the cells are degraded (then none is; a clean frame returns at once,
bit-identical) -> the backend
restores cell-aligned windows over the degraded cells, batched -> restored and original pixels are
blended (soft ramp at skip borders, skipped pixels exact) -> converted back to the input format.

When the network runs out of memory, the same frame is retried with half the tiles per call, then
half the tile size (down to MIN_OOM_TILE), then on the CPU in float32; each step is logged once and
kept for later frames (`MemoryLimits`). Only when the CPU fails too does the frame fail.
"""
from dataclasses import dataclass, field, fields, replace
import logging
import threading
import time
import warnings
import zlib

import cv2
import numpy as np

from adaqual_ros.io.codec import to_uint8
from adaqual_ros.quality.types import QualityMap
from adaqual_ros.runtime.backends import StreamState, build_backend
from adaqual_ros.runtime.device import configure_threads, release_cached_memory, resolve_device
from adaqual_ros.runtime.faults import is_out_of_memory
from adaqual_ros.runtime.settings import (
    AUTO_TILE,
    BACKENDS,
    COMPILE_MODES,
    MAX_QUALITY_CONTEXT,
    MAX_RESIDUAL_GUIDE,
    MAX_SKIP_MARGIN,
    MAX_SKIP_THRESHOLD,
    MIN_SKIP_THRESHOLD,
    QUALITY_BACKENDS,
    STREAM_SETTINGS,
    WHOLE_FRAME_HYSTERESIS,
    CacheSettings,
    RestorerSettings,
    tile_size_for,
    whole_frames_for,
)
from adaqual_ros.runtime.tiling import plan_windows, skip_alpha

logger = logging.getLogger(__name__)

COLOR_ORDERS = ('rgb', 'bgr', 'mono')
DEFAULT_CELL = 64  # quality cell of backends without a model
DTYPES = (np.uint8, np.uint16, np.float32)
STAGES = ('convert', 'quality', 'prompts', 'model', 'blend', 'total')
MIN_OOM_TILE = 128  # px: the out-of-memory retries halve tiles down to this (rounded to the cell)
# Settings that make the backend object (a change builds a new one).
_BACKEND_SETTINGS = ('backend', 'model_path', 'device', 'half', 'cpu_bf16', 'compile',
                     'compile_mode', 'channels_last', 'cudnn_benchmark', 'fallback_to_classical')
# Settings whose change needs a new backend or estimator (built off the caller's thread).
_HEAVY = _BACKEND_SETTINGS + ('quality_backend', 'quality_model_path', 'quality_context')
_LIGHT = tuple(f.name for f in fields(RestorerSettings) if f.name not in _HEAVY)


class RestorationError(RuntimeError):
    """Restoration of a frame failed; the ROS node decides whether to pass through or drop."""


class InvalidFrameError(RestorationError, ValueError):
    """The frame cannot be restored as given (shape, dtype, colour order, values)."""


@dataclass
class RestoreResult:
    """
    The outcome of `Restorer.restore`.

    Args:
        image (`np.ndarray`): restored frame, same shape, dtype and colour order as the input.
        quality_map (`QualityMap`): regional quality of the input frame.
        prompts (`PromptSet`, *optional*): prompts of the frame (adaqual backend; None when the
            frame was skipped or the backend uses none).
        timings (`dict[str, float]`): milliseconds per stage: convert, quality, prompts, model,
            blend, total.
        skipped_fraction (`float`): share of the frame's pixels passed through untouched.
        backend (`str`): the backend that handled the frame.
        cache_hit (`bool`, *optional*): whether the quality map came from the cache (None when the
            cache is off or the map was given).
        windows (`int`): windows run through the backend.
        processed_fraction (`float`): pixels the backend ran on (windows with their overlaps;
            the classical backend: their bounding box) divided by the frame's pixels; 0 for a
            skipped frame.
        oom_retries (`int`): times this frame was retried after the network ran out of memory.
    """

    image: np.ndarray
    quality_map: QualityMap
    prompts: object = None
    timings: dict = field(default_factory=dict)
    skipped_fraction: float = 1.0
    backend: str = ''
    cache_hit: object = None
    windows: int = 0
    processed_fraction: float = 0.0
    oom_retries: int = 0

    def describe(self, stamp_ns, frame_id):
        """
        The frame's record as the restoration node publishes it on `prompts` (std_msgs/String
        JSON) and `adaqual restore` writes it: stamp, frame_id, the quality grid and the
        reads that chose the skipped cells, the prompts, the shares skipped and processed, the
        stage timings. JSON-ready (plain numbers and lists).
        """
        qmap = self.quality_map
        sec, nanosec = divmod(int(stamp_ns), 10 ** 9)
        record = {'stamp': {'sec': sec, 'nanosec': nanosec}, 'frame_id': frame_id,
                  'cell': int(qmap.cell), 'grid': list(qmap.scores.shape),
                  'backend': self.backend, 'cache_hit': self.cache_hit,
                  'skipped_fraction': _num(self.skipped_fraction),
                  'processed_fraction': _num(self.processed_fraction),
                  'scores': np.round(qmap.scores, 3).tolist(),
                  'timings_ms': {k: _num(v) for k, v in (self.timings or {}).items()}}
        if qmap.skip_scores is not None:
            # the read that chose which cells passed (`quality_context`)
            record['skip_scores'] = np.round(qmap.skip_scores, 3).tolist()
        prompts = self.prompts
        if prompts is None:  # a skipped frame, or a backend without prompts: what they'd be
            from adaqual_ros.prompting import build_prompts

            prompts = build_prompts(qmap)
        record['prompts'] = prompts.to_dict()
        return record


@dataclass(frozen=True)
class MemoryLimits:
    """
    Caps on tiling after the backend's device ran out of memory (0 = no cap).

    They belong to one backend: kept across setting changes that keep it, dropped with it.

    Args:
        tile (`int`): largest tile edge in pixels; under a cap tiles are not merged.
        batch (`int`): most tiles per network call.
    """

    tile: int = 0
    batch: int = 0

    def apply(self, settings):
        """``settings`` with the caps applied."""
        changes = {}
        if self.tile:
            changes['tile_size'] = min(settings.tile_size or self.tile, self.tile)
            changes['merge_tiles'] = False  # merging would grow the windows back
        if self.batch:
            changes['tile_batch'] = min(settings.tile_batch, self.batch)
        return settings.with_changes(**changes) if changes else settings

    def describe(self):
        parts = ([f'tiles of at most {self.tile} px'] if self.tile else []) + (
            [f'{self.batch} tile(s) per call'] if self.batch else [])
        return ', '.join(parts) or 'no caps'


def next_limits(limits, windows, settings, cell):
    """
    The caps to retry with after the network ran out of memory on ``windows``.

    Fewer tiles per call first (no new seams), then tiles of half the edge, down to MIN_OOM_TILE
    (rounded up to the cell). Returns None when both are at their floor.

    Args:
        limits (`MemoryLimits`): the caps the failed call ran under.
        windows (`list[Window]`): the windows of the failed call.
        settings (`RestorerSettings`): the settings it ran with (caps applied).
        cell (`int`): the quality cell (tile edges stay multiples of it).
    """
    shapes = {}
    for w in windows:
        shapes[w.h, w.w] = shapes.get((w.h, w.w), 0) + 1
    batch = min(int(settings.tile_batch), max(shapes.values(), default=1))
    if batch > 1:
        return replace(limits, batch=batch // 2)
    floor = _tile_size(MIN_OOM_TILE, cell)
    edge = max((max(w.core[2], w.core[3]) for w in windows), default=0)
    tile = max(floor, edge // 2 // cell * cell)
    if tile < edge:
        return replace(limits, tile=tile)
    return None


@dataclass
class _Runtime:
    """Everything one frame needs, swapped as a whole by `Restorer.update`."""

    settings: RestorerSettings
    backend: object
    estimator: object
    cache: object
    note: str = ''
    # Bound to the backend: caps and the note about them after running out of memory.
    limits: MemoryLimits = field(default_factory=MemoryLimits)
    memory_note: str = ''


def validate_settings(settings):
    """Raise ValueError naming the first invalid field of a RestorerSettings."""
    if not isinstance(settings, RestorerSettings):
        raise ValueError(f'settings must be RestorerSettings, got {type(settings).__name__}')
    if settings.backend not in BACKENDS:
        raise ValueError(f'unknown backend {settings.backend!r}; valid names: {list(BACKENDS)}')
    if settings.quality_backend not in QUALITY_BACKENDS:
        raise ValueError(f'unknown quality backend {settings.quality_backend!r}; valid names: '
                         f'{list(QUALITY_BACKENDS)}')
    if settings.compile_mode not in COMPILE_MODES:
        raise ValueError(f'unknown compile_mode {settings.compile_mode!r}; valid: '
                         f'{list(COMPILE_MODES)}')
    if not 0 <= settings.residual_guide <= MAX_RESIDUAL_GUIDE:
        raise ValueError(f'residual_guide must be in [0, {MAX_RESIDUAL_GUIDE}] px, got '
                         f'{settings.residual_guide}')
    if not 0 <= settings.quality_context <= MAX_QUALITY_CONTEXT:
        raise ValueError(f'quality_context must be in [0, {MAX_QUALITY_CONTEXT}] px (0 = the '
                         f'whole frame only), got {settings.quality_context}')
    if not MIN_SKIP_THRESHOLD <= settings.skip_threshold <= MAX_SKIP_THRESHOLD:
        raise ValueError(f'skip_threshold must be in [{MIN_SKIP_THRESHOLD:g}, '
                         f'{MAX_SKIP_THRESHOLD:g}], got {settings.skip_threshold}')
    if not 0 <= settings.skip_margin <= MAX_SKIP_MARGIN:
        raise ValueError(f'skip_margin must be in [0, {MAX_SKIP_MARGIN}] cells, got '
                         f'{settings.skip_margin}')
    if not 0.0 < settings.whole_frame_share <= 1.0:
        raise ValueError(f'whole_frame_share must be in (0, 1] (1 = off), got '
                         f'{settings.whole_frame_share}')
    if settings.tile_size < AUTO_TILE:
        raise ValueError(f'tile_size must be >= 0 (0 = one window) or -1 (auto), got '
                         f'{settings.tile_size}')
    for name in ('tile_overlap', 'blend_ramp', 'threads', 'window_bucket'):
        if getattr(settings, name) < 0:
            raise ValueError(f'{name} must be >= 0, got {getattr(settings, name)}')
    if settings.tile_batch < 1:
        raise ValueError(f'tile_batch must be >= 1, got {settings.tile_batch}')
    if settings.steps < 1:
        raise ValueError(f'steps must be >= 1, got {settings.steps}')
    if not isinstance(settings.cache, CacheSettings):
        raise ValueError('settings.cache must be CacheSettings')
    return settings


def degraded_cells(scores, threshold, margin=0, whole_share=1.0, skip_scores=None):
    """
    The (gh, gw) bool mask of cells to restore: score below ``threshold``, grown by ``margin``
    cells (a square neighbourhood); every cell when at least ``whole_share`` of them score below
    ``threshold`` (a frame without such a cell stays clean whatever the share). ``skip_scores``
    (a QualityMap's, where the estimator gives them) take the place of ``scores`` for the cells
    of a frame that is not restored whole.

    Why the margin: fog is spatially smooth, but the estimator reads cells of a foggy frame as
    clean (flat bright fog, dark road); they pass through as bright blocks between restored
    cells, which on real fog costs the detector more than restoring them (docs/RESULTS.md, "Skip
    margin"; on rain, snow and clean frames the margin costs instead, so the default is 0).
    """
    degraded = np.asarray(scores) < threshold
    if degraded.any() and degraded.mean() >= whole_share:
        return np.ones_like(degraded)
    if skip_scores is not None:
        degraded = np.asarray(skip_scores) < threshold
    if margin > 0 and degraded.any():
        k = 2 * int(margin) + 1
        degraded = cv2.dilate(degraded.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    return degraded


def estimator_options(name, quality_context):
    """build_estimator keyword arguments for ``quality_context`` (only 'learned' has a window)."""
    return {'context_window': int(quality_context)} if name == 'learned' else {}


def _stream_seed(base, stream_id):
    # crc32, not hash(): stable across processes, so a stream's noise survives a restart.
    return (int(base) + zlib.crc32(str(stream_id).encode())) % (2 ** 63)


class Restorer:
    """
    Restores camera frames, spending compute only where the quality map says it is needed.

    Args:
        settings (`RestorerSettings`, *optional*): defaults to RestorerSettings().
        estimator (*optional*): a quality estimator to use instead of building
            ``settings.quality_backend`` (anything with ``.estimate(rgb_uint8) -> QualityMap``).
        pipeline (`AdaQualPipeline`, *optional*): a pipeline to use for the 'adaqual' backend
            instead of loading ``settings.model_path``.

    Example:
        ```py
        from adaqual_ros.runtime import Restorer, RestorerSettings
        restorer = Restorer(RestorerSettings(backend='classical', quality_backend='classical'))
        result = restorer.restore(frame_rgb)
        print(result.timings, result.skipped_fraction)
        ```
    """

    def __init__(self, settings=None, estimator=None, pipeline=None):
        settings = validate_settings(settings or RestorerSettings())
        self._lock = threading.Lock()
        self._streams = {}
        self._given_estimator = estimator
        self._given_pipeline = pipeline
        self._loader = None
        self._load_errors = []
        self._target = settings
        self._generation = 0
        self._counters = {'frames': 0, 'skipped_frames': 0, 'errors': 0, 'updates': 0,
                          'failed_updates': 0, 'oom_retries': 0, 'moved_to_cpu': 0}
        self._sums = dict.fromkeys(STAGES, 0.0)
        self._skipped_sum = 0.0
        self._last_error = ''
        configure_threads(settings.threads)
        self._runtime = self._build(settings, previous=None)

    # -- public API ------------------------------------------------------------------------------

    @property
    def settings(self):
        """The settings last asked for (a heavy part may still be loading)."""
        return self._target

    @property
    def active_settings(self):
        """The settings the next frame runs with."""
        return self._runtime.settings

    @property
    def backend_name(self):
        return self._runtime.backend.name

    def restore(self, frame, stream_id='default', color_order='rgb', quality_map=None,
                stamp=None, overrides=None):
        """
        Restore one frame.

        Args:
            frame (`np.ndarray`): (H, W, C) with C in 1, 3, 4, or (H, W); uint8, uint16 or float32
                (float in [0, 1]).
            stream_id (`str`, *optional*, defaults to 'default'): camera stream; each has its own
                quality cache entry and start noise.
            color_order (`str`, *optional*, defaults to 'rgb'): 'rgb', 'bgr' or 'mono'. With four
                channels the fourth (alpha) is passed through.
            quality_map (`QualityMap`, *optional*): use this map instead of estimating one.
            stamp (`float`, *optional*): the frame's capture time in seconds (a video frame's
                time, a message's header stamp). The quality cache then ages its maps by the
                stream's own time instead of the wall clock, so an offline run reuses maps the
                same way however fast the machine is (default: the wall clock, as live).
            overrides (`dict`, *optional*): values of STREAM_SETTINGS (which cells are
                restored) for this frame only, e.g. one camera's own skip_threshold; the rest of
                the settings stay the runtime's. ValueError when a name or value is invalid.

        Returns:
            `RestoreResult`.

        Raises:
            InvalidFrameError: the frame or its colour order is unusable.
            RestorationError: the backend failed on this frame (out of memory: also with the
                smallest tiles and on the CPU).
        """
        start = time.perf_counter()
        runtime = self._runtime  # one consistent snapshot for the whole frame
        settings = _with_overrides(runtime.settings, overrides)
        timings = dict.fromkeys(STAGES, 0.0)
        frame = _check_frame(frame, color_order)
        height, width = frame.shape[:2]
        if stamp is not None and not (isinstance(stamp, (int, float, np.number))
                                      and np.isfinite(stamp)):
            raise InvalidFrameError(f'stamp must be a finite number of seconds, got {stamp!r}')

        rgb_u8 = _to_rgb_uint8(frame, color_order)
        timings['convert'] = _ms(start)

        t = time.perf_counter()
        qmap, cache_hit = self._quality(runtime, stream_id, rgb_u8, quality_map, (height, width),
                                        stamp)
        timings['quality'] = _ms(t)

        degraded = self._degraded(qmap, settings, self._stream(stream_id, runtime))
        skipped = _clean_pixel_fraction(degraded, qmap.cell, (height, width))
        if not degraded.any() or runtime.backend.name == 'passthrough':
            timings['total'] = _ms(start)
            return self._finish(RestoreResult(frame.copy(), qmap, None, timings,
                                              1.0 if runtime.backend.name == 'passthrough'
                                              else skipped, runtime.backend.name, cache_hit, 0))

        t = time.perf_counter()
        rgb = _to_float(frame, rgb_u8, color_order)
        timings['convert'] += _ms(t)

        try:
            t = time.perf_counter()
            prompts = runtime.backend.frame_prompts(qmap)
            timings['prompts'] = _ms(t)
        except Exception as exc:  # noqa: BLE001 - the caller sees one error type per failure
            raise self._backend_error(runtime, exc, width, height)  # noqa: B904 - chained there
        retries = 0
        while True:
            t = time.perf_counter()
            tiling = runtime.limits.apply(settings.with_changes(
                tile_size=tile_size_for(settings.tile_size, runtime.backend.device)))
            whole = runtime.backend.whole_frames or (
                runtime.backend.uses_network
                and whole_frames_for(settings.tile_size, runtime.backend.device))
            if whole and not runtime.limits.tile:
                # Clean cells still pass through bit-identical: the skip blend keeps them.
                windows = plan_windows(np.ones_like(degraded), (height, width), qmap.cell, 0,
                                       tiling.tile_overlap, True)
            else:
                windows = plan_windows(degraded, (height, width), qmap.cell,
                                       _tile_size(tiling.tile_size, qmap.cell),
                                       tiling.tile_overlap, tiling.merge_tiles,
                                       _tile_size(tiling.window_bucket, qmap.cell))
            timings['convert'] += _ms(t)
            t = time.perf_counter()
            try:
                output = runtime.backend.restore(rgb, qmap, windows,
                                                 self._stream(stream_id, runtime), tiling)
                break
            except Exception as exc:  # noqa: BLE001 - the caller sees one error type per failure
                if not is_out_of_memory(exc):
                    raise self._backend_error(runtime, exc, width, height)  # noqa: B904
                failure = str(exc)
            # Outside the except block: the traceback (and the tensors it holds) is gone.
            runtime = self._after_out_of_memory(runtime, windows, tiling, qmap.cell, failure,
                                                (width, height))
            retries += 1
        backend_ms = _ms(t)
        timings['prompts'] += output.timings.get('prompts', 0.0)
        timings['model'] = backend_ms - output.timings.get('prompts', 0.0)

        t = time.perf_counter()
        image = _blend_back(frame, rgb, output.image, degraded, qmap.cell, settings.blend_ramp,
                            windows, color_order)
        timings['blend'] = _ms(t)
        timings['total'] = _ms(start)
        run = output.pixels_run if output.pixels_run is not None else sum(w.area for w in windows)
        processed = run / float(height * width)
        return self._finish(RestoreResult(image, qmap, prompts, timings, skipped,
                                          runtime.backend.name, cache_hit, len(windows),
                                          processed, retries))

    def update(self, settings, wait=False):
        """
        Apply new settings from the next frame on.

        Cheap changes (thresholds, tiling, cache rules, steps, seed, threads) swap at once. A new
        backend, checkpoint, device or estimator is built in a background thread while restore()
        keeps using the current one, then swapped in; a failed build keeps the current runtime
        and is reported by `stats()` (and raised when ``wait``).

        Args:
            settings (`RestorerSettings`): the new settings (validated now; ValueError if bad).
            wait (`bool`, *optional*, defaults to False): block until the new runtime is in use.
        """
        settings = validate_settings(settings)
        configure_threads(settings.threads)
        with self._lock:
            current = self._runtime
            pending = self._loader is not None and self._loader.is_alive()
            previous_target, self._target = self._target, settings
            self._counters['updates'] += 1
            if not _changed(current.settings, settings, _HEAVY):
                # Same heavy objects: swap now (and cancel a pending load of other ones).
                self._generation += 1
                self._runtime = self._rebuild_light(current, settings)
                return
            # The light part applies at once to the running backend; the heavy part loads below.
            light = current.settings.with_changes(**{n: getattr(settings, n) for n in _LIGHT})
            self._runtime = self._rebuild_light(current, light)
            if pending and not _changed(previous_target, settings, _HEAVY):
                loader = self._loader  # already loading these; it picks up the latest target
            else:
                self._generation += 1
                loader = threading.Thread(target=self._load, args=(settings, self._generation),
                                          name='restorer-update', daemon=True)
                self._loader = loader
                self._load_errors = []
                loader.start()
        if wait:
            loader.join()
            if self._load_errors:
                raise self._load_errors[0]

    def _load(self, settings, generation):
        """Build the heavy objects of ``settings`` (loader thread) and swap them in."""
        try:
            runtime = self._build(settings, previous=self._runtime)
        except Exception as exc:  # noqa: BLE001 - a failed load keeps the running runtime
            with self._lock:
                self._load_errors.append(exc)
                self._counters['failed_updates'] += 1
                self._last_error = f'update failed: {exc!r}'
                if generation == self._generation:
                    self._target = self._runtime.settings
            logger.warning('restorer update failed, keeping the %s backend: %s',
                           self._runtime.backend.name, exc)
            return
        with self._lock:
            if generation != self._generation:
                return  # a newer update superseded this one
            current = self._runtime
            if _same_backend(runtime.settings, current.settings):
                # The backend was reused: keep what an out-of-memory did to it meanwhile.
                runtime = replace(runtime, backend=current.backend, limits=current.limits,
                                  memory_note=current.memory_note)
            # Light settings may have moved on while loading: use the latest.
            self._runtime = self._rebuild_light(runtime, self._target)
        # The old backend is not closed here: a frame in flight may still be using it; it is
        # freed when the last reference goes.

    def wait_for_update(self, timeout=None):
        """Block until a pending background update finished; True when none is pending."""
        thread = self._loader
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def stats(self):
        """Counters, mean stage timings (ms), cache statistics and the active configuration."""
        with self._lock:
            runtime = self._runtime
            frames = self._counters['frames']
            out = dict(self._counters)
            out.update({f'mean_{k}_ms': (self._sums[k] / frames if frames else 0.0)
                        for k in STAGES})
            out['mean_skipped_fraction'] = self._skipped_sum / frames if frames else 0.0
            out['last_error'] = self._last_error
            out['loading'] = self._loader is not None and self._loader.is_alive()
        out['backend'] = runtime.backend.name
        out['requested_backend'] = runtime.settings.backend
        out['device'] = str(runtime.backend.device)
        # the network's number format (float32, bfloat16 on a CPU with native bf16, float16)
        out['precision'] = runtime.backend.precision
        out['note'] = '; '.join(n for n in (runtime.note, runtime.memory_note) if n)
        # the tile edge planned with (auto resolved for the device; 0 = one window)
        out['tile_size'] = tile_size_for(runtime.settings.tile_size, runtime.backend.device)
        out['tile_cap'] = runtime.limits.tile
        out['tile_batch_cap'] = runtime.limits.batch
        # compile_mode reduce-overhead: compiled graphs built without CUDA graphs (0 = none)
        out['cudagraph_skips'] = getattr(runtime.backend, 'cudagraph_skips', 0)
        if runtime.cache is not None:
            cache = runtime.cache.stats()
            out['cache_hit_rate'] = cache['hit_rate']
            out['cache_lookups'] = cache['lookups']
            for reason, count in cache['misses_by_reason'].items():
                out[f'cache_miss_{reason}'] = count
        return out

    def close(self):
        """Release the backend (GPU memory)."""
        self.wait_for_update()
        self._runtime.backend.close()

    # -- internals -------------------------------------------------------------------------------

    def _build(self, settings, previous):
        """Build backend + estimator + cache for ``settings`` (reusing what did not change)."""
        note = ''
        backend = None
        limits, memory_note = MemoryLimits(), ''
        if previous is not None and _same_backend(previous.settings, settings):
            backend, limits, memory_note = previous.backend, previous.limits, previous.memory_note
        if backend is None:
            backend, note = self._build_backend(settings)
        # The quality cells must be the model's cells (prompts and FiLM are per cell).
        cell = int(getattr(backend, 'cell', DEFAULT_CELL))
        estimator = None
        # Only the model reads frames with the estimator it was trained with (its pipeline's
        # own); any other backend, a fallback from the model included, with the default one.
        paired = backend.name == 'adaqual'
        # model_path names the paired estimator too, so it matters only to the model
        keys = ('quality_backend', 'quality_model_path', 'quality_context', 'device') + (
            ('model_path',) if paired else ())
        if previous is not None and not _changed(previous.settings, settings, keys) and \
                (previous.backend.name == 'adaqual') == paired and \
                getattr(previous.estimator, 'cell', cell) == cell:
            estimator = previous.estimator
        if estimator is None:
            estimator, qnote = self._build_estimator(settings, cell, paired)
            note = '; '.join(n for n in (note, qnote) if n)
        # Maps cached from another estimator would condition the next frames: start afresh.
        cache = self._build_cache(settings, previous if estimator is getattr(
            previous, 'estimator', None) else None)
        return _Runtime(settings, backend, estimator, cache, note, limits, memory_note)

    def _rebuild_light(self, current, settings):
        return replace(current, settings=settings, cache=self._build_cache(settings, current))

    def _backend_error(self, runtime, exc, width, height):
        """The RestorationError to raise for a backend failure ``exc`` (counted, chained)."""
        if isinstance(exc, RestorationError):
            self._count_error('backend failed')
            return exc
        self._count_error(f'{runtime.backend.name} backend failed: {exc!r}')
        error = RestorationError(
            f'{runtime.backend.name} backend failed on a {width}x{height} frame: {exc}')
        error.__cause__ = exc  # as `raise error from exc`
        return error

    def _after_out_of_memory(self, runtime, windows, tiling, cell, failure, size):
        """
        The runtime to retry a frame with after the network ran out of memory: smaller batches or
        tiles, else the backend on the CPU. Raises RestorationError when nothing is left to try.
        """
        device = runtime.backend.device
        release_cached_memory(device)
        limits = next_limits(runtime.limits, windows, tiling, cell)
        moved = False
        if limits is not None:
            retry = replace(runtime, limits=limits,
                            memory_note=f'out of memory on {device}: {limits.describe()}')
        elif device.type != 'cpu' and runtime.backend.uses_network:
            try:
                backend = runtime.backend.on_cpu(runtime.settings)
            except Exception as exc:  # noqa: BLE001 - a failed move fails this frame, see below
                backend, failure = None, f'{failure}; moving to the CPU failed: {exc!r}'
            if backend is None:
                raise self._backend_error(runtime, RuntimeError(failure), *size)
            release_cached_memory(device)
            moved = True
            # The CPU's memory is not the device's: start again from the configured tiling.
            retry = replace(runtime, backend=backend, limits=MemoryLimits(),
                            memory_note=f'out of memory on {device}: running on the CPU '
                                        '(float32)')
        else:
            raise self._backend_error(runtime, RuntimeError(
                f'out of memory on {device} with tiles of at most {tiling.tile_size} px, '
                f'at most {tiling.tile_batch} per call: {failure}'), *size)
        with self._lock:
            self._counters['oom_retries'] += 1
            self._counters['moved_to_cpu'] += moved
            if self._runtime.backend is runtime.backend:  # else an update replaced it meanwhile
                self._runtime = replace(self._runtime, backend=retry.backend,
                                        limits=retry.limits, memory_note=retry.memory_note)
        logger.warning('%s backend ran out of memory on a %dx%d frame; retrying with %s',
                       runtime.backend.name, size[0], size[1],
                       'the backend on the CPU (float32)' if moved else retry.limits.describe())
        return retry

    def _build_backend(self, settings):
        kwargs = {}
        if settings.backend == 'adaqual' and self._given_pipeline is not None:
            kwargs['pipeline'] = self._given_pipeline
        try:
            return build_backend(settings.backend, settings, **kwargs), ''
        except Exception as exc:  # noqa: BLE001 - any load failure may fall back to classical
            if settings.backend != 'adaqual' or not settings.fallback_to_classical:
                raise RestorationError(
                    f'cannot build the {settings.backend!r} backend: {exc}') from exc
            note = f'adaqual backend unavailable ({exc}); using classical'
            warnings.warn(note, RuntimeWarning, stacklevel=3)
            return build_backend('classical', settings), note

    def _build_estimator(self, settings, cell=None, paired=True):
        if self._given_estimator is not None:
            return self._given_estimator, ''
        from adaqual_ros.pipelines import estimator_weights
        from adaqual_ros.quality import build_estimator

        cell = int(cell or DEFAULT_CELL)
        device = str(resolve_device(settings.device))
        path = estimator_weights(settings.quality_backend, settings.quality_model_path,
                                 settings.model_path or None, paired)
        try:
            return build_estimator(settings.quality_backend, cell=cell, device=device, path=path,
                                   **estimator_options(settings.quality_backend,
                                                       settings.quality_context)), ''
        except Exception as exc:  # noqa: BLE001 - a missing estimator may fall back to classical
            if settings.quality_backend == 'classical' or not settings.fallback_to_classical:
                raise RestorationError(
                    f'cannot build the {settings.quality_backend!r} quality estimator: {exc}'
                ) from exc
            note = (f'{settings.quality_backend} quality estimator unavailable ({exc}); '
                    'using classical')
            warnings.warn(note, RuntimeWarning, stacklevel=3)
            return build_estimator('classical', cell=cell), note

    @staticmethod
    def _build_cache(settings, previous):
        if not settings.cache.enabled:
            return None
        if previous is not None and previous.cache is not None and \
                previous.settings.cache == settings.cache:
            return previous.cache
        from adaqual_ros.quality import QualityCache

        return QualityCache.from_settings(settings.cache)

    def _quality(self, runtime, stream_id, rgb_u8, given, size, stamp=None):
        try:
            return self._quality_unchecked(runtime, stream_id, rgb_u8, given, size, stamp)
        except RestorationError:
            raise
        except Exception as exc:  # noqa: BLE001 - the caller sees one error type per failure
            self._count_error(f'quality estimation failed: {exc!r}')
            raise RestorationError(f'quality estimation failed: {exc}') from exc

    def _quality_unchecked(self, runtime, stream_id, rgb_u8, given, size, stamp):
        if given is not None:
            if not isinstance(given, QualityMap):
                raise InvalidFrameError(
                    f'quality_map must be a QualityMap, got {type(given).__name__}')
            qmap, hit = given, None
        elif runtime.cache is not None:
            qmap, decision = runtime.cache.get_or_compute(stream_id, rgb_u8, runtime.estimator,
                                                          now=stamp)
            hit = bool(decision.hit)
        else:
            qmap, hit = runtime.estimator.estimate(rgb_u8), None
        if tuple(qmap.image_size) != tuple(size):
            raise RestorationError(f'quality map is for {tuple(qmap.image_size)}, frame is {size}')
        return qmap, hit

    @staticmethod
    def _degraded(qmap, settings, stream):
        """The cells to restore; ``stream.whole_frame`` carries the whole-frame hysteresis."""
        share = settings.whole_frame_share
        if share < 1.0 and stream.whole_frame:
            share -= WHOLE_FRAME_HYSTERESIS
        degraded = degraded_cells(qmap.scores, settings.skip_threshold, settings.skip_margin,
                                  share, qmap.skip_scores)
        stream.whole_frame = bool(degraded.all())
        return degraded

    def _stream(self, stream_id, runtime):
        device = runtime.backend.device
        with self._lock:
            state = self._streams.get(stream_id)
            seed = _stream_seed(runtime.settings.seed, stream_id)
            if state is None or state.seed != seed or state.device != device:
                old, state = state, StreamState(stream_id, seed, device)
                # new noise for a new seed or device; the whole-frame state is the stream's
                state.whole_frame = bool(old is not None and old.whole_frame)
                self._streams[stream_id] = state
            return state

    def _finish(self, result):
        with self._lock:
            self._counters['frames'] += 1
            if result.windows == 0:
                self._counters['skipped_frames'] += 1
            for key in STAGES:
                self._sums[key] += result.timings.get(key, 0.0)
            self._skipped_sum += result.skipped_fraction
        return result

    def _count_error(self, message):
        with self._lock:
            self._counters['errors'] += 1
            self._last_error = message


# -- helpers ---------------------------------------------------------------------------------

def _num(value):
    return None if value is None else float(value)


def _ms(start):
    return (time.perf_counter() - start) * 1000.0


def _changed(a, b, names):
    return any(getattr(a, n) != getattr(b, n) for n in names)


def _same_backend(a, b):
    """Whether settings ``a`` and ``b`` use the same backend object."""
    return not _changed(a, b, _BACKEND_SETTINGS)


def _with_overrides(settings, overrides):
    if not overrides:
        return settings
    unknown = sorted(set(overrides) - set(STREAM_SETTINGS))
    if unknown:
        raise ValueError(f'cannot override {unknown} per frame; only {list(STREAM_SETTINGS)}')
    return validate_settings(settings.with_changes(**overrides))


def _tile_size(tile_size, cell):
    """Round a tile size up to the cell (0 keeps 'whole frame')."""
    if tile_size == 0:
        return 0
    return max(cell, -(-int(tile_size) // cell) * cell)


def _check_frame(frame, color_order):
    if not isinstance(frame, np.ndarray):
        raise InvalidFrameError(f'frame must be a numpy array, got {type(frame).__name__}')
    if color_order not in COLOR_ORDERS:
        raise InvalidFrameError(f'unknown color_order {color_order!r}; use one of {COLOR_ORDERS}')
    if frame.dtype not in DTYPES:
        raise InvalidFrameError(f'unsupported dtype {frame.dtype}; use uint8, uint16 or float32')
    if frame.ndim == 2:
        channels = 1
    elif frame.ndim == 3 and frame.shape[2] in (1, 3, 4):
        channels = frame.shape[2]
    else:
        raise InvalidFrameError(f'frame must be HxW or HxWxC with C in 1, 3, 4, got {frame.shape}')
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise InvalidFrameError(f'empty frame {frame.shape}')
    if (channels == 1) != (color_order == 'mono'):
        raise InvalidFrameError(
            f'color_order {color_order!r} does not fit a frame with {channels} channel(s)')
    if frame.dtype == np.float32 and not np.isfinite(frame).all():
        raise InvalidFrameError('float frame holds NaN or Inf')
    return frame


def _to_rgb_uint8(frame, color_order):
    """RGB uint8 (H, W, 3) view/copy of the frame, for the quality estimator."""
    if color_order == 'mono':
        plane = to_uint8(frame.reshape(frame.shape[:2]))
        return cv2.cvtColor(plane, cv2.COLOR_GRAY2RGB)
    rgb = frame[..., :3]
    if color_order == 'bgr':
        rgb = rgb[..., ::-1]
    return np.ascontiguousarray(to_uint8(rgb))


_U8_TO_FLOAT = np.arange(256, dtype=np.float32) / 255.0


def _to_float(frame, rgb_u8, color_order):
    """RGB float32 (H, W, 3) in [0, 1], the backends' working format."""
    if frame.dtype == np.uint8:
        return cv2.LUT(rgb_u8, _U8_TO_FLOAT)  # one multithreaded pass
    if color_order == 'mono':
        plane = frame.reshape(frame.shape[:2])
        rgb = np.repeat(plane[..., None], 3, axis=2)
    else:
        rgb = frame[..., :3]
        if color_order == 'bgr':
            rgb = rgb[..., ::-1]
    if frame.dtype == np.uint16:
        return rgb.astype(np.float32) * (1.0 / 65535.0)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def _from_float(values, dtype):
    if dtype == np.uint8:
        return cv2.convertScaleAbs(values, alpha=255.0)  # rounds and saturates; values >= 0
    if dtype == np.uint16:
        return (np.clip(values, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def _bbox(windows):
    return (min(w.y0 for w in windows), min(w.x0 for w in windows),
            max(w.y0 + w.h for w in windows), max(w.x0 + w.w for w in windows))


def _blend_back(frame, rgb, restored, degraded, cell, ramp, windows, color_order):
    """
    The output frame: input pixels on clean cells (bit-identical), the restored pixels deep in
    degraded cells and a blend over ``ramp`` pixels at their borders, in the input's dtype,
    channel count and colour order.
    """
    out = frame.copy()
    y0, x0, y1, x1 = _bbox(windows)
    alpha = skip_alpha(degraded, frame.shape[:2], cell, ramp, (y0, x0, y1, x1))
    res = np.ascontiguousarray(restored[y0:y1, x0:x1])
    # The restored pixels in the frame's own layout: one conversion, on the region only.
    if color_order == 'mono':
        res = cv2.cvtColor(res, cv2.COLOR_RGB2GRAY)
    elif color_order == 'bgr':
        res = cv2.cvtColor(res, cv2.COLOR_RGB2BGR)
    native = _from_float(res, frame.dtype)
    region = out[y0:y1, x0:x1]
    if color_order == 'mono':
        target = region if region.ndim == 2 else region[..., 0]
    else:
        target = region[..., :3]
    if alpha is None:
        target[...] = native
        return out
    original = np.ascontiguousarray(target)
    if frame.dtype == np.uint8:
        # Weights (0, 1) give the original exactly, (1, 0) the restored value.
        blended = cv2.blendLinear(native, original, alpha, 1.0 - alpha)
    else:
        a = alpha if native.ndim == 2 else alpha[..., None]
        base = (rgb[y0:y1, x0:x1] if color_order == 'rgb' else None)
        if base is None:
            base = original.astype(np.float32) * (1.0 / 65535.0 if frame.dtype == np.uint16
                                                  else 1.0)
        blended = _from_float(base + (res - base) * a, frame.dtype)
        keep = alpha == 0
        np.copyto(blended, original, where=keep if blended.ndim == 2 else keep[..., None])
    target[...] = blended
    return out


def _clean_pixel_fraction(degraded, cell, size):
    """Share of pixels in clean cells (partial last row/column weighted by their real size)."""
    height, width = size
    rows = np.minimum(cell, height - np.arange(degraded.shape[0]) * cell)
    cols = np.minimum(cell, width - np.arange(degraded.shape[1]) * cell)
    area = np.outer(rows, cols)
    return float(area[~degraded].sum() / (height * width))


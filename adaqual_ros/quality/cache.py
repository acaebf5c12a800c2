"""
Per-stream quality-map cache.

A stream reuses its last quality map while fewer than ``max_frames`` frames and less than
``max_age_s`` seconds have passed since the map was computed, and while a cheap scene signature
(a small grayscale thumbnail) stays within ``scene_threshold`` (mean absolute difference, 0..1) of
the signature stored with the map. Comparing against the stored signature, not the previous frame,
means slow drifts (dusk, fog rolling in) also trigger a recompute once they add up.
"""
from dataclasses import dataclass
import threading
import time

import cv2
import numpy as np

from adaqual_ros.quality.grid import check_frame

# Reasons a lookup gives. A miss names the first rule that failed.
HIT = 'hit'
REASONS = ('cold', 'disabled', 'size', 'frames', 'age', 'scene')

THUMB_SIZE = (32, 24)  # (w, h): coarse enough that rain streaks and snow specks average out


def scene_signature(frame, size=THUMB_SIZE):
    """Grayscale thumbnail in [0, 1] (float32, (h, w)) of an HxWx3 uint8 RGB frame."""
    frame = check_frame(frame)
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return thumb.astype(np.float32) * (1.0 / 255.0)


def signature_distance(a, b):
    """Mean absolute difference of two signatures (0 = identical, 1 = black vs white)."""
    return float(np.mean(np.abs(a - b)))


@dataclass(frozen=True)
class CacheDecision:
    """
    Outcome of one cache lookup.

    Args:
        hit (`bool`): the cached map was reused.
        reason (`str`): 'hit' or the miss reason, one of REASONS.
        frames (`int`): frames since the cached map was computed (0 on a miss).
        age_s (`float`): seconds since the cached map was computed (0 on a miss).
        distance (`float`): signature distance to the cached frame (nan when not compared).
    """

    hit: bool
    reason: str
    frames: int = 0
    age_s: float = 0.0
    distance: float = float('nan')


@dataclass
class _Entry:
    qmap: object
    signature: np.ndarray
    shape: tuple
    stamp: float
    frames: int = 0


class QualityCache:
    """
    Thread-safe per-stream cache of quality maps.

    Args:
        max_frames (`int`, *optional*, defaults to 15): recompute once this many frames have
            passed since the map was computed (1 = never reuse).
        max_age_s (`float`, *optional*, defaults to 1.0): recompute once the map is this old.
        scene_threshold (`float`, *optional*, defaults to 0.08): recompute when the thumbnail
            signature moves this far (mean absolute difference in [0, 1]).
        enabled (`bool`, *optional*, defaults to True): False makes every lookup a miss.
        clock (`callable`, *optional*): time source in seconds (defaults to time.monotonic).

    Example:
        ```py
        cache = QualityCache(max_frames=15, max_age_s=1.0, scene_threshold=0.08)
        qmap, decision = cache.get_or_compute('front', frame_rgb, estimator)
        print(decision.hit, decision.reason, cache.stats()['hit_rate'])
        ```
    """

    def __init__(self, max_frames=15, max_age_s=1.0, scene_threshold=0.08, enabled=True,
                 clock=None):
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._entries = {}
        self._stream_locks = {}
        self._reset_stats()
        self.configure(max_frames, max_age_s, scene_threshold, enabled)

    def configure(self, max_frames=None, max_age_s=None, scene_threshold=None, enabled=None):
        """Change the reuse rules (None keeps a value); cached maps are kept."""
        max_frames = getattr(self, 'max_frames', None) if max_frames is None else max_frames
        max_age_s = getattr(self, 'max_age_s', None) if max_age_s is None else max_age_s
        scene_threshold = (getattr(self, 'scene_threshold', None) if scene_threshold is None
                           else scene_threshold)
        enabled = getattr(self, 'enabled', True) if enabled is None else enabled
        if isinstance(max_frames, bool) or int(max_frames) != max_frames or max_frames < 1:
            raise ValueError(f'max_frames must be an integer >= 1, got {max_frames!r}')
        if not max_age_s >= 0:
            raise ValueError(f'max_age_s must be >= 0, got {max_age_s!r}')
        if not 0 <= scene_threshold <= 1:
            raise ValueError(f'scene_threshold must be in [0, 1], got {scene_threshold!r}')
        with self._lock:
            self.max_frames = int(max_frames)
            self.max_age_s = float(max_age_s)
            self.scene_threshold = float(scene_threshold)
            self.enabled = bool(enabled)

    @classmethod
    def from_settings(cls, settings, clock=None):
        """Build from `adaqual_ros.runtime.settings.CacheSettings`."""
        return cls(settings.max_frames, settings.max_age_s, settings.scene_threshold,
                   enabled=settings.enabled, clock=clock)

    # -- lookups -------------------------------------------------------------------------------

    def lookup(self, stream_id, frame, now=None, signature=None):
        """
        Return ``(QualityMap or None, CacheDecision)`` for ``frame`` of ``stream_id``.

        A hit counts the frame against the entry's frame budget. A miss leaves the entry as it is;
        call `store` with the fresh map.
        """
        now = self._clock() if now is None else now
        frame = check_frame(frame)
        if signature is None and self.enabled:
            # Outside the lock: the thumbnail is the only per-frame work a lookup does.
            signature = scene_signature(frame)
        with self._lock:
            decision, entry = self._decide(stream_id, frame, now, signature)
            self._count(decision, entry)
            return (entry.qmap if decision.hit else None), decision

    def store(self, stream_id, frame, qmap, compute_s=0.0, now=None, signature=None):
        """Remember ``qmap`` (computed from ``frame`` in ``compute_s`` seconds) for the stream."""
        now = self._clock() if now is None else now
        frame = check_frame(frame)
        sig = scene_signature(frame) if signature is None else signature
        with self._lock:
            self._entries[stream_id] = _Entry(qmap, sig, frame.shape[:2], now)
            self._compute_s += float(compute_s)
            self._computes += 1

    def get_or_compute(self, stream_id, frame, estimator, now=None):
        """
        Return ``(QualityMap, CacheDecision)``: the cached map on a hit, a fresh one otherwise.

        ``estimator`` is anything with ``.estimate(frame) -> QualityMap`` (or a callable). Calls
        for the same stream are serialised so two threads never compute the same stream's map at
        once; different streams run concurrently.
        """
        frame = check_frame(frame)
        with self._stream_lock(stream_id):
            # Read the clock under the stream lock so a waiting thread never sees time run
            # backwards; the map is stamped with the frame's lookup time, not the compute's end.
            now = self._clock() if now is None else now
            sig = scene_signature(frame)
            qmap, decision = self.lookup(stream_id, frame, now=now, signature=sig)
            if decision.hit:
                return qmap, decision
            start = time.perf_counter()
            estimate = getattr(estimator, 'estimate', estimator)
            qmap = estimate(frame)
            elapsed = time.perf_counter() - start
            self.store(stream_id, frame, qmap, compute_s=elapsed, now=now, signature=sig)
            return qmap, decision

    def invalidate(self, stream_id=None):
        """Forget one stream's map (or all) so the next lookup recomputes."""
        with self._lock:
            if stream_id is None:
                self._entries.clear()
            else:
                self._entries.pop(stream_id, None)

    # -- statistics ----------------------------------------------------------------------------

    def stats(self):
        """
        Running statistics.

        Returns:
            `dict` with lookups, hits, misses, hit_rate, misses_by_reason (reason -> count),
            computes, compute_s (estimator time spent), time_saved_s (estimator time the hits
            avoided, estimated with the mean compute time at each hit), streams.
        """
        with self._lock:
            lookups = self._hits + sum(self._misses.values())
            return {
                'lookups': lookups,
                'hits': self._hits,
                'misses': sum(self._misses.values()),
                'hit_rate': self._hits / lookups if lookups else 0.0,
                'misses_by_reason': dict(self._misses),
                'computes': self._computes,
                'compute_s': self._compute_s,
                'time_saved_s': self._saved_s,
                'streams': len(self._entries),
            }

    def reset_stats(self):
        with self._lock:
            self._reset_stats()

    # -- internals -----------------------------------------------------------------------------

    def _reset_stats(self):
        self._hits = 0
        self._misses = dict.fromkeys(REASONS, 0)
        self._computes = 0
        self._compute_s = 0.0
        self._saved_s = 0.0

    def _stream_lock(self, stream_id):
        with self._lock:
            lock = self._stream_locks.get(stream_id)
            if lock is None:
                lock = self._stream_locks[stream_id] = threading.Lock()
            return lock

    def _decide(self, stream_id, frame, now, signature):
        entry = self._entries.get(stream_id)
        if not self.enabled:
            return CacheDecision(False, 'disabled'), entry
        if entry is None:
            return CacheDecision(False, 'cold'), entry
        if frame.shape[:2] != entry.shape:
            return CacheDecision(False, 'size'), entry
        frames = entry.frames + 1
        age = now - entry.stamp
        if frames >= self.max_frames:
            return CacheDecision(False, 'frames', frames, age), entry
        # age < 0: the clock jumped back (a looping bag, sim time reset); the map is suspect.
        if age >= self.max_age_s or age < 0:
            return CacheDecision(False, 'age', frames, age), entry
        distance = signature_distance(signature, entry.signature)
        if distance > self.scene_threshold:
            return CacheDecision(False, 'scene', frames, age, distance), entry
        return CacheDecision(True, HIT, frames, age, distance), entry

    def _count(self, decision, entry):
        if decision.hit:
            self._hits += 1
            entry.frames += 1
            # Mean compute time so far: one slow (contended) compute does not skew the figure.
            self._saved_s += self._compute_s / self._computes if self._computes else 0.0
        else:
            self._misses[decision.reason] += 1

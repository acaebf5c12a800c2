"""QualityCache: hits, misses by reason (cut, age, frames, size), stats, thread safety."""
import threading
import time

import cv2
import numpy as np
import pytest

from adaqual_ros.quality import QualityCache, build_estimator
from adaqual_ros.quality.cache import scene_signature, signature_distance
from adaqual_ros.runtime.settings import CacheSettings


class CountingEstimator:
    """A real (classical) estimator that counts its calls."""

    def __init__(self):
        self.inner = build_estimator('classical')
        self.calls = 0
        self.lock = threading.Lock()

    def estimate(self, frame):
        with self.lock:
            self.calls += 1
        return self.inner.estimate(frame)


@pytest.fixture(scope='module')
def frames(asset):
    """Two consecutive frames of the static-camera clip and one of a different scene."""
    cap = cv2.VideoCapture(str(asset('data/video/people.mp4')))
    out = []
    for _ in range(2):
        ok, bgr = cap.read()
        assert ok
        out.append(cv2.resize(bgr, (320, 180), interpolation=cv2.INTER_AREA)[:, :, ::-1].copy())
    cap.release()
    cap = cv2.VideoCapture(str(asset('data/video/highway_dashcam.mp4')))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    out.append(cv2.resize(bgr, (320, 180), interpolation=cv2.INTER_AREA)[:, :, ::-1].copy())
    return out


def test_hit_on_next_frame_of_static_scene(frames):
    cache = QualityCache(max_frames=15, max_age_s=1.0, scene_threshold=0.08)
    est = CountingEstimator()
    first, d1 = cache.get_or_compute('cam', frames[0], est, now=0.0)
    second, d2 = cache.get_or_compute('cam', frames[1], est, now=0.033)
    assert (d1.hit, d1.reason) == (False, 'cold')
    assert (d2.hit, d2.reason) == (True, 'hit')
    assert second is first and est.calls == 1
    assert 0.0 <= d2.distance < 0.08
    stats = cache.stats()
    assert stats['hits'] == 1 and stats['misses_by_reason']['cold'] == 1
    assert stats['hit_rate'] == pytest.approx(0.5)
    assert stats['time_saved_s'] > 0


def test_miss_on_cut(frames):
    cache = QualityCache(max_frames=15, max_age_s=1.0, scene_threshold=0.08)
    est = CountingEstimator()
    cache.get_or_compute('cam', frames[0], est, now=0.0)
    qmap, decision = cache.get_or_compute('cam', frames[2], est, now=0.033)
    assert (decision.hit, decision.reason) == (False, 'scene')
    assert decision.distance > 0.08
    assert est.calls == 2
    np.testing.assert_array_equal(qmap.scores, est.inner.estimate(frames[2]).scores)


def test_miss_on_age_and_on_frame_budget(frames):
    cache = QualityCache(max_frames=3, max_age_s=0.5, scene_threshold=0.08)
    est = CountingEstimator()
    cache.get_or_compute('cam', frames[0], est, now=0.0)
    assert cache.get_or_compute('cam', frames[1], est, now=0.6)[1].reason == 'age'
    reasons = [cache.get_or_compute('cam', frames[1], est, now=0.6 + 0.01 * i)[1].reason
               for i in range(1, 5)]
    # the map computed at t=0.6 serves 2 more frames, the 3rd recomputes
    assert reasons == ['hit', 'hit', 'frames', 'hit']
    assert cache.stats()['misses_by_reason']['frames'] == 1


def test_miss_on_size_change_disabled_and_streams_independent(frames):
    cache = QualityCache()
    est = CountingEstimator()
    cache.get_or_compute('a', frames[0], est, now=0.0)
    smaller = frames[0][:100, :150].copy()
    assert cache.lookup('a', smaller, now=0.01)[1].reason == 'size'
    assert cache.lookup('b', frames[0], now=0.01)[1].reason == 'cold'
    assert cache.lookup('a', frames[1], now=0.01)[1].hit
    off = QualityCache.from_settings(CacheSettings(enabled=False))
    off.store('a', frames[0], est.estimate(frames[0]), now=0.0)
    assert off.lookup('a', frames[0], now=0.0)[1].reason == 'disabled'


def test_lookup_and_store_api_with_clock(frames):
    now = [100.0]
    cache = QualityCache(max_frames=10, max_age_s=2.0, clock=lambda: now[0])
    qmap, decision = cache.lookup('s', frames[0])
    assert qmap is None and decision.reason == 'cold'
    fresh = build_estimator('classical').estimate(frames[0])
    cache.store('s', frames[0], fresh, compute_s=0.02)
    now[0] = 101.0
    qmap, decision = cache.lookup('s', frames[1])
    assert qmap is fresh and decision.age_s == pytest.approx(1.0)
    now[0] = 102.5
    assert cache.lookup('s', frames[1])[1].reason == 'age'
    cache.invalidate('s')
    assert cache.lookup('s', frames[1])[1].reason == 'cold'


def test_bad_settings_and_frames_raise():
    with pytest.raises(ValueError, match='max_frames'):
        QualityCache(max_frames=0)
    with pytest.raises(ValueError, match='scene_threshold'):
        QualityCache(scene_threshold=2.0)
    with pytest.raises(ValueError, match='uint8'):
        QualityCache().lookup('s', np.zeros((8, 8, 3), np.float32))


def test_signature_ignores_sparse_streaks_but_sees_a_cut(frames):
    rng = np.random.default_rng(0)
    streaked = frames[0].copy()
    ys, xs = rng.integers(0, 170, 300), rng.integers(0, 320, 300)
    for y, x in zip(ys, xs):
        streaked[y:y + 10, x] = 230
    base = scene_signature(frames[0])
    assert signature_distance(base, scene_signature(streaked)) < 0.02
    assert signature_distance(base, scene_signature(frames[2])) > 0.1


def test_concurrent_streams_are_safe(frames):
    cache = QualityCache(max_frames=4, max_age_s=10.0, scene_threshold=0.08)
    est = CountingEstimator()
    errors = []
    per_thread = 24

    def worker(stream):
        try:
            for i in range(per_thread):
                frame = frames[i % 2]
                qmap, decision = cache.get_or_compute(stream, frame, est)
                assert qmap.scores.shape == (3, 5)
                assert decision.reason in ('hit', 'cold', 'frames', 'scene', 'age')
        except Exception as exc:  # noqa: BLE001 - surfaced to the main thread below
            errors.append(exc)

    # two threads share each stream, so same-stream calls race too
    threads = [threading.Thread(target=worker, args=(f's{i % 3}',)) for i in range(6)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert time.monotonic() - start < 60
    stats = cache.stats()
    assert stats['lookups'] == 6 * per_thread
    assert stats['hits'] + stats['misses'] == stats['lookups']
    assert stats['computes'] == est.calls == stats['misses']
    assert stats['streams'] == 3
    # per stream: 48 lookups, a recompute every 4th at most
    assert stats['hits'] >= 3 * 48 * 3 // 4 - 3


def test_configure_changes_rules_and_validates(frames):
    cache = QualityCache(max_frames=15)
    est = CountingEstimator()
    cache.get_or_compute('cam', frames[0], est, now=0.0)
    cache.configure(max_frames=1)
    assert cache.get_or_compute('cam', frames[1], est, now=0.01)[1].reason == 'frames'
    with pytest.raises(ValueError, match='max_age_s'):
        cache.configure(max_age_s=-1.0)
    assert cache.max_frames == 1

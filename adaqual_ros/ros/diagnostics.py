"""
Node health for /diagnostics: rates, latency percentiles and frame accounting.

`FrameStats` is plain Python and thread-safe (callbacks and the worker thread both write to it).
`DiagnosticsReporter` publishes its snapshot as a diagnostic_msgs/DiagnosticArray about once a
second, the way diagnostic_updater does for C++ nodes.
"""
from collections import Counter, deque
import threading
import time

import numpy as np


class RateMeter:
    """
    Events per second over a sliding window.

    Args:
        window_s (`float`, *optional*, defaults to 5.0): the window length in seconds.
    """

    def __init__(self, window_s=5.0):
        if window_s <= 0:
            raise ValueError(f'window_s must be > 0, got {window_s}')
        self.window_s = window_s
        self._times = deque()

    def tick(self, now=None):
        self._times.append(time.monotonic() if now is None else now)

    def rate(self, now=None):
        now = time.monotonic() if now is None else now
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        if not self._times:
            return 0.0
        # Over a partly filled window, divide by the span actually seen (at least 1 s) so a
        # burst at start-up does not read as a huge rate.
        span = max(min(self.window_s, now - self._times[0]), 1.0)
        return len(self._times) / span


class LatencyWindow:
    """
    The last `size` latencies (ms), with percentiles.

    Args:
        size (`int`, *optional*, defaults to 200): how many recent samples to keep.
    """

    def __init__(self, size=200):
        if size < 1:
            raise ValueError(f'size must be >= 1, got {size}')
        self._values = deque(maxlen=size)

    def add(self, ms):
        self._values.append(float(ms))

    def percentile(self, q):
        """The q-th percentile (0-100) in ms, or None with no samples."""
        if not self._values:
            return None
        return float(np.percentile(np.fromiter(self._values, dtype=np.float64), q))

    def __len__(self):
        return len(self._values)


class FrameStats:
    """
    Accounting of every frame a node receives, and its recent rates and latencies.

    Every received frame ends in exactly one outcome: `published`, `passed_through` (the input
    republished unchanged, with a reason) or `dropped` (with a reason). Until then it is pending,
    so `frames_in == published + passed_through + dropped + pending` always holds.
    """

    def __init__(self, window_s=5.0, latency_samples=200):
        self._lock = threading.Lock()
        self.frames_in = 0
        self.published = 0
        self.passed_through = Counter()
        self.dropped = Counter()
        self.events = Counter()  # not outcomes: notable things seen (e.g. resolution changed)
        self.errors = 0
        self.last_error = ''
        self._in_rate = RateMeter(window_s)
        self._out_rate = RateMeter(window_s)
        self._latency = LatencyWindow(latency_samples)
        self._stage_ms = {}
        self._cache_hits = 0
        self._cache_lookups = 0
        self._skipped = deque(maxlen=latency_samples)
        self._processed = deque(maxlen=latency_samples)

    def received(self):
        with self._lock:
            self.frames_in += 1
            self._in_rate.tick()

    def record_published(self, latency_ms=None, timings=None, cache_hit=None,
                         skipped_fraction=None, processed_fraction=None):
        with self._lock:
            self.published += 1
            self._out_rate.tick()
            if latency_ms is not None:
                self._latency.add(latency_ms)
            for stage, ms in (timings or {}).items():
                self._stage_ms.setdefault(stage, LatencyWindow(50)).add(ms)
            if cache_hit is not None:
                self._cache_lookups += 1
                self._cache_hits += int(bool(cache_hit))
            if skipped_fraction is not None:
                self._skipped.append(float(skipped_fraction))
            if processed_fraction is not None:
                self._processed.append(float(processed_fraction))

    def record_passed_through(self, reason):
        with self._lock:
            self.passed_through[reason] += 1
            self._out_rate.tick()

    def record_dropped(self, reason, count=1):
        with self._lock:
            self.dropped[reason] += count

    def record_event(self, name, count=1):
        with self._lock:
            self.events[name] += count

    def record_error(self, message):
        with self._lock:
            self.errors += 1
            self.last_error = str(message)[:300]

    def totals(self):
        """Return {'frames_in', 'published', 'passed_through', 'dropped'} (plain ints)."""
        with self._lock:
            return {'frames_in': self.frames_in, 'published': self.published,
                    'passed_through': sum(self.passed_through.values()),
                    'dropped': sum(self.dropped.values())}

    def snapshot(self):
        """Return a dict of every figure (numbers, or None where there is no sample yet)."""
        with self._lock:
            passed = sum(self.passed_through.values())
            dropped = sum(self.dropped.values())
            out = {
                'frames_in': self.frames_in,
                'published': self.published,
                'passed_through': passed,
                'dropped': dropped,
                'pending': self.frames_in - self.published - passed - dropped,
                'input_rate_hz': self._in_rate.rate(),
                'output_rate_hz': self._out_rate.rate(),
                'latency_p50_ms': self._latency.percentile(50),
                'latency_p95_ms': self._latency.percentile(95),
                'cache_hit_rate': (self._cache_hits / self._cache_lookups
                                   if self._cache_lookups else None),
                'skipped_fraction': (float(np.mean(self._skipped)) if self._skipped else None),
                # the share of the frame the restorer ran on: what its cost follows
                'processed_fraction': (float(np.mean(self._processed)) if self._processed
                                       else None),
                'errors': self.errors,
                'last_error': self.last_error,
            }
            for reason, count in sorted(self.passed_through.items()):
                out[f'passed_through.{reason}'] = count
            for reason, count in sorted(self.dropped.items()):
                out[f'dropped.{reason}'] = count
            for name, count in sorted(self.events.items()):
                out[f'event.{name}'] = count
            for stage, window in sorted(self._stage_ms.items()):
                out[f'stage_ms.{stage}'] = window.percentile(50)
            return out


def _format(value):
    if value is None:
        return 'n/a'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        return f'{value:.3f}'
    return str(value)


def build_status(name, hardware_id, figures, level=None, message=None):
    """
    Build a diagnostic_msgs/DiagnosticStatus from a dict of figures.

    The level is OK unless given: WARN when frames are being dropped for errors, ERROR never by
    default (callers decide what is fatal).
    """
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    if level is None:
        level = DiagnosticStatus.OK
        if figures.get('errors'):
            level = DiagnosticStatus.WARN
    if message is None:
        message = ('ok' if level == DiagnosticStatus.OK else
                   figures.get('last_error') or 'degraded')
    status = DiagnosticStatus(level=level, name=name, message=str(message),
                              hardware_id=str(hardware_id))
    status.values = [KeyValue(key=str(k), value=_format(v)) for k, v in figures.items()]
    return status


class DiagnosticsReporter:
    """
    Publish a node's figures on /diagnostics about once a second.

    Args:
        node (`rclpy.node.Node`): the node that owns the publisher and timer.
        collect (`callable`): `collect() -> DiagnosticStatus | list[DiagnosticStatus]`, called
            from the timer (keep it cheap).
        period_s (`float`, *optional*, defaults to 1.0): publishing period.
    """

    def __init__(self, node, collect, period_s=1.0):
        from diagnostic_msgs.msg import DiagnosticArray

        self._array_type = DiagnosticArray
        self._node = node
        self._collect = collect
        # Absolute topic: aggregators listen on /diagnostics whatever the node's namespace.
        self._pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._timer = node.create_timer(period_s, self.publish)

    def publish(self):
        statuses = self._collect()
        if not isinstance(statuses, (list, tuple)):
            statuses = [statuses]
        msg = self._array_type()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.status = list(statuses)
        self._pub.publish(msg)
        return msg

    def destroy(self):
        self._node.destroy_timer(self._timer)
        self._node.destroy_publisher(self._pub)

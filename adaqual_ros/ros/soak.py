"""
Soak run: many frames through a real restoration node process, with accounting and memory.

The node runs as a subprocess (`python -m adaqual_ros.ros.restoration_node`) on a private DDS
domain limited to localhost; this process publishes frames closed-loop (the next frame goes out
when the previous one came back, or after a timeout) and checks every output: its stamp,
frame_id, size and encoding must be the input's and no stamp may come back twice. The node's RSS
and thread count are sampled from /proc. `adaqual soak` is the command-line front.
"""
import json
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import time

import numpy as np

NAMESPACE = '/soak'
# The highest ROS_DOMAIN_ID Fast DDS accepts (its ports are derived from it).
MAX_DOMAIN_ID = 232
FRAME_ID = 'soak_camera'
_CONDITIONS = ('haze', 'rain', 'low_haze', 'snow', 'clean', 'haze_rain')


def _proc_status(pid):
    """Return (rss_mb, threads) of a process from /proc, or (None, None) when unavailable."""
    try:
        text = Path(f'/proc/{pid}/status').read_text()
    except OSError:
        return None, None
    rss = threads = None
    for line in text.splitlines():
        if line.startswith('VmRSS:'):
            rss = int(line.split()[1]) / 1024.0
        elif line.startswith('Threads:'):
            threads = int(line.split()[1])
    return rss, threads


def soak_frames(width, height, count=24, source=None, seed=0):
    """
    Frames to cycle through: a real video (default: the assets' highway dashcam) resized to
    width x height with synthetic weather, or smooth synthetic scenes when no video is found.
    """
    import cv2

    from adaqual_ros.assets import asset_path

    path = source or asset_path('data/video/highway_dashcam.mp4')
    clean = []
    if path is not None:
        cap = cv2.VideoCapture(str(path))
        while len(clean) < count:
            ok, bgr = cap.read()
            if not ok:
                break
            bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
            clean.append(np.ascontiguousarray(bgr[:, :, ::-1]))
            for _ in range(4):  # spread the frames over the clip
                cap.grab()
        cap.release()
        if source is not None and not clean:
            raise ValueError(f'cannot read frames from {source}')
    if not clean:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        for i in range(count):
            phase = i / count * 2 * np.pi
            image = np.stack([128 + 100 * np.sin(xx / 23 + phase), 128 + 100 * np.cos(yy / 17),
                              128 + 100 * np.sin((xx + yy) / 31 - phase)], axis=2)
            clean.append(image.clip(0, 255).astype(np.uint8))
    try:
        from adaqual_ros.weather import synthesize
    except ImportError:  # weather synthesis is optional here: clean frames still soak the node
        return clean
    rng = np.random.default_rng(seed)
    return [synthesize(frame, _CONDITIONS[i % len(_CONDITIONS)], rng).degraded
            for i, frame in enumerate(clean)]


def run_soak(frames, out_dir, width=320, height=240, backend='classical',
             quality_backend='classical', source=None, warmup=500, frame_timeout=2.0,
             domain_id=None, node_params=(), log=print):
    """
    Push `frames` frames through a restoration node and write `out_dir/soak.json`.

    Args:
        frames (`int`): frames to publish (>= 1).
        out_dir (`str` or `Path`): where soak.json and node.log go (created).
        width (`int`), height (`int`): frame size.
        backend (`str`), quality_backend (`str`): the node's restoration and quality backends.
        source (`str`, *optional*): a video to take frames from (default: assets dashcam).
        warmup (`int`): frames after which the memory baseline is taken.
        frame_timeout (`float`): seconds to wait for each output before sending the next frame.
        domain_id (`int`, *optional*): ROS_DOMAIN_ID, 0..MAX_DOMAIN_ID (default: random in
            150..229).
        node_params (`list[str]`): extra `name:=value` parameters for the node.
        log (`callable`): progress lines.

    Returns:
        `dict`: the report written to soak.json.
    """
    if frames < 1:
        raise ValueError(f'frames must be >= 1, got {frames}')
    if width < 1 or height < 1:
        raise ValueError(f'frame size must be positive, got {width}x{height}')
    if domain_id is not None and not 0 <= domain_id <= MAX_DOMAIN_ID:
        # DDS derives its ports from the id: above this Fast DDS fails at start-up
        raise ValueError(f'domain_id must be 0..{MAX_DOMAIN_ID}, got {domain_id}')
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    domain = domain_id if domain_id is not None else random.randint(150, 229)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               PYTHONUNBUFFERED='1')
    env.pop('ROS_LOCALHOST_ONLY', None)
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')})
    images = soak_frames(width, height, source=source)
    params = [f'backend:={backend}', f'quality_backend:={quality_backend}', 'device:=cpu',
              *node_params]
    cmd = [sys.executable, '-m', 'adaqual_ros.ros.restoration_node', '--ros-args',
           '-r', f'__ns:={NAMESPACE}']
    for item in params:
        cmd += ['-p', item]
    log_file = open(out_dir / 'node.log', 'w')
    node_proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        report = _drive(node_proc, images, frames, warmup, frame_timeout, log)
    finally:
        if node_proc.poll() is None:
            node_proc.send_signal(signal.SIGINT)
            try:
                node_proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node_proc.kill()
                node_proc.wait()
        log_file.close()
    report.update(width=width, height=height, backend=backend, quality_backend=quality_backend,
                  node_params=list(params), node_exit_code=node_proc.returncode,
                  ros_domain_id=domain)
    (out_dir / 'soak.json').write_text(json.dumps(report, indent=2) + '\n')
    return report


class _Probe:
    """Publisher of frames and recorder of outputs and diagnostics, in a private context."""

    def __init__(self):
        from diagnostic_msgs.msg import DiagnosticArray
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('soak_probe', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(Image, f'{NAMESPACE}/image_raw', qos)
        self.outputs = []
        self.node.create_subscription(Image, f'{NAMESPACE}/restored/image_raw',
                                      self.outputs.append, qos)
        self.figures = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)

    def _on_diag(self, msg):
        for status in msg.status:
            if status.name.startswith('adaqual_restoration'):
                self.figures = {kv.key: kv.value for kv in status.values}

    def figure(self, key, default=0.0):
        value = self.figures.get(key)
        try:
            return float(value)
        except (TypeError, ValueError):
            return default

    def spin_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.01)
        return bool(predicate())

    def close(self):
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _drive(node_proc, images, frames, warmup, frame_timeout, log):
    from adaqual_ros.ros.conversions import cv2_to_imgmsg

    probe = _Probe()
    try:
        started = probe.spin_until(
            lambda: node_proc.poll() is not None or (
                probe.pub.get_subscription_count() > 0 and probe.node.count_publishers(
                    f'{NAMESPACE}/restored/image_raw') > 0), 180.0)
        if not started or node_proc.poll() is not None:
            raise RuntimeError('the restoration node did not start (see node.log)')
        # Let the node settle its input QoS on our (reliable) publisher before counting.
        probe.spin_until(lambda: False, 2.0)
        templates = [cv2_to_imgmsg(image, 'rgb8') for image in images]
        height, width = images[0].shape[:2]
        seen = set()
        duplicates = mismatches = lost = 0
        latencies = []
        rss_start, _ = _proc_status(node_proc.pid)
        rss_warm = None
        rss_max = rss_start or 0.0
        threads_max = 0
        begin = time.monotonic()
        for index in range(frames):
            msg = templates[index % len(templates)]
            msg.header.stamp.sec, msg.header.stamp.nanosec = 1_000_000 + index // 1000, \
                (index % 1000) * 1_000_000
            msg.header.frame_id = FRAME_ID
            stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            sent_at = time.monotonic()
            probe.pub.publish(msg)
            got = probe.spin_until(lambda key=stamp: any(_stamp(o) == key
                                                          for o in probe.outputs), frame_timeout)
            if got:
                latencies.append((time.monotonic() - sent_at) * 1000.0)
            else:
                lost += 1
            for out in probe.outputs:
                key = _stamp(out)
                if key in seen:
                    duplicates += 1
                seen.add(key)
                if (out.header.frame_id, out.height, out.width, out.encoding) != (
                        FRAME_ID, height, width, 'rgb8'):
                    mismatches += 1
            probe.outputs.clear()
            if index % 100 == 0 or index == warmup:
                rss, threads = _proc_status(node_proc.pid)
                if rss is not None:
                    rss_max = max(rss_max, rss)
                    threads_max = max(threads_max, threads)
                    if index >= warmup and rss_warm is None:
                        rss_warm = rss
            if index and index % 1000 == 0:
                log(f'soak: {index}/{frames} frames, {len(seen)} back, '
                    f'{index / (time.monotonic() - begin):.1f} frames/s')
            if node_proc.poll() is not None:
                raise RuntimeError(f'the restoration node exited with {node_proc.returncode} '
                                   f'after {index} frames (see node.log)')
        elapsed = time.monotonic() - begin
        probe.spin_until(lambda: probe.figure('frames_in') >= frames and
                         probe.figure('pending', 1.0) == 0.0, 10.0)
        probe.spin_until(lambda: False, 1.2)  # one more diagnostics report, after the last
        rss_end, threads_end = _proc_status(node_proc.pid)
        figures = dict(probe.figures)
    finally:
        probe.close()
    counts = {key: int(probe.figure(key)) for key in
              ('frames_in', 'published', 'passed_through', 'dropped', 'pending')}
    baseline = rss_warm if rss_warm is not None else rss_start
    report = {
        'frames': frames,
        **counts,
        'dropped_by_reason': {k.split('.', 1)[1]: int(float(v)) for k, v in figures.items()
                              if k.startswith('dropped.')},
        'passed_through_by_reason': {k.split('.', 1)[1]: int(float(v))
                                     for k, v in figures.items()
                                     if k.startswith('passed_through.')},
        'received': len(seen),
        'lost': lost,
        'duplicates': duplicates,
        'header_mismatches': mismatches,
        'accounted': counts['frames_in'] == counts['published'] + counts['passed_through'] +
        counts['dropped'] + counts['pending'],
        'fps': len(seen) / elapsed if elapsed > 0 else 0.0,
        'elapsed_s': elapsed,
        'round_trip_p50_ms': float(np.percentile(latencies, 50)) if latencies else None,
        'round_trip_p95_ms': float(np.percentile(latencies, 95)) if latencies else None,
        'node_latency_p50_ms': probe.figure('latency_p50_ms', None),
        'node_latency_p95_ms': probe.figure('latency_p95_ms', None),
        'memory_start_mb': rss_start,
        'memory_warm_mb': baseline,
        'memory_end_mb': rss_end,
        'memory_max_mb': rss_max,
        'memory_growth_mb': (rss_end - baseline) if rss_end is not None and baseline else None,
        'warmup_frames': warmup,
        'threads_max': threads_max,
        'threads_end': threads_end,
        'errors': int(probe.figure('errors')),
    }
    return report


def _stamp(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec

"""
The demo's ROS 2 graph: every node a separate process, this process conducting and listening.

    player ──image_raw──────────► restoration ──restored/image_raw──► detect_restored ─┐
       │  └─────────────────────► detect_raw ───────────raw/detections──────────────► metrics
       └──clean/image_raw───────► detect_clean ─────────clean/detections────────────┘

All nodes run under one namespace (default /adaqual_demo) in their own processes, started with
`python -m adaqual_ros.ros.<node> --ros-args -r __node:=... -r __ns:=... -p name:=value -r a:=b`.
The conductor (`run_demo`) waits until every node subscribes, then plays the stream once per
weather condition by setting the player's `condition` and `source` parameters, waits for the
graph to drain after each pass, triggers the metrics node's `write_report` service and stops all
children with SIGINT (on success, failure and Ctrl-C). Its own node records what the graph
publishes (`adaqual_ros.demo_report.DemoRecorder`) for the per-condition report.
"""
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import subprocess
import sys
import threading
import time

import rclpy
import yaml

from adaqual_ros.ros.processes import stop_processes

NAMESPACE = '/adaqual_demo'
PLAYER = 'adaqual_player'
RESTORATION = 'adaqual_restoration'
METRICS = 'adaqual_metrics'
DETECTORS = {'detect_raw': ('image_raw', 'raw'),
             'detect_restored': ('restored/image_raw', 'restored'),
             'detect_clean': ('clean/image_raw', 'clean')}
_START_RATE_HZ = 0.1  # the player's timer is not due before the conductor sets the real rate


class DemoError(RuntimeError):
    """The demo graph could not run (a node failed to start or died, a step timed out)."""


@dataclass
class GraphConfig:
    """
    What the conductor runs.

    Args:
        out_dir (`Path`): report folder (logs go to out_dir/logs).
        stream_folder (`Path`): PNG frames the player plays (see `adaqual_ros.demo_stream`).
        frames (`int`): frames in the stream (one pass per condition).
        conditions (`tuple[str]`): weather conditions, played in order.
        severity (`float`): mean weather severity 0..1.
        dim_haze (`float`): probability that haze is dusk or night fog (player `dim_haze`).
        rate_hz (`float`): player rate (the highest, with `pace`).
        pace (`bool`): adapt the player rate to the graph's measured compute times.
        backend (`str`): restoration backend ('adaqual' falls back to classical in the node).
        detector (`Path`, *optional*): YOLO model; None runs without detection.
        seed (`int`): weather seed.
        threads (`int`): torch threads of the restoration node.
        namespace (`str`): namespace of every node.
        strip_index (`int`): source frame index shown in the strip.
        node_timeout_s (`float`): most seconds for the nodes to start.
    """

    out_dir: Path
    stream_folder: Path
    frames: int
    conditions: tuple
    severity: float = 0.6
    dim_haze: float = 0.0
    rate_hz: float = 2.0
    pace: bool = False
    backend: str = 'classical'
    detector: Path = None
    seed: int = 0
    threads: int = 2
    namespace: str = NAMESPACE
    strip_index: int = 0
    node_timeout_s: float = 180.0
    extra_restoration_params: dict = field(default_factory=dict)


# ---- children ----------------------------------------------------------------------------------

def ros_value(value):
    """A Python value as `-p name:=value` text that ROS parses back to the same type."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return text if isinstance(yaml.safe_load(text) if text else None, str) else f"'{text}'"


def node_command(module, name, namespace, params=None, remaps=None):
    """The argv that starts one node: `python -m module --ros-args ...`."""
    cmd = [sys.executable, '-m', module, '--ros-args', '-r', f'__node:={name}',
           '-r', f'__ns:={namespace}']
    for key, value in (params or {}).items():
        cmd += ['-p', f'{key}:={ros_value(value)}']
    for src, dst in (remaps or {}).items():
        cmd += ['-r', f'{src}:={dst}']
    return cmd


class Children:
    """
    The node processes: started with logs in `log_dir`, watched, stopped with SIGINT.

    Children stay in this process group, so a Ctrl-C in the terminal reaches them too.
    """

    def __init__(self, log_dir, env):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.procs = {}

    def start(self, name, cmd):
        log = open(self.log_dir / f'{name}.log', 'w')
        log.write(' '.join(cmd) + '\n')
        log.flush()
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = (proc, log)
        return proc

    def log_tail(self, name, lines=15):
        path = self.log_dir / f'{name}.log'
        text = path.read_text(errors='replace') if path.exists() else ''
        return '\n'.join(text.splitlines()[-lines:])

    def check(self):
        """Raise DemoError when a child has exited (they are meant to run until stopped)."""
        for name, (proc, _) in self.procs.items():
            code = proc.poll()
            if code is not None:
                raise DemoError(f'node {name} exited with code {code}; the end of its log '
                                f'({self.log_dir / (name + ".log")}):\n{self.log_tail(name)}')

    def stop(self, timeout=30.0):
        """SIGINT every child (player first), wait, then kill what is left; return exit codes."""
        codes = stop_processes(self.procs, timeout)
        self.procs = {}
        return codes


def graph_env(base=None):
    """
    The environment of the demo: a DDS domain of its own on localhost, unless the user set one.

    ROS_DOMAIN_ID defaults to 1 + pid % 100 (so two demos on one machine do not mix);
    discovery stays on this machine unless ROS_AUTOMATIC_DISCOVERY_RANGE or ROS_LOCALHOST_ONLY
    is set.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
    if 'ROS_AUTOMATIC_DISCOVERY_RANGE' not in env and 'ROS_LOCALHOST_ONLY' not in env:
        env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['PYTHONUNBUFFERED'] = '1'
    return env


# ---- the conductor's own node ------------------------------------------------------------------

class Conductor:
    """An rclpy node (own context, executor thread) that records the graph and drives it."""

    def __init__(self, recorder, namespace, detection):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self.recorder = recorder
        self.ns = namespace.rstrip('/')
        self.context = Context()
        # Ctrl-C stays a KeyboardInterrupt in the main thread, which then stops the children.
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('adaqual_demo_conductor', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.diagnostics = {}
        self.diagnostics_at = {}
        self.errors = []
        self._player_params = None
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        deep = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        sub = self.node.create_subscription
        sub(String, self.topic('frame_info'), self._on_frame_info, deep)
        for topic, stream in (('image_raw', 'raw'), ('clean/image_raw', 'clean'),
                              ('restored/image_raw', 'restored')):
            sub(Image, self.topic(topic), lambda m, s=stream: self._on_image(s, m), reliable)
        # The restoration node's per-frame outputs: DESIGN.md names them restored/quality_map
        # and restored/prompts, the node now publishes quality_map and prompts; listen to both
        # (the recorder keys by stamp, so a frame seen twice counts once).
        for prefix in ('', 'restored/'):
            sub(Image, self.topic(prefix + 'quality_map'), self._on_quality, reliable)
            sub(String, self.topic(prefix + 'prompts'), self._on_restoration, deep)
        if detection:
            for _, stream in DETECTORS.values():
                sub(String, self.topic(f'{stream}/detections'),
                    lambda m, s=stream: self._on_detections(s, m), deep)
        sub(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self._thread = threading.Thread(target=self._spin, name='demo-conductor', daemon=True)
        self._thread.start()

    def topic(self, name):
        return f'{self.ns}/{name}'

    def _spin(self):
        from rclpy.executors import ExternalShutdownException

        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.1)
        except (ExternalShutdownException, KeyboardInterrupt):
            pass
        except Exception as exc:  # noqa: BLE001 - kept and raised again by the main thread
            self.errors.append(exc)

    def _now_ns(self):
        return time.time_ns()

    def _guard(self, func, *args):
        try:
            func(*args)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the recording
            self.recorder.bad_messages += 1
            self.node.get_logger().warning(f'demo: cannot record a message: {exc!r}',
                                           throttle_duration_sec=5.0)

    def _on_frame_info(self, msg):
        self._guard(lambda: self.recorder.add_frame_info(json.loads(msg.data)))

    def _on_image(self, stream, msg):
        from adaqual_ros.ros.conversions import image_to_rgb

        arrival = self._now_ns()

        def record():
            rgb, _ = image_to_rgb(msg)
            self.recorder.add_image(stream, _stamp_ns(msg.header), rgb, arrival)
        self._guard(record)

    def _on_quality(self, msg):
        from adaqual_ros.ros.conversions import imgmsg_to_cv2

        self._guard(lambda: self.recorder.add_quality(_stamp_ns(msg.header),
                                                      imgmsg_to_cv2(msg)))

    def _on_restoration(self, msg):
        def record():
            body = json.loads(msg.data)
            stamp = body['stamp']
            self.recorder.add_restoration(int(stamp['sec']) * 1_000_000_000
                                          + int(stamp['nanosec']), body)
        self._guard(record)

    def _on_detections(self, stream, msg):
        arrival = self._now_ns()
        self._guard(lambda: self.recorder.add_detections(stream, json.loads(msg.data), arrival))

    def _on_diagnostics(self, msg):
        now = time.monotonic()
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: _number(kv.value) for kv in status.values}
            self.diagnostics_at[status.name] = now

    def idle_since(self, names, since):
        """Whether every node in `names` reported, after `since`, no frame in flight."""
        for name in names:
            keys = [k for k in self.diagnostics if k.split(':', 1)[0] == name]
            if not keys or any(self.diagnostics_at[k] <= since
                               or self.diagnostics[k].get('pending') != 0 for k in keys):
                return False
        return True

    # ---- graph queries and calls (main thread) -------------------------------------------

    def node_endpoints(self, topic, kind):
        infos = (self.node.get_subscriptions_info_by_topic(self.topic(topic)) if kind == 'sub'
                 else self.node.get_publishers_info_by_topic(self.topic(topic)))
        return {info.node_name for info in infos}

    def reliable_subscribers(self, topic, names):
        """Whether every node in `names` subscribes to `topic` with reliable QoS only."""
        from rclpy.qos import ReliabilityPolicy

        infos = self.node.get_subscriptions_info_by_topic(self.topic(topic))
        for name in names:
            mine = [i for i in infos if i.node_name == name]
            if not mine or any(i.qos_profile.reliability != ReliabilityPolicy.RELIABLE
                               for i in mine):
                return False
        return True

    def set_player(self, timeout=15.0, **values):
        """Set player parameters; raise DemoError when refused or unanswered."""
        from rclpy.parameter import Parameter
        from rclpy.parameter_client import AsyncParameterClient

        if self._player_params is None:
            self._player_params = AsyncParameterClient(self.node, f'{self.ns}/{PLAYER}')
        client = self._player_params
        if not client.wait_for_services(timeout_sec=timeout):
            raise DemoError('the player node offers no parameter services')
        future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        results = self.wait_future(future, timeout).results
        for (key, _), result in zip(values.items(), results):
            if not result.successful:
                raise DemoError(f'the player refused {key}: {result.reason}')

    def write_metrics_report(self, timeout=120.0):
        """Call the metrics node's write_report service; return its parsed JSON message."""
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, self.topic('write_report'))
        try:
            if not client.wait_for_service(timeout_sec=10.0):
                raise DemoError('the metrics node offers no write_report service')
            response = self.wait_future(client.call_async(Trigger.Request()), timeout)
        finally:
            self.node.destroy_client(client)
        if not response.success:
            raise DemoError(f'the metrics node could not write its report: {response.message}')
        return json.loads(response.message)

    def wait_future(self, future, timeout):
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise DemoError(f'no answer within {timeout:.0f} s')
            time.sleep(0.02)
        return future.result()

    def close(self):
        try:
            rclpy.shutdown(context=self.context)
        except Exception:  # noqa: BLE001 - already shut down
            pass
        self._thread.join(timeout=5.0)
        self.executor.shutdown()
        self.node.destroy_node()


def _stamp_ns(header):
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _number(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {'true': True, 'false': False, 'n/a': None}.get(text, text)


# ---- the run -----------------------------------------------------------------------------------

def _wait(predicate, timeout, children, what, conductor=None, tick=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        children.check()
        if tick is not None:
            tick()
        if conductor is not None and conductor.errors:
            raise DemoError(f'the conductor node failed: {conductor.errors[0]!r}')
        if time.monotonic() > deadline:
            raise DemoError(f'timed out after {timeout:.0f} s waiting for {what}')
        time.sleep(0.1)


def start_graph(config, children, conductor):
    """Start every node, wait until each subscribes, then start the player (not yet playing)."""
    ns = config.namespace
    detection = config.detector is not None
    restoration = {'backend': config.backend, 'device': 'cpu', 'threads': config.threads,
                   'fallback_to_classical': True, **config.extra_restoration_params}
    children.start(RESTORATION, node_command('adaqual_ros.ros.restoration_node', RESTORATION, ns,
                                             restoration))
    expected = {'image_raw': {RESTORATION}}
    if detection:
        for name, (topic, stream) in DETECTORS.items():
            remaps = {'image_raw': topic, 'detections': f'{stream}/detections',
                      'detections/array': f'{stream}/detections/array',
                      'detections/image': f'{stream}/detections/image'}
            children.start(name, node_command(
                'adaqual_ros.ros.detection_node', name, ns,
                {'model': str(config.detector), 'device': 'cpu'}, remaps))
            expected.setdefault(topic, set()).add(name)
        children.start(METRICS, node_command(
            'adaqual_ros.ros.metrics_node', METRICS, ns,
            {'report_dir': str(Path(config.out_dir) / 'metrics_node'),
             'report_on_shutdown': False}))
        for _, stream in DETECTORS.values():
            expected[f'{stream}/detections'] = {METRICS}

    def ready():
        return all(names <= conductor.node_endpoints(topic, 'sub')
                   for topic, names in expected.items())
    _wait(ready, config.node_timeout_s, children, 'the nodes to start (see the logs in '
          f'{children.log_dir})', conductor)
    children.start(PLAYER, node_command(
        'adaqual_ros.ros.player_node', PLAYER, ns,
        {'source': str(config.stream_folder), 'publish_rate': _START_RATE_HZ,
         'condition': config.conditions[0], 'severity': float(config.severity),
         'dim_haze': float(config.dim_haze),
         'seed': int(config.seed), 'loop': False, 'publish_clean': True}))
    _wait(lambda: PLAYER in conductor.node_endpoints('frame_info', 'pub'), 60.0, children,
          'the player to start', conductor)
    # The nodes adopt the publisher's QoS (reliable) once they see it, by re-subscribing: wait
    # for that, so no frame falls into the gap.
    images = {t: n for t, n in expected.items() if not t.endswith('detections')}
    _wait(lambda: all(conductor.reliable_subscribers(t, n) for t, n in images.items()), 30.0,
          children, "the nodes to adopt the player's QoS", conductor)
    time.sleep(0.5)


class Pacer:
    """
    Keep the player's rate at what the graph can serve, from the nodes' measured compute times.

    Every node shares the CPU, so a frame interval must cover the slowest node's time and the
    sum of all nodes' times spread over the cores; `headroom` adds a margin. The rate only moves
    between `min_rate` and the configured rate, and only when it is off by more than 15 %.
    """

    def __init__(self, conductor, recorder, rate, enabled, headroom=1.25, min_rate=0.1,
                 period_s=2.0, start_rate=None):
        self.conductor = conductor
        self.recorder = recorder
        self.rate = float(start_rate or rate)
        self.max_rate = float(rate)
        self.enabled = bool(enabled)
        self.headroom = headroom
        self.min_rate = min_rate
        self.period_s = period_s
        self.history = [(0.0, self.rate)]
        self._started = time.monotonic()
        self._last = self._started

    def target(self, service_ms):
        """The rate (Hz) for the measured per-node times (ms)."""
        if not service_ms:
            return self.rate
        cores = max(1, os.cpu_count() or 1)
        need = max(max(service_ms.values()), sum(service_ms.values()) / cores) * self.headroom
        return min(self.max_rate, max(self.min_rate, 1000.0 / max(need, 1e-3)))

    def tick(self):
        now = time.monotonic()
        if not self.enabled or now - self._last < self.period_s:
            return
        self._last = now
        service = self.recorder.service_ms()
        if 'restoration' not in service:
            return  # detections alone come first and fast: they would overshoot the rate
        target = self.target(service)
        if abs(target - self.rate) / self.rate > 0.15:
            self.conductor.set_player(publish_rate=round(target, 3))
            self.rate = round(target, 3)
            self.history.append((round(now - self._started, 1), self.rate))


def play(config, children, conductor, recorder, progress=None):
    """Play the stream once per condition; return (per-condition wall times s, rate history)."""
    # Paced runs start slow and speed up once the first frames are measured (starting fast
    # would drop frames of the first pass until the rate comes down).
    start = max(0.1, config.rate_hz / 4.0) if config.pace else config.rate_hz
    pacer = Pacer(conductor, recorder, config.rate_hz, config.pace, start_rate=start)
    names = [RESTORATION] + (list(DETECTORS) if config.detector is not None else [])
    timings = {}
    for number, condition in enumerate(config.conditions):
        started = time.monotonic()
        if number == 0:
            conductor.set_player(publish_rate=float(pacer.rate))
        else:
            conductor.set_player(condition=condition, source=str(config.stream_folder))

        def tick(c=condition, n=number):
            pacer.tick()
            if progress is not None:
                progress(c, n)
        pass_timeout = config.frames / pacer.min_rate + 120.0
        _wait(lambda n=number: recorder.ends > n, pass_timeout, children,
              f'the player to finish the {condition} pass', conductor, tick)
        # Drain: wait for the frames still in the graph; frames the graph dropped never come.
        # Done when every frame has all its results, or when every node reports nothing in
        # flight since the pass ended, or (fallback) after a quiet spell with no new results.
        ended = time.monotonic()
        settle_s = max(4.0, 3.0 / pacer.rate)
        last, quiet_since = -1, ended
        while recorder.pending_frames(condition) and time.monotonic() - quiet_since < settle_s:
            if (time.monotonic() - quiet_since > 1.0
                    and conductor.idle_since(names, max(ended, quiet_since))):
                break
            children.check()
            done = recorder.completed()
            if done != last:
                last, quiet_since = done, time.monotonic()
            if progress is not None:
                progress(condition, number)
            time.sleep(0.2)
        timings[condition] = time.monotonic() - started
        if progress is not None:
            progress(condition, number, finished=True)
    return timings, pacer.history


def run_graph(config, recorder, progress=None, out=None):
    """
    Run the whole graph once; always stop every child.

    Args:
        config (`GraphConfig`): what to run.
        recorder (`DemoRecorder`): receives everything the graph publishes.
        progress (`callable`, *optional*): `progress(condition, pass_number, finished=False)`.
        out (`dict`, *optional*): filled in place (so a caller has the figures even when the
            run fails or is interrupted).

    Returns:
        `dict` with 'pass_s' (per condition), 'rates' (player rate changes), 'metrics_node'
        (its write_report answer or None), 'diagnostics' (last /diagnostics figures per node),
        'exit_codes', 'env'.
    """
    env = graph_env()
    # The conductor's own participant must be in the same domain as the children.
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')
                       if k in env})
    children = Children(Path(config.out_dir) / 'logs', env)
    conductor = Conductor(recorder, config.namespace, config.detector is not None)
    out = {} if out is None else out
    out.update(env={k: env.get(k) for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE',
                                            'ROS_LOCALHOST_ONLY')},
               metrics_node=None, diagnostics={})
    try:
        start_graph(config, children, conductor)
        out['pass_s'], out['rates'] = play(config, children, conductor, recorder, progress)
        if config.detector is not None:
            out['metrics_node'] = conductor.write_metrics_report()
        time.sleep(1.2)  # one more /diagnostics period for the final counts
    finally:
        out['diagnostics'] = dict(conductor.diagnostics)
        try:
            out['exit_codes'] = children.stop()
        finally:
            conductor.close()
    return out

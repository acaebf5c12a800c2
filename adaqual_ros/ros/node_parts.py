"""Pieces the nodes share: the process entry point, the newest-frame mailbox, cameras, outputs,
and the base of the nodes that handle camera frames on a worker thread."""
import faulthandler
import os
import signal
import sys
import threading
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from adaqual_ros.io.codec import ImageCodecError, encoding_info
from adaqual_ros.ros.diagnostics import DiagnosticsReporter
from adaqual_ros.ros.qos import describe_qos, qos_key, subscriber_qos


class FrameRejected(Exception):
    """A frame that cannot be used; `reason` names its counter in diagnostics."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def check_image_header(msg):
    """Raise FrameRejected for a raw Image with no pixels or an encoding the codec lacks."""
    if msg.height == 0 or msg.width == 0:
        raise FrameRejected('empty_frame', f'zero-size image {msg.width}x{msg.height}')
    try:
        encoding_info(msg.encoding)
    except ImageCodecError as exc:
        raise FrameRejected('unknown_encoding', str(exc)) from None


def run_node(make_node, name, args=None):
    """
    A node's main(): init rclpy, build the node, spin until shutdown; returns the exit status
    (0: a node that cannot start ends the process with 1 itself).

    A node that cannot start (bad parameters, missing weights) logs one FATAL line saying why
    and the process exits 1 at once, without Python's teardown: native libraries that the failed
    constructor half set up (ONNX Runtime, torch threads) once crashed there under load, turning
    exit 1 into SIGSEGV. A node stopped while it was starting exits 0. On the way out of a normal
    run the node's ``close()`` runs where it has one (it may stop a worker or write a report),
    else ``destroy_node()``.
    """
    failed = False
    if hasattr(signal, 'SIGUSR1'):
        # A node that does not stop can be asked where it is (processes.stop_processes does,
        # before a kill): every thread's stack goes to stderr, the node's log.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        with rclpy.init(args=args):
            try:
                node = make_node()
            except Exception as exc:  # noqa: BLE001 - report why the node cannot start, exit 1
                # A stop (SIGINT/SIGTERM) while the node was being built shuts the context down
                # under the constructor, which then fails: asked to stop, not broken.
                failed = rclpy.ok()
                if failed:
                    get_logger(name).fatal(f'cannot start: {exc}')
            else:
                try:
                    rclpy.spin(node)
                finally:
                    getattr(node, 'close', node.destroy_node)()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    if failed:  # after rclpy's own shutdown (the with block)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    return 0


class Mailbox:
    """
    One slot per key holding its newest item; `put` returns the item it replaced (or None).

    The executor thread puts, a worker thread takes: the executor never waits on the work, and a
    frame replaced before the worker took it is the caller's to count as stale. With several
    keys (cameras) `take` serves the one served longest ago, so no camera starves another.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._items = {}
        self._served = {}  # key -> turn it was last served at
        self._turn = 0
        self._closed = False

    def put(self, item, key=None):
        with self._cond:
            replaced = self._items.get(key)
            self._items[key] = item
            self._cond.notify()
            return replaced

    def take(self, timeout):
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            key = min(self._items, key=lambda k: self._served.get(k, -1))
            self._turn += 1
            self._served[key] = self._turn
            return self._items.pop(key)

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Outputs:
    """
    A node's publishers by key, rebuilt as a set when QoS or optional outputs change.

    The lock lets the worker thread publish while a parameter callback swaps the publishers.
    """

    def __init__(self, node):
        self._node = node
        self._lock = threading.RLock()
        self._pubs = {}

    def rebuild(self, wanted, qos):
        """Replace all publishers with `wanted` = {key: (msg_type, topic)} at `qos`."""
        with self._lock:
            for pub in self._pubs.values():
                self._node.destroy_publisher(pub)
            self._pubs = {key: self._node.create_publisher(t, topic, qos)
                          for key, (t, topic) in wanted.items()}

    def listeners(self):
        with self._lock:
            return {key: pub.get_subscription_count() for key, pub in self._pubs.items()}

    def publish(self, key, msg):
        with self._lock:
            pub = self._pubs.get(key)
            if pub is not None:
                pub.publish(msg)


def input_topic(compressed, prefix=''):
    return prefix + ('image_raw/compressed' if compressed else 'image_raw')


class ImageInput:
    """
    The node's image subscription (raw or compressed) with the publishers' QoS.

    `refresh` re-subscribes when the topic or the adopted QoS changes (a publisher appeared or
    changed reliability), so any camera driver matches.
    """

    def __init__(self, node, callback, depth, prefix=''):
        self._node, self._callback, self._depth = node, callback, depth
        self._prefix = prefix  # 'front/' for a camera of a multi-camera node
        self._sub = None
        self._key = None

    @property
    def active(self):
        return self._sub is not None

    def subscribe(self, compressed):
        topic = input_topic(compressed, self._prefix)
        qos = subscriber_qos(self._node, topic, self._depth)
        if self._sub is not None:
            self._node.destroy_subscription(self._sub)
        msg_type = CompressedImage if compressed else Image
        self._sub = self._node.create_subscription(msg_type, topic, self._callback, qos)
        self._key = (topic, qos_key(qos))
        self._node.get_logger().info(f'subscribed to {topic} ({describe_qos(qos)})')

    def refresh(self, compressed):
        topic = input_topic(compressed, self._prefix)
        if (topic, qos_key(subscriber_qos(self._node, topic, self._depth))) != self._key:
            self.subscribe(compressed)


class Camera:
    """
    One camera stream of a node: its topics (under ``name/``, or the node's own for ''), input
    subscription, publishers and per-stream state. A node serves one, or its `cameras`.
    """

    def __init__(self, node, name, callback, depth):
        self.name = name
        self.prefix = f'{name}/' if name else ''
        base = node.get_fully_qualified_name()
        # the restorer's quality cache and start noise are per stream
        self.stream_id = f'{base}/{name}' if name else base
        self.outputs = Outputs(node)
        self.input = ImageInput(node, lambda msg: callback(msg, self), depth, self.prefix)
        self.camera_info = None
        self.last_stamp = None
        self.last_size = None
        self.last_accept = 0.0
        self.frames_in = 0   # for diagnostics (the node's FrameStats count all cameras)
        self.frames_out = 0  # published or passed through

    def label(self):
        """Prefix for log lines: which camera (empty for a node's single camera)."""
        return f'camera {self.name}: ' if self.name else ''

    def topics(self, wanted):
        """{key: (type, topic)} with each topic under this camera's prefix."""
        return {key: (t, self.prefix + topic) for key, (t, topic) in wanted.items()}


def camera_figures(cameras):
    """Diagnostics figures per camera when a node serves several (which one is silent)."""
    if len(cameras) < 2:
        return {}
    out = {}
    for cam in cameras:
        out[f'camera.{cam.name}.frames_in'] = cam.frames_in
        out[f'camera.{cam.name}.frames_out'] = cam.frames_out
    return out


class FrameWorkerNode(Node):
    """
    Base of the nodes that take camera frames (`Camera` inputs) on the executor and handle them
    on a worker thread: the newest frame per camera waits in a `Mailbox`, so the executor never
    blocks on the work; drops are counted by reason and warnings are rate-limited.

    A subclass sets ``stats`` (`FrameStats`), ``params`` (with ``input_compressed``) and
    ``_cameras``, implements ``_handle(msg, received, cam)`` and ``_diagnostic_status()``, and
    calls `_start_serving` at the end of its constructor.
    """

    LOG_EVERY_S = 5.0  # one warning per kind of problem at most this often

    def __init__(self, node_name, **kwargs):
        self._warned = {}
        self._running = False
        super().__init__(node_name, **kwargs)

    def _input_topic(self, cam):
        return input_topic(self.params['input_compressed'], cam.prefix)

    def _subscribe_image(self):
        for cam in self._cameras:
            cam.input.subscribe(self.params['input_compressed'])

    def _refresh_input_qos(self):
        for cam in self._cameras:
            cam.input.refresh(self.params['input_compressed'])

    def _warn(self, key, message):
        """Log a warning at most once per LOG_EVERY_S for each kind of problem."""
        now = time.monotonic()
        if now - self._warned.get(key, -self.LOG_EVERY_S) >= self.LOG_EVERY_S:
            self._warned[key] = now
            self.get_logger().warning(message)

    def _drop(self, reason, message):
        self.stats.record_dropped(reason)
        self._warn(reason, f'frame dropped ({reason}): {message}')

    def _start_serving(self, worker_name):
        """The end of a subclass's constructor: subscribe the cameras, keep their input QoS
        matched to the publishers, report ``_diagnostic_status`` on /diagnostics, start the
        worker."""
        self._subscribe_image()
        # Publishers appear after us as often as before: re-resolve the input QoS now and then.
        self._qos_timer = self.create_timer(1.0, self._refresh_input_qos)
        self._diagnostics = DiagnosticsReporter(self, self._diagnostic_status,
                                                self.params['diagnostics_period_s'])
        self._mailbox = Mailbox()
        self._running = True
        self._worker = threading.Thread(target=self._work, name=worker_name, daemon=True)
        self._worker.start()

    def _stop_worker(self, timeout):
        self._running = False
        if hasattr(self, '_mailbox'):  # a constructor that failed early started none
            self._mailbox.close()
            self._worker.join(timeout=timeout)

    def _work(self):
        while self._running:
            item = self._mailbox.take(timeout=0.5)
            if item is None:
                continue
            try:
                self._handle(*item)
            except Exception as exc:  # noqa: BLE001 - last line of defence: keep serving
                if not self.context.ok():
                    return  # shutting down: publishers are gone, nothing to report
                self.stats.record_dropped('internal_error')
                self.stats.record_error(f'internal error: {exc!r}')
                self._warn('internal', f'frame dropped (internal_error): {exc!r}')

"""
The detection node: YOLO on a camera stream, detections out with the image's stamp.

Topics (relative, so namespaces and remapping work; one node per stream, e.g. remap
`image_raw:=restored/image_raw detections:=restored/detections`, or several streams from one
process and one model with `cameras`, e.g. 'front,front/restored': each name prefixes the
topics below):

- in  `image_raw` (sensor_msgs/Image) or `image_raw/compressed` (parameter `input_compressed`);
  QoS adopted from the publishers.
- out `detections` (std_msgs/String, JSON: header stamp + frame_id, image size, boxes, timings),
  `detections/array` (vision_msgs/Detection2DArray, only when vision_msgs is importable) and
  `detections/image` (rgb8 with boxes drawn by OpenCV, parameter `publish_annotated`).
- `/diagnostics` once a second.

Inference runs on a worker thread fed through a mailbox with one slot per stream (the newest
frame wins; replaced frames are dropped as 'stale'; streams are served in turn). With nobody
listening, frames are not run through the model.

Bad input never stops the node: every received frame ends published or dropped with a reason
(`dropped.<reason>` in diagnostics, one warning per reason every 5 s): unknown_encoding,
bad_data (data shorter than step * height), empty_frame, unsupported_encoding, non_finite
(NaN/Inf in a float image), decode_error (compressed), duplicate_stamp, detect_error, stale,
no_subscribers. Frames it still serves but counts as `event.<name>`: out_of_order_stamp,
resolution_changed, downscaled (over `max_pixels`), model_load_failed (a run-time model or device
change that does not load: the previous detector keeps serving). A model that does not load at
start is fatal: the node logs why and exits with code 1.
"""
import json
import sys
import time

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from adaqual_ros.detection.yolo import Detector, draw_detections, find_detector
from adaqual_ros.io.codec import ImageCodecError
from adaqual_ros.ros import conversions
from adaqual_ros.ros.diagnostics import FrameStats, build_status
from adaqual_ros.ros.node_parts import (
    Camera,
    FrameRejected,
    FrameWorkerNode,
    camera_figures,
    check_image_header,
    run_node,
)
from adaqual_ros.ros.params import DETECTION_PARAMS, ParamBinding, parse_cameras, parse_classes
from adaqual_ros.ros.qos import publisher_qos

try:  # vision_msgs is optional: JSON on std_msgs/String is always published.
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
    HAVE_VISION_MSGS = True
except ImportError:
    HAVE_VISION_MSGS = False

NODE_NAME = 'adaqual_detection'
_INPUT_DEPTH = 5
# Changing these needs a new model object; the others are set on the loaded one.
_RELOAD_KEYS = ('model', 'device', 'half')


def stamp_ns(header):
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def detections_payload(header, detections, model_name, timing_ms, published_ns):
    """The JSON body published on `detections` (also what the metrics node reads)."""
    body = detections.to_dict()
    body.update({
        'header': {'stamp': {'sec': int(header.stamp.sec), 'nanosec': int(header.stamp.nanosec)},
                   'frame_id': header.frame_id},
        'stamp_ns': stamp_ns(header),
        'model': model_name,
        'timing_ms': {k: round(float(v), 3) for k, v in timing_ms.items()},
        'published_ns': int(published_ns),
    })
    return body


def to_detection2d_array(header, detections):
    """vision_msgs/Detection2DArray of `detections` (requires vision_msgs)."""
    out = Detection2DArray()
    out.header = header
    for box, score, cls, label in zip(detections.boxes, detections.scores,
                                      detections.class_ids, detections.labels):
        det = Detection2D()
        det.header = header
        det.id = label
        x1, y1, x2, y2 = (float(v) for v in box)
        det.bbox.center.position.x = (x1 + x2) / 2.0
        det.bbox.center.position.y = (y1 + y2) / 2.0
        det.bbox.size_x = x2 - x1
        det.bbox.size_y = y2 - y1
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = str(int(cls))
        hyp.hypothesis.score = float(score)
        det.results.append(hyp)
        out.detections.append(det)
    return out


class DetectionNode(FrameWorkerNode):
    """
    ROS 2 node running a YOLO detector (`adaqual_ros.detection.yolo.Detector`) on images.

    Args:
        node_name (`str`, *optional*, defaults to `'adaqual_detection'`): the node name.
        **kwargs: passed to `rclpy.node.Node` (namespace, parameter_overrides, ...).
    """

    def __init__(self, node_name=NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.stats = FrameStats()
        self._detector = None
        self._detector_key = None
        self._failed_key = None
        self.params = ParamBinding(self, DETECTION_PARAMS, on_change=self._on_params)
        self._cameras = [Camera(self, name, self._on_image, _INPUT_DEPTH)
                         for name in parse_cameras(self.params['cameras']) or ['']]
        # Load (and run once) now, so a model that cannot work fails at start with a clear
        # message rather than on frame one.
        self._ensure_detector()
        self._make_publishers()
        self._start_serving('detection-worker')
        for cam in self._cameras:
            self.get_logger().info(
                f'detecting on {self._input_topic(cam)} with {self._detector.path} '
                f'({self._detector.device}) -> {cam.prefix}detections')

    # ---- parameters and model ------------------------------------------------------------

    def _on_params(self, changed):
        if {'output.reliability', 'output.depth', 'publish_annotated'} & set(changed):
            self._make_publishers()
        if 'input_compressed' in changed:
            self._subscribe_image()
        self.get_logger().info(f'parameters changed: {changed}')

    def _load_detector(self, values):
        path = find_detector(values['model'] or None)
        if path is None:
            raise RuntimeError('no model: set the `model` parameter, $ADAQUAL_DETECTOR or '
                               '$ADAQUAL_ASSETS')
        try:
            detector = Detector(path, device=values['device'], half=values['half'])
            detector.warmup()  # a device that cannot run it fails here, not on a frame
        except Exception as exc:  # noqa: BLE001 - ultralytics raises many types; say which
            raise RuntimeError(f'cannot use detector {str(path)!r} on device '
                               f'{values["device"]!r}: {exc}') from exc
        return detector

    def _ensure_detector(self):
        """
        The detector for the current parameters (a new one when model, device or half changed).

        At start a failure raises; later the previous detector keeps serving and the failure is
        logged and counted once (not retried until those parameters change again).
        """
        values = self.params.values
        key = tuple(values[k] for k in _RELOAD_KEYS)
        if self._detector is None:
            self._detector = self._load_detector(values)
            self._detector_key = key
        elif key != self._detector_key and key != self._failed_key:
            try:
                self._detector = self._load_detector(values)
                self._detector_key, self._failed_key = key, None
                self.get_logger().info(f'detector now {self._detector.path} '
                                       f'({self._detector.device})')
            except Exception as exc:  # noqa: BLE001 - keep serving with the loaded detector
                self._failed_key = key  # not retried until the parameters change again
                self.stats.record_event('model_load_failed')
                self.stats.record_error(str(exc))
                self.get_logger().error(f'{exc}; still detecting with {self._detector.path} '
                                        f'({self._detector.device})')
        det = self._detector
        det.conf, det.iou, det.imgsz = values['conf'], values['iou'], values['imgsz']
        det.classes, det.max_det = parse_classes(values['classes']), values['max_det']
        return det

    # ---- topics --------------------------------------------------------------------------

    def _make_publishers(self):
        qos = publisher_qos(self.params['output.reliability'], self.params['output.depth'])
        wanted = {'json': (String, 'detections')}
        if HAVE_VISION_MSGS:
            wanted['array'] = (Detection2DArray, 'detections/array')
        if self.params['publish_annotated']:
            wanted['image'] = (Image, 'detections/image')
        for cam in self._cameras:
            cam.outputs.rebuild(cam.topics(wanted), qos)

    # ---- callbacks and worker ------------------------------------------------------------

    def _on_image(self, msg, cam):
        self.stats.received()
        cam.frames_in += 1
        if self._mailbox.put((msg, time.monotonic(), cam), key=cam.name) is not None:
            self.stats.record_dropped('stale')

    def _handle(self, msg, received, cam):
        listeners = cam.outputs.listeners()
        if not any(listeners.values()):
            self.stats.record_dropped('no_subscribers')
            return
        stamp = (int(msg.header.stamp.sec), int(msg.header.stamp.nanosec))
        if stamp != (0, 0) and stamp == cam.last_stamp:
            # A second result for one stamp would be paired twice downstream (metrics).
            self._drop('duplicate_stamp',
                       f'{cam.label()}same stamp {stamp} as the previous frame')
            return
        if cam.last_stamp is not None and stamp < cam.last_stamp:
            self.stats.record_event('out_of_order_stamp')
            self._warn('out_of_order', f'{cam.label()}stamp {stamp} is older than the previous '
                       f'{cam.last_stamp}; detected anyway')
        t0 = time.perf_counter()
        try:
            rgb = self._decode(msg)
        except FrameRejected as exc:
            self._drop(exc.reason, f'{cam.label()}{exc}')
            return
        cam.last_stamp = stamp
        size = rgb.shape[:2]
        if cam.last_size is not None and size != cam.last_size:
            self.stats.record_event('resolution_changed')
            self.get_logger().info(f'{cam.label()}resolution changed {cam.last_size[1]}x'
                                   f'{cam.last_size[0]} -> {size[1]}x{size[0]}')
        cam.last_size = size
        small, scale = self._fit(rgb)
        t1 = time.perf_counter()
        detector = self._ensure_detector()
        try:
            dets = detector.detect(small)
        except Exception as exc:  # noqa: BLE001 - one failed inference must not stop the node
            self.stats.record_error(f'detection failed: {exc!r}')
            self._drop('detect_error', f'detection failed: {exc!r}')
            return
        if scale != 1.0:
            dets = _rescaled(dets, 1.0 / scale, size)
        t2 = time.perf_counter()
        timing = {'decode': (t1 - t0) * 1e3, 'inference': (t2 - t1) * 1e3,
                  'total': (time.monotonic() - received) * 1e3}
        now_ns = self.get_clock().now().nanoseconds
        body = detections_payload(msg.header, dets, detector.path.name, timing, now_ns)
        cam.outputs.publish('json', String(data=json.dumps(body)))
        if listeners.get('array'):
            cam.outputs.publish('array', to_detection2d_array(msg.header, dets))
        if listeners.get('image'):
            drawn = draw_detections(rgb, dets)
            cam.outputs.publish('image', conversions.cv2_to_imgmsg(drawn, 'rgb8',
                                                                   header=msg.header))
        cam.frames_out += 1
        self.stats.record_published(latency_ms=timing['total'],
                                    timings={k: timing[k] for k in ('decode', 'inference')})

    def _decode(self, msg):
        """
        Any Image/CompressedImage -> HxWx3 uint8 RGB (mono expanded, 16-bit scaled).

        Raises FrameRejected naming why the message cannot be used.
        """
        if isinstance(msg, CompressedImage):
            try:
                rgb, _ = conversions.image_to_rgb(msg)
            except ImageCodecError as exc:
                raise FrameRejected('decode_error', str(exc)) from None
            return _to_uint8_rgb(rgb)
        check_image_header(msg)
        try:
            array = conversions.imgmsg_to_cv2(msg)
        except ImageCodecError as exc:  # data shorter than step * height, bad step...
            raise FrameRejected('bad_data', str(exc)) from None
        if array.dtype.kind == 'f' and not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            raise FrameRejected('non_finite', f'{bad} NaN/Inf value(s) in a {msg.encoding} '
                                'image')
        try:
            rgb, _ = conversions.to_rgb(array, msg.encoding)
        except ImageCodecError as exc:  # e.g. 32FC3: no colour meaning
            raise FrameRejected('unsupported_encoding', str(exc)) from None
        return _to_uint8_rgb(rgb)

    def _fit(self, rgb):
        """Shrink a frame over `max_pixels` (area filter); return (image, scale)."""
        height, width = rgb.shape[:2]
        limit = self.params['max_pixels']
        if height * width <= limit:
            return rgb, 1.0
        scale = (limit / (height * width)) ** 0.5
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        self.stats.record_event('downscaled')
        self._warn('downscaled', f'{width}x{height} frame is over max_pixels {limit}: '
                   f'detecting on {size[0]}x{size[1]}')
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), size[0] / width

    def _diagnostic_status(self):
        figures = self.stats.snapshot()
        det = self._detector
        figures.update(model=str(det.path) if det else '', device=det.device if det else '',
                       input_topic=','.join(self._input_topic(c) for c in self._cameras),
                       vision_msgs=HAVE_VISION_MSGS,
                       namespace=self.get_namespace())
        figures.update(camera_figures(self._cameras))
        return build_status(f'{self.get_name()}: detection', det.device if det else '', figures)

    def close(self):
        self._stop_worker(timeout=2.0)


def _to_uint8_rgb(rgb):
    if rgb.dtype == np.uint16:
        rgb = (rgb >> 8).astype(np.uint8)
    elif rgb.dtype != np.uint8:
        # Float planes: [0, 1] is the usual scale; anything larger is scaled by its peak.
        plane = rgb.astype(np.float32)
        peak = float(plane.max()) if plane.size else 1.0
        plane = plane / peak if peak > 1.0 else plane
        rgb = (np.clip(plane, 0.0, 1.0) * 255.0).astype(np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return np.ascontiguousarray(rgb)


def _rescaled(dets, factor, image_size):
    """`dets` found on a shrunk frame, in the pixels of the original `image_size` frame."""
    boxes = np.asarray(dets.boxes, dtype=np.float64) * factor
    return type(dets)(boxes=boxes, scores=dets.scores, class_ids=dets.class_ids,
                      names=dets.names, image_size=tuple(image_size), speed_ms=dets.speed_ms)


def main(args=None):
    return run_node(DetectionNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())

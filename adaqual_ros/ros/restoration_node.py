"""
The restoration node: weather-degraded camera frames in, restored frames out, same header.

Topics (all relative, so namespaces and remapping work):

- in  `image_raw` (sensor_msgs/Image) or `image_raw/compressed` (CompressedImage, parameter
  `input_compressed`), and `camera_info`; QoS adopted from the publishers (any driver matches).
- out `restored/image_raw` (input header and encoding), `restored/image_raw/compressed`
  (parameter `publish_compressed`), `restored/camera_info` (header of the restored frame),
  `quality_map` (32FC1 grid of scores 1-5), `quality_map/visualization` (rgb8, parameter
  `publish_visualization`) and `prompts` (std_msgs/String, JSON).
- service `~/enable` (std_srvs/SetBool) = parameter `enabled`; `/diagnostics` every
  `diagnostics_period_s` (1 s by default).
- `cameras` (read-only, e.g. 'front,rear'): one process serves several cameras with one model in
  memory; each name prefixes its topics (front/image_raw -> front/restored/image_raw, ...) and
  keeps its own quality cache and start noise. Parameters and diagnostics are the node's, plus
  `camera.NAME.enabled` / `skip_threshold` / `skip_margin` / `whole_frame_share` per camera
  (`params.CAMERA_PARAMS`: pass one camera through, or skip differently, with one model).

Frames go to a worker thread through a mailbox that always holds the newest frame of each
camera, so the executor never blocks; a frame replaced before the worker took it is dropped as
'stale'. Every received frame is accounted for as published, passed through (with a reason) or
dropped (with a reason); see `FrameStats`.
"""
import json
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticStatus
import numpy as np
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import SetBool

from adaqual_ros.io.codec import ImageCodecError
from adaqual_ros.quality.overlay import quality_overlay
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
from adaqual_ros.ros.params import (
    RESTORATION_PARAMS,
    ParamBinding,
    camera_overrides,
    camera_param_name,
    camera_param_specs,
    parse_cameras,
    settings_from_params,
    unknown_cameras,
)
from adaqual_ros.ros.qos import publisher_qos, subscriber_qos
from adaqual_ros.runtime import InvalidFrameError, Restorer

NODE_NAME = 'adaqual_restoration'
# Parameters the node itself handles; every other one maps onto RestorerSettings.
_NODE_ONLY = {'enabled', 'max_rate_hz', 'max_pixels', 'input_compressed', 'cameras',
              'publish_visualization', 'publish_compressed', 'compressed_format',
              'jpeg_quality', 'output.reliability', 'output.depth', 'diagnostics_period_s'}
_INPUT_DEPTH = 5


def stamp_key(header):
    return header.stamp.sec, header.stamp.nanosec


class RestorationNode(FrameWorkerNode):
    """
    ROS 2 node that restores a camera stream with the AdaQual runtime.

    Args:
        node_name (`str`, *optional*, defaults to `'adaqual_restoration'`): the node name.
        **kwargs: passed to `rclpy.node.Node` (namespace, parameter_overrides, ...).
    """

    def __init__(self, node_name=NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.stats = FrameStats()
        self._restorer_ready = False
        self.params = ParamBinding(self, RESTORATION_PARAMS, rule=self._check_rule,
                                   on_change=self._on_params)
        self._settings = settings_from_params(self.params.values)
        names = parse_cameras(self.params['cameras'])
        # Per-camera rows exist only with `cameras` (a single camera has the node's own).
        self.camera_params = ParamBinding(self, camera_param_specs(names),
                                          on_change=self._on_camera_params)
        self._warn_unknown_cameras()
        self._cameras = [Camera(self, name, self._on_image, _INPUT_DEPTH)
                         for name in names or ['']]
        # A Restorer that cannot start (missing checkpoint without fallback...) is fatal: the
        # error names what failed and main() exits non-zero.
        try:
            self._restorer = Restorer(self._settings)
        except Exception as exc:  # noqa: BLE001 - re-raised with the settings that caused it
            raise RuntimeError(
                f'{exc} (backend={self._settings.backend!r}, '
                f'model_path={self._settings.model_path or "<shipped checkpoint>"!r}, '
                f'quality_backend={self._settings.quality_backend!r}, '
                f'fallback_to_classical={self._settings.fallback_to_classical})') from exc
        self._restorer_ready = True
        self._failed_updates = 0
        self._reported_errors = 0
        self._events_lock = threading.Lock()
        self._runtime_counts = {'oom_retries': 0, 'moved_to_cpu': 0}
        self._announced_note = self._restorer.stats().get('note', '')
        if self._announced_note:
            self.get_logger().warning(self._announced_note)  # e.g. fell back to classical
        self._make_publishers()
        for cam in self._cameras:
            topic = f'{cam.prefix}camera_info'
            self.create_subscription(CameraInfo, topic,
                                     lambda msg, cam=cam: setattr(cam, 'camera_info', msg),
                                     subscriber_qos(self, topic, _INPUT_DEPTH))
        self.create_service(SetBool, '~/enable', self._on_enable)
        self._start_serving('restoration-worker')
        stats = self._restorer.stats()
        for cam in self._cameras:
            self.get_logger().info(
                f'restoring {self._input_topic(cam)} -> {cam.prefix}restored/image_raw with '
                f'backend {self._restorer.backend_name} on {stats.get("device")} '
                f'({stats.get("precision")})')

    # ---- parameters ------------------------------------------------------------------------

    def _check_rule(self, values):
        device = values['device']
        if device.startswith('cuda'):
            import torch

            if not torch.cuda.is_available():
                return f'device {device!r} asked for but CUDA is not available on this machine'
        return None

    def _on_params(self, changed):
        if set(changed) - _NODE_ONLY and self._restorer_ready:
            self._settings = settings_from_params(self.params.values, self._settings)
            try:
                self._restorer.update(self._settings)
            except Exception as exc:  # noqa: BLE001 - a bad update must not kill the node
                self.stats.record_error(f'restorer update failed: {exc}')
                self.get_logger().error(f'could not apply {sorted(changed)}: {exc}')
        if {'output.reliability', 'output.depth', 'publish_visualization',
                'publish_compressed'} & set(changed):
            self._make_publishers()
        if 'input_compressed' in changed and self._cameras[0].input.active:
            self._subscribe_image()
        self.get_logger().info(f'parameters changed: {changed}')

    def _warn_unknown_cameras(self):
        # rclpy drops start-up values of parameters a node never declares: a misspelt camera
        # in `-p camera.NAME.enabled:=false` would otherwise do nothing without a word. The
        # start-up values are only kept in a private attribute (absent: no warning).
        given = getattr(self, '_parameter_overrides', None) or {}
        values = {name: None for name in given if name.startswith('camera.')}
        values['cameras'] = self.params['cameras']
        for problem in unknown_cameras(values):
            self.get_logger().warning(f'{problem}: ignored')

    def _on_camera_params(self, changed):
        self.get_logger().info(f'camera parameters changed: {changed}')

    def _camera_settings(self, cam):
        """(enabled, restorer overrides) of one camera: the node's, changed by its own rows."""
        if not cam.name:
            return self.params['enabled'], None
        values = self.camera_params.values
        enabled = self.params['enabled'] and values[camera_param_name(cam.name, 'enabled')]
        return enabled, camera_overrides(values, cam.name) or None

    def _on_enable(self, request, response):
        result = self.set_parameters([Parameter('enabled', value=bool(request.data))])[0]
        response.success = result.successful
        response.message = ('restoration ' + ('enabled' if request.data else 'disabled')
                            if result.successful else result.reason)
        return response

    # ---- topics ----------------------------------------------------------------------------

    def _make_publishers(self):
        qos = publisher_qos(self.params['output.reliability'], self.params['output.depth'])
        wanted = {'image': (Image, 'restored/image_raw'),
                  'info': (CameraInfo, 'restored/camera_info'),
                  'quality': (Image, 'quality_map'),
                  'prompts': (String, 'prompts')}
        if self.params['publish_visualization']:
            wanted['visualization'] = (Image, 'quality_map/visualization')
        if self.params['publish_compressed']:
            wanted['compressed'] = (CompressedImage, 'restored/image_raw/compressed')
        for cam in self._cameras:
            cam.outputs.rebuild(cam.topics(wanted), qos)

    # ---- callbacks (executor thread: cheap only) -------------------------------------------

    def _on_image(self, msg, cam):
        self.stats.received()
        cam.frames_in += 1
        now = time.monotonic()
        rate = self.params['max_rate_hz']  # per camera: each keeps its own pace
        if rate > 0.0 and now - cam.last_accept < 1.0 / rate:
            self.stats.record_dropped('rate_limit')
            return
        cam.last_accept = now
        if self._mailbox.put((msg, now, cam), key=cam.name) is not None:
            self.stats.record_dropped('stale')

    # ---- worker thread -------------------------------------------------------------------

    def _handle(self, msg, received, cam):
        listeners = cam.outputs.listeners()
        if not any(listeners.values()):
            self.stats.record_dropped('no_subscribers')
            return
        stamp = stamp_key(msg.header)
        if stamp != (0, 0) and stamp == cam.last_stamp:
            self._drop('duplicate_stamp',
                       f'{cam.label()}frame with the same stamp {stamp} as the last one')
            return
        if cam.last_stamp is not None and stamp < cam.last_stamp:
            self.stats.record_event('out_of_order_stamp')
            self._warn('out_of_order',
                       f'{cam.label()}stamp {stamp} is older than the last {cam.last_stamp}')
        try:
            frame, encoding = self._decode(msg)
        except FrameRejected as exc:
            self._drop(exc.reason, f'{cam.label()}{exc}')
            return
        cam.last_stamp = stamp
        size = frame.shape[:2]
        if cam.last_size is not None and size != cam.last_size:
            self.stats.record_event('resolution_changed')
            self.get_logger().info(f'{cam.label()}resolution changed {cam.last_size} -> {size}')
        cam.last_size = size
        info = self._matching_camera_info(cam, msg.header, size)
        enabled, overrides = self._camera_settings(cam)
        if not enabled:
            self._pass_through(cam, msg, frame, encoding, info, 'disabled', listeners)
            return
        try:
            image, result = self._restore(frame, cam.stream_id, stamp, overrides)
        except FrameRejected as exc:
            self.stats.record_error(str(exc))
            self._warn(exc.reason, f'{cam.label()}{exc.reason}: {exc} '
                                   f'(on_error={self.params["on_error"]})')
            if self.params['on_error'] == 'passthrough':
                self._pass_through(cam, msg, frame, encoding, info, exc.reason, listeners)
            else:
                self.stats.record_dropped(exc.reason)
            return
        try:
            out = conversions.rgb_to_image(image, encoding, header=msg.header)
        except ImageCodecError as exc:
            self.stats.record_error(f'cannot encode the restored frame as {encoding}: {exc}')
            self._drop('encode_error', f'cannot encode the restored frame as {encoding}: {exc}')
            return
        if info is not None:
            cam.outputs.publish('info', info)
        self._publish_image(cam, out, listeners)
        self.stats.record_published(
            latency_ms=(time.monotonic() - received) * 1000.0, timings=result.timings,
            cache_hit=result.cache_hit, skipped_fraction=result.skipped_fraction,
            processed_fraction=result.processed_fraction)
        if result.quality_map is not None:
            try:
                self._publish_quality(cam, msg.header, image, result, listeners)
            except Exception as exc:  # noqa: BLE001 - the frame is out; the extras are not vital
                self.stats.record_error(f'quality map/prompts not published: {exc!r}')
                self._warn('quality_publish', f'quality map/prompts not published: {exc!r}')

    def _decode(self, msg):
        """
        Return (frame, encoding): RGB (H, W, 3), RGBA (H, W, 4) or a (H, W) plane, and the
        encoding to publish in.

        Raises FrameRejected with the reason the message cannot be used.
        """
        if isinstance(msg, CompressedImage):
            try:
                frame, tag = conversions.image_to_rgb(msg, keep_alpha=True)
            except ImageCodecError as exc:
                raise FrameRejected('decode_error', str(exc)) from None
            return frame, tag.partition(':')[2]  # raw Image out, in the recorded encoding
        check_image_header(msg)
        try:
            # Alpha rides along as a fourth channel the restorer passes through untouched.
            return conversions.image_to_rgb(msg, keep_alpha=True)
        except ImageCodecError as exc:
            raise FrameRejected('bad_data', str(exc)) from None

    def _matching_camera_info(self, cam, header, size):
        info = cam.camera_info
        if info is None:
            return None
        if (info.height, info.width) != tuple(size) and info.width and info.height:
            self.stats.record_event('camera_info_mismatch')
            self._warn('camera_info', f'{cam.label()}camera_info is {info.width}x{info.height} '
                       f'but the image is {size[1]}x{size[0]}; not republished')
            return None
        out = CameraInfo()
        out.header = header
        for field in ('height', 'width', 'distortion_model', 'd', 'k', 'r', 'p', 'binning_x',
                      'binning_y', 'roi'):
            setattr(out, field, getattr(info, field))
        return out

    def _restore(self, frame, stream_id, stamp=(0, 0), overrides=None):
        height, width = frame.shape[:2]
        if height * width > self.params['max_pixels']:
            raise FrameRejected('too_large', f'{width}x{height} frame exceeds max_pixels '
                                f'{self.params["max_pixels"]}')
        if frame.dtype not in (np.uint8, np.uint16, np.float32):
            raise FrameRejected('unsupported_encoding',
                                f'cannot restore {frame.dtype} samples')
        order = 'mono' if frame.ndim == 2 else 'rgb'
        try:
            # The cache ages maps by the header stamps (bags replayed at any rate reuse maps as
            # the camera did); an unset stamp (0) leaves it on the wall clock.
            result = self._restorer.restore(
                frame, stream_id=stream_id, color_order=order,
                stamp=stamp[0] + stamp[1] * 1e-9 if stamp != (0, 0) else None,
                overrides=overrides)
        except InvalidFrameError as exc:  # e.g. NaN/Inf in a float image
            raise FrameRejected('invalid_frame', f'restorer refused the frame: {exc}') from None
        except Exception as exc:  # noqa: BLE001 - any restorer failure is handled per on_error
            raise FrameRejected('restore_error', f'restoration failed: {exc!r}') from None
        finally:
            self._runtime_events()  # out-of-memory retries happen inside restore()
        image = result.image
        if image.shape != frame.shape or image.dtype != frame.dtype:
            raise FrameRejected('restore_error', f'restorer returned {image.shape} {image.dtype} '
                                f'for a {frame.shape} {frame.dtype} frame')
        return image, result

    def _pass_through(self, cam, msg, frame, encoding, info, reason, listeners):
        if isinstance(msg, CompressedImage):
            out = conversions.rgb_to_image(frame, encoding, header=msg.header)
        else:
            out = msg  # unchanged bytes, header and encoding
        if info is not None:
            cam.outputs.publish('info', info)
        self._publish_image(cam, out, listeners)
        self.stats.record_passed_through(reason)

    def _publish_image(self, cam, out, listeners):
        """
        The outgoing frame (an Image) on restored/image_raw and, while something subscribes to
        it, compressed; ``listeners``: the subscriber counts `_handle` read for this frame.
        """
        cam.outputs.publish('image', out)
        cam.frames_out += 1
        if not listeners.get('compressed'):
            return
        try:
            array = conversions.imgmsg_to_cv2(out)
            compressed = conversions.cv2_to_compressed_imgmsg(
                array, self.params['compressed_format'], header=out.header,
                encoding=out.encoding, quality=self.params['jpeg_quality'])
        except ImageCodecError as exc:
            # the raw frame is out; only its compressed copy is not (counted, logged)
            self.stats.record_event('compress_error')
            self._warn('compress', f'restored/image_raw/compressed not published: {exc}')
            return
        cam.outputs.publish('compressed', compressed)

    def _publish_quality(self, cam, header, image, result, listeners):
        qmap = result.quality_map
        if listeners.get('quality'):
            grid = np.ascontiguousarray(qmap.scores, dtype=np.float32)
            cam.outputs.publish('quality', conversions.cv2_to_imgmsg(grid, '32FC1',
                                                                     header=header))
        if listeners.get('prompts'):
            stamp_ns = header.stamp.sec * 10 ** 9 + header.stamp.nanosec
            cam.outputs.publish('prompts', String(data=json.dumps(
                result.describe(stamp_ns, header.frame_id))))
        if listeners.get('visualization'):
            cam.outputs.publish('visualization', conversions.cv2_to_imgmsg(
                quality_overlay(image, qmap.scores, qmap.cell, max_width=640), 'rgb8',
                header=header))

    # ---- diagnostics -----------------------------------------------------------------------

    def _runtime_events(self):
        """
        Read the runtime's statistics; count its out-of-memory retries and moves to the CPU as
        events (`event.oom_retry`, `event.moved_to_cpu`) and log each new note once.
        """
        try:
            runtime = self._restorer.stats() or {}
        except Exception:  # noqa: BLE001 - diagnostics must not fail because of the runtime
            return {}
        with self._events_lock:
            for key, event in (('oom_retries', 'oom_retry'), ('moved_to_cpu', 'moved_to_cpu')):
                new = runtime.get(key, 0) - self._runtime_counts[key]
                if new > 0:
                    self._runtime_counts[key] += new
                    self.stats.record_event(event, new)
            note = runtime.get('note', '')
            if note and note != self._announced_note:
                self._announced_note = note
                self.get_logger().warning(note)
        return runtime

    def _diagnostic_status(self):
        runtime = self._runtime_events()
        figures = self.stats.snapshot()
        figures.update(enabled=self.params['enabled'], backend=self._settings.backend,
                       device=self._settings.device,
                       input_topic=','.join(self._input_topic(c) for c in self._cameras),
                       parameter_rejections=self.params.rejections
                       + self.camera_params.rejections)
        figures.update(camera_figures(self._cameras))
        if len(self._cameras) > 1:
            for cam in self._cameras:
                enabled, overrides = self._camera_settings(cam)
                figures[f'camera.{cam.name}.enabled'] = enabled
                figures.update({f'camera.{cam.name}.{k}': v for k, v in (overrides or {}).items()})
        failed = runtime.get('failed_updates', 0)
        if failed > self._failed_updates:
            # Background loads (new backend/checkpoint) fail off this thread: say so here.
            self._failed_updates = failed
            self.stats.record_error(runtime.get('last_error', 'restorer update failed'))
            self.get_logger().error(f'restorer kept backend {runtime.get("backend")}: '
                                    f'{runtime.get("last_error")}')
        note = runtime.get('note', '')
        for key, value in runtime.items():
            if isinstance(value, (bool, int, float, str)) or value is None:
                figures[f'runtime.{key}'] = value
        # WARN while errors keep coming or the runtime runs a fallback; OK otherwise.
        new_errors = figures['errors'] - self._reported_errors
        self._reported_errors = figures['errors']
        if new_errors:
            level = DiagnosticStatus.WARN
            message = f'{new_errors} error(s): {figures["last_error"]}'
        elif note:
            level, message = DiagnosticStatus.WARN, note
        else:
            level = DiagnosticStatus.OK
            message = (f'{figures["input_rate_hz"]:.1f} Hz in, {figures["output_rate_hz"]:.1f} Hz '
                       f'out, {runtime.get("backend", self._settings.backend)} backend')
        return build_status(f'{self.get_name()}: restoration', runtime.get('device', 'unknown'),
                            figures, level=level, message=message)

    def destroy_node(self):
        self._stop_worker(timeout=5.0)
        return super().destroy_node()


def main(args=None):
    return run_node(RestorationNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())

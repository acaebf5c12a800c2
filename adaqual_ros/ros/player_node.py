"""
The camera player: a video file, an image folder or a ROS 2 MCAP bag as a live camera.

Topics (relative names):

- out `image_raw` (sensor_msgs/Image, `encoding` rgb8/bgr8) and `camera_info` (same header);
  with synthetic weather (`condition` != clean, `severity`, `seed`, `dim_haze`) the degraded
  frame goes on `image_raw` and, with `publish_clean`, the clean one on `clean/image_raw` with
  the SAME stamp, so detections on both can be paired; `frame_info` (std_msgs/String JSON:
  stamp_ns, index, file name, condition) for label lookup. A last `frame_info` with "end": true
  marks the end of a non-looping source.

Like image_publisher's `publish_rate`, frames are published on a timer; a source that ends
rewinds when `loop` is true. Stamps come from the node clock (sim time works).
"""
import json
import sys

import cv2
from rclpy._rclpy_pybind11 import RCLError
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from adaqual_ros.io.bags import camera_info_dict
from adaqual_ros.ros import conversions
from adaqual_ros.ros.node_parts import run_node
from adaqual_ros.ros.params import PLAYER_PARAMS, ParamBinding
from adaqual_ros.ros.qos import publisher_qos

NODE_NAME = 'adaqual_player'


def open_source(path, bag_topic=''):
    """Iterator of (index, rgb uint8, name) over a video, folder, image or .mcap bag."""
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() == '.mcap' or (path.is_dir() and any(path.glob('*.mcap'))):
        from adaqual_ros.io.bags import read_images

        return ((im.index, im.image, f'{path.name}:{im.index}')
                for im in read_images(path, bag_topic or None))
    from adaqual_ros.io.video import FrameSource

    return ((f.index, f.image, f.name) for f in FrameSource(path))


def _camera_info_msg(height, width, header):
    fields = camera_info_dict(height, width, 0, header.frame_id)
    msg = CameraInfo()
    msg.header = header
    msg.height, msg.width = fields['height'], fields['width']
    msg.distortion_model = fields['distortion_model']
    msg.d, msg.k, msg.r, msg.p = fields['d'], fields['k'], fields['r'], fields['p']
    return msg


class PlayerNode(Node):
    """
    ROS 2 node publishing frames of a file source at a fixed rate, optionally with weather.

    Args:
        node_name (`str`, *optional*, defaults to `'adaqual_player'`): the node name.
        **kwargs: passed to `rclpy.node.Node`.
    """

    def __init__(self, node_name=NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.params = ParamBinding(self, PLAYER_PARAMS, rule=self._check_rule,
                                   on_change=self._on_params)
        self._frames = None
        self._weather = None
        self.published = 0      # frames published since start
        self._pass_count = 0    # frames of the current pass over the source
        self._finished = False
        self._make_publishers()
        self._timer = self.create_timer(1.0 / self.params['publish_rate'], self._tick)
        values = self.params.values
        self.get_logger().info(
            f'playing {values["source"]} at {values["publish_rate"]} Hz, weather '
            f'{values["condition"]} (severity {values["severity"]})')

    def _check_rule(self, values):
        if not values['source']:
            return 'source must name a video file, an image folder or an .mcap bag'
        return None

    def _on_params(self, changed):
        if 'publish_rate' in changed:
            self.destroy_timer(self._timer)
            self._timer = self.create_timer(1.0 / changed['publish_rate'], self._tick)
        if {'condition', 'severity', 'seed', 'dim_haze'} & set(changed):
            self._weather = None
        if {'source', 'bag_topic'} & set(changed):
            # Setting the source (even to the same value) starts a new pass from its beginning.
            self._frames, self._finished, self._pass_count = None, False, 0
        if {'output.reliability', 'output.depth'} & set(changed):
            self._make_publishers()

    def _make_publishers(self):
        qos = publisher_qos(self.params['output.reliability'], self.params['output.depth'])
        for pub in getattr(self, '_pubs', {}).values():
            self.destroy_publisher(pub)
        self._pubs = {'image': self.create_publisher(Image, 'image_raw', qos),
                      'info': self.create_publisher(CameraInfo, 'camera_info', qos),
                      'clean': self.create_publisher(Image, 'clean/image_raw', qos),
                      'frame_info': self.create_publisher(String, 'frame_info', qos)}

    def _next_frame(self):
        if self._frames is None:
            self._frames = open_source(self.params['source'], self.params['bag_topic'])
        item = next(self._frames, None)
        if item is None and self.params['loop'] and self._pass_count:
            self._frames = open_source(self.params['source'], self.params['bag_topic'])
            item = next(self._frames, None)
        return item

    def _degrade(self, rgb, index):
        condition = self.params['condition']
        if condition == 'clean':
            return rgb
        if self._weather is None:
            from adaqual_ros.weather import WeatherStream

            self._weather = WeatherStream(condition, seed=self.params['seed'],
                                          severity=self.params['severity'],
                                          dim_haze=self.params['dim_haze'])
        return self._weather.apply(rgb, frame_index=index).degraded

    def _tick(self):
        try:
            self._publish_next()
        except RCLError:
            if self.context.ok():
                raise
            # Ctrl-C landed between frames: the context is gone, nothing left to publish.

    def _publish_next(self):
        if self._finished:
            return
        limit = self.params['max_frames']
        item = None if limit and self._pass_count >= limit else self._next_frame()
        if item is None:
            self._finished = True
            self._pubs['frame_info'].publish(String(data=json.dumps(
                {'end': True, 'frames': self._pass_count})))
            self.get_logger().info(f'source finished after {self._pass_count} frames')
            return
        index, rgb, name = item
        width = self.params['width']
        if width and width != rgb.shape[1]:
            height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        degraded = self._degrade(rgb, index)
        stamp = self.get_clock().now()
        header = Image().header
        header.stamp = stamp.to_msg()
        header.frame_id = self.params['frame_id']
        encoding = self.params['encoding']
        self._pubs['image'].publish(self._to_msg(degraded, encoding, header))
        self._pubs['info'].publish(_camera_info_msg(rgb.shape[0], rgb.shape[1], header))
        if degraded is not rgb and self.params['publish_clean']:
            self._pubs['clean'].publish(self._to_msg(rgb, encoding, header))
        self._pubs['frame_info'].publish(String(data=json.dumps({
            'stamp_ns': stamp.nanoseconds, 'frame_id': header.frame_id, 'index': int(index),
            'sequence': self.published, 'name': name,
            'condition': self.params['condition'], 'severity': self.params['severity']})))
        self.published += 1
        self._pass_count += 1

    @staticmethod
    def _to_msg(rgb, encoding, header):
        # The one RGB -> BGR place of this path (bgr8 output only).
        image = rgb[:, :, ::-1].copy() if encoding == 'bgr8' else rgb
        return conversions.cv2_to_imgmsg(image, encoding, header=header)


def main(args=None):
    return run_node(PlayerNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())

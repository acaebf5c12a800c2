"""
Frames of a live image topic for the offline tools (`adaqual calibrate --topic` without a
recording, where no `ros2 bag` is installed): one rclpy node in its own context, subscribed
with the publishers' own QoS (`subscriber_qos`), that hands out frames until it has enough.
"""
from collections import deque
import time

IMAGE_TYPES = {'sensor_msgs/msg/Image': 'Image',
               'sensor_msgs/msg/CompressedImage': 'CompressedImage'}


class TopicError(RuntimeError):
    """The topic has no image publisher, or stopped before any frame came."""


def grab_frames(topic, limit, stride=1, timeout_s=10.0):
    """
    Yield ``(image, stamp)`` for the next frames on ``topic``: RGB uint8 (H, W, 3) or a mono
    (H, W) plane as `conversions.image_to_rgb` decodes it, and the header stamp in seconds (None
    when unset).

    Args:
        topic (`str`): an Image or CompressedImage topic (absolute, or relative to the root).
        limit (`int`): stop after this many frames.
        stride (`int`, *optional*): keep every ``stride``-th message.
        timeout_s (`float`, *optional*): wait this long for a publisher, and for each frame; a
            topic that goes quiet after some frames ends the stream early.

    Raises:
        TopicError: no image publisher on ``topic`` within ``timeout_s``, or no frame from it.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs import msg as sensor_msgs

    from adaqual_ros.ros.conversions import image_to_rgb
    from adaqual_ros.ros.qos import subscriber_qos

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('adaqual_frame_grabber', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        kind = _wait_for_type(node, executor, topic, timeout_s)
        pending, seen = deque(maxlen=4), [0]

        def on_message(msg):
            if seen[0] % stride == 0:
                pending.append(msg)
            seen[0] += 1

        node.create_subscription(getattr(sensor_msgs, kind), topic, on_message,
                                 subscriber_qos(node, topic))
        for count in range(limit):
            deadline = time.monotonic() + timeout_s
            while not pending and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            if not pending:
                if count == 0:
                    raise TopicError(f'no frame on {topic} within {timeout_s:g} s')
                return
            msg = pending.popleft()
            image, _ = image_to_rgb(msg)
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            yield image, (stamp or None)
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


def _wait_for_type(node, executor, topic, timeout_s):
    """The message type name ('Image' / 'CompressedImage') of the publishers on ``topic``."""
    name = topic if topic.startswith('/') else '/' + topic
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        types = dict(node.get_topic_names_and_types()).get(name)
        if types:
            known = [IMAGE_TYPES[t] for t in types if t in IMAGE_TYPES]
            if not known:
                raise TopicError(f'{name} carries {types}, not sensor_msgs Image or '
                                 'CompressedImage')
            if node.count_publishers(name):
                return known[0]
        executor.spin_once(timeout_sec=0.1)
    raise TopicError(f'no publisher on {name} within {timeout_s:g} s')

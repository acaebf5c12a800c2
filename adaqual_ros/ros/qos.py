"""
QoS profiles for image topics.

Subscribers adopt the reliability and durability of the publishers already on the topic (what
image_proc's ``getTopicQosProfile`` and camera_calibration's ``get_topic_qos`` do), so a node
matches any camera driver. With no publisher yet, they fall back to sensor-data QoS (REP-2003):
best effort + volatile, which matches reliable and best-effort publishers alike. Publishers take
their reliability from a node parameter.
"""
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

RELIABILITY_CHOICES = ('reliable', 'best_effort')
DURABILITY_CHOICES = ('volatile', 'transient_local')

_RELIABILITY = {
    'reliable': ReliabilityPolicy.RELIABLE,
    'best_effort': ReliabilityPolicy.BEST_EFFORT,
}
_DURABILITY = {
    'volatile': DurabilityPolicy.VOLATILE,
    'transient_local': DurabilityPolicy.TRANSIENT_LOCAL,
}


def _check_depth(depth):
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f'QoS depth must be an integer >= 1, got {depth!r}')
    return depth


def sensor_data_qos(depth=5):
    """Best effort, volatile, keep last `depth`: matches every publisher's reliability."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=_check_depth(depth),
                      reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def publisher_qos(reliability='reliable', depth=5, durability='volatile'):
    """
    Build the QoS profile of an output topic from node parameters.

    Args:
        reliability (`str`, *optional*, defaults to `'reliable'`):
            `'reliable'` or `'best_effort'`. Reliable is the safe default for large images: the
            Fast DDS wheels drop fragmented best-effort samples under load.
        depth (`int`, *optional*, defaults to 5):
            History depth (keep last), >= 1.
        durability (`str`, *optional*, defaults to `'volatile'`):
            `'volatile'` or `'transient_local'`.

    Returns:
        `rclpy.qos.QoSProfile`
    """
    if reliability not in _RELIABILITY:
        raise ValueError(f'unknown reliability {reliability!r}; valid: {RELIABILITY_CHOICES}')
    if durability not in _DURABILITY:
        raise ValueError(f'unknown durability {durability!r}; valid: {DURABILITY_CHOICES}')
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=_check_depth(depth),
                      reliability=_RELIABILITY[reliability], durability=_DURABILITY[durability])


def subscriber_qos(node, topic, depth=5):
    """
    Build a subscription QoS for `topic` that matches every publisher currently on it.

    Reliable only when all publishers are reliable (a reliable reader never matches a best-effort
    writer); transient-local only when all publishers are. History is keep-last `depth`, as for
    sensor data. With no publisher, returns `sensor_data_qos(depth)`.

    Args:
        node (`rclpy.node.Node`):
            The node that will subscribe (its namespace and remappings resolve `topic`).
        topic (`str`):
            Topic name, relative or absolute, as passed to `create_subscription`.
        depth (`int`, *optional*, defaults to 5):
            History depth (keep last), >= 1.

    Returns:
        `rclpy.qos.QoSProfile`
    """
    _check_depth(depth)
    infos = node.get_publishers_info_by_topic(topic)
    if not infos:
        return sensor_data_qos(depth)
    profiles = [info.qos_profile for info in infos]
    reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
    latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def qos_key(profile):
    """Return (reliability, durability, depth) names: compare to decide whether to resubscribe."""
    return (_name(profile.reliability), _name(profile.durability), profile.depth)


def describe_qos(profile):
    """Return a short readable description, e.g. 'reliable/volatile/depth=5', for logs."""
    reliability, durability, depth = qos_key(profile)
    return f'{reliability}/{durability}/depth={depth}'


def _name(policy):
    return getattr(policy, 'name', str(policy)).lower()

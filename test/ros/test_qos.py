"""QoS helpers against real publishers: the subscriber adopts what it finds and still receives."""
import time

import pytest

pytest.importorskip('rclpy')

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from adaqual_ros.ros import qos  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def ros(ros_env):
    """A private rclpy context with one executor; everything is torn down after the test."""
    import rclpy
    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes = []

    def make_node(name):
        node = rclpy.create_node(name, context=context)
        executor.add_node(node)
        nodes.append(node)
        return node

    yield make_node, executor
    executor.shutdown()
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


def _spin_until(executor, predicate, timeout=8.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def _wait_publishers(executor, node, topic, count):
    ok = _spin_until(executor, lambda: len(node.get_publishers_info_by_topic(topic)) >= count)
    assert ok, f'{count} publisher(s) on {topic} not discovered'


def _receives(executor, pub_node, pub, sub_node, topic, profile):
    got = []
    sub = sub_node.create_subscription(String, topic, lambda m: got.append(m.data), profile)
    # Publish repeatedly until matched and delivered: discovery takes a moment.
    msg = String(data='hello')
    ok = _spin_until(executor, lambda: got or pub.publish(msg))
    sub_node.destroy_subscription(sub)
    return ok and got[0] == 'hello'


def test_no_publisher_gives_sensor_data_best_effort(ros):
    make_node, _ = ros
    profile = qos.subscriber_qos(make_node('lonely'), '/qos_test/nobody', depth=3)
    assert profile.reliability == ReliabilityPolicy.BEST_EFFORT
    assert profile.durability == DurabilityPolicy.VOLATILE
    assert profile.depth == 3


@pytest.mark.parametrize('reliability', ['reliable', 'best_effort'])
def test_subscriber_adopts_publisher_reliability_and_receives(ros, reliability):
    make_node, executor = ros
    topic = f'/qos_test/{reliability}'
    pub_node, sub_node = make_node('pub'), make_node('sub')
    pub = pub_node.create_publisher(String, topic, qos.publisher_qos(reliability, depth=2))
    _wait_publishers(executor, sub_node, topic, 1)
    profile = qos.subscriber_qos(sub_node, topic)
    assert qos.qos_key(profile)[0] == reliability
    assert _receives(executor, pub_node, pub, sub_node, topic, profile)


def test_mixed_publishers_fall_back_to_best_effort(ros):
    make_node, executor = ros
    topic = '/qos_test/mixed'
    a, b, sub_node = make_node('pub_a'), make_node('pub_b'), make_node('sub')
    a.create_publisher(String, topic, qos.publisher_qos('reliable', 5))
    pub_b = b.create_publisher(String, topic, qos.publisher_qos('best_effort', 5))
    _wait_publishers(executor, sub_node, topic, 2)
    profile = qos.subscriber_qos(sub_node, topic)
    assert profile.reliability == ReliabilityPolicy.BEST_EFFORT
    assert _receives(executor, b, pub_b, sub_node, topic, profile)


def test_transient_local_publisher_is_adopted_and_latched_message_arrives(ros):
    make_node, executor = ros
    topic = '/qos_test/latched'
    pub_node, sub_node = make_node('pub'), make_node('sub')
    pub = pub_node.create_publisher(
        String, topic, qos.publisher_qos('reliable', 1, durability='transient_local'))
    pub.publish(String(data='latched'))
    _wait_publishers(executor, sub_node, topic, 1)
    profile = qos.subscriber_qos(sub_node, topic)
    assert qos.describe_qos(profile) == 'reliable/transient_local/depth=5'
    got = []
    sub_node.create_subscription(String, topic, lambda m: got.append(m.data), profile)
    assert _spin_until(executor, lambda: got)
    assert got == ['latched']


@pytest.mark.parametrize('kwargs, match', [
    ({'reliability': 'sometimes'}, 'reliability'),
    ({'durability': 'forever'}, 'durability'),
    ({'depth': 0}, 'depth'),
    ({'depth': 2.5}, 'depth'),
])
def test_publisher_qos_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        qos.publisher_qos(**kwargs)

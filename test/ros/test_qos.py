"""QoS profiles and the `auto` input reliability: pure decisions, and publisher discovery over DDS."""
import pytest
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from usp_ros.support.qos import (choose_input_reliability, input_qos, output_qos, publisher_reliabilities,
                         reliability_from_name, reliability_from_publishers, reliability_name)

RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT


def test_names_round_trip_and_unknown_names_are_refused():
    for name in ("reliable", "best_effort"):
        assert reliability_name(reliability_from_name(name)) == name
    with pytest.raises(ValueError, match="best_effort"):
        reliability_from_name("besteffort")


def test_profiles():
    profile = input_qos(BEST_EFFORT)
    assert (profile.reliability, profile.history, profile.depth) == (BEST_EFFORT, HistoryPolicy.KEEP_LAST, 1)
    assert profile.durability == DurabilityPolicy.VOLATILE
    assert output_qos().reliability == RELIABLE and output_qos().depth == 10


@pytest.mark.parametrize("publishers, expected", [
    ([], None),
    ([RELIABLE], RELIABLE),
    ([RELIABLE, RELIABLE], RELIABLE),
    ([BEST_EFFORT], BEST_EFFORT),
    ([RELIABLE, BEST_EFFORT], BEST_EFFORT),
])
def test_reliability_that_hears_every_publisher(publishers, expected):
    assert reliability_from_publishers(publishers) == expected


@pytest.mark.parametrize("setting, publishers, expected", [
    ("auto", [], (BEST_EFFORT, False)),
    ("auto", [RELIABLE], (RELIABLE, True)),
    ("auto", [BEST_EFFORT, RELIABLE], (BEST_EFFORT, True)),
    ("reliable", [BEST_EFFORT], (RELIABLE, True)),
    ("best_effort", [RELIABLE], (BEST_EFFORT, True)),
    ("best_effort", [], (BEST_EFFORT, True)),
])
def test_choose_input_reliability(setting, publishers, expected):
    assert choose_input_reliability(setting, publishers) == expected


def test_choose_input_reliability_refuses_unknown_settings():
    with pytest.raises(ValueError, match="auto"):
        choose_input_reliability("fast", [])


def test_publisher_reliabilities_are_discovered(ros_node, wait):
    assert publisher_reliabilities(ros_node, "qos_probe") == []
    ros_node.create_publisher(Image, "qos_probe", QoSProfile(depth=1, reliability=RELIABLE))
    assert wait(lambda: publisher_reliabilities(ros_node, "qos_probe") == [RELIABLE], timeout=5)
    ros_node.create_publisher(Image, "/qos_probe", QoSProfile(depth=1, reliability=BEST_EFFORT))
    assert wait(lambda: sorted(publisher_reliabilities(ros_node, "qos_probe")) == sorted([RELIABLE, BEST_EFFORT]),
                timeout=5)
    assert reliability_from_publishers(publisher_reliabilities(ros_node, "qos_probe")) == BEST_EFFORT

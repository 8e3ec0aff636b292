"""Each usp_ros message type published by another process arrives here over DDS, field for field."""
import importlib.util

import numpy as np
import pytest

from usp_ros.bridge.messages import msg_to_features

from .conftest import TEST_DIR


def load_publisher_module():
    spec = importlib.util.spec_from_file_location("publish_samples", TEST_DIR / "publish_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fields(message) -> dict:
    """Field name -> value, recursing into nested messages and turning arrays into lists."""
    out = {}
    for name in message.get_fields_and_field_types():
        value = getattr(message, name)
        if hasattr(value, "get_fields_and_field_types"):
            out[name] = fields(value)
        elif hasattr(value, "__len__") and not isinstance(value, str):
            out[name] = list(value)
        else:
            out[name] = value
    return out


@pytest.mark.parametrize("topic", ["keypoints", "descriptors", "features", "frame_match"])
def test_message_arrives_field_for_field(topic, ros_node, spawn, wait):
    publisher = load_publisher_module()
    expected = publisher.build_samples()[topic]
    received = []
    ros_node.create_subscription(publisher.TOPICS[topic], topic, received.append, 10)
    child = spawn(str(TEST_DIR / "publish_samples.py"), name="publisher")
    assert wait(lambda: received or child.poll() is not None), "no message received over DDS"
    assert child.poll() is None, "publisher process died"
    assert fields(received[0]) == fields(expected)
    assert received[0] == expected


def test_features_arrays_survive_the_trip(ros_node, spawn, wait):
    publisher = load_publisher_module()
    received = []
    ros_node.create_subscription(publisher.TOPICS["features"], "features", received.append, 10)
    spawn(str(TEST_DIR / "publish_samples.py"), name="publisher")
    assert wait(lambda: received)
    sent = msg_to_features(publisher.build_samples()["features"])
    got = msg_to_features(received[0])
    for name in ("keypoints", "scores", "descriptors"):
        np.testing.assert_array_equal(getattr(got, name), getattr(sent, name))
    assert got.descriptors.shape == (300, 256) and got.image_size == sent.image_size == (640, 480)

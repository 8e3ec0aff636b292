"""Each usp_ros message type published by another process arrives here over DDS, field for field."""
import importlib.util

import numpy as np
import pytest

from usp_core.geometry.two_view import rotation_angle_deg
from usp_ros.bridge.messages import camera_from_info, motion_transform, msg_to_features, rotation_from_msg

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


@pytest.mark.parametrize("topic", ["keypoints", "descriptors", "features", "frame_match", "frame_match_pose",
                                   "camera_info"])
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


def test_camera_info_and_pose_survive_the_trip(ros_node, spawn, wait):
    """CameraInfo from another process becomes the same camera model; a FrameMatch's pose the same rotation."""
    publisher = load_publisher_module()
    infos, matches = [], []
    ros_node.create_subscription(publisher.TOPICS["camera_info"], "camera_info", infos.append, 10)
    ros_node.create_subscription(publisher.TOPICS["frame_match_pose"], "frame_match_pose", matches.append, 10)
    spawn(str(TEST_DIR / "publish_samples.py"), name="publisher")
    assert wait(lambda: infos and matches)
    camera = camera_from_info(infos[0])
    assert camera.model == "equidistant" and (camera.width, camera.height) == (752, 480)
    np.testing.assert_allclose(camera.matrix[:2, 2], [367.2, 248.4])
    pixels = np.array([[10.0, 20.0], [700.0, 400.0]])
    assert np.abs(camera.to_pixels(camera.undistort(pixels)) - pixels).max() > 1.0  # the fisheye's distortion applies
    sent = publisher.build_samples()["frame_match_pose"]
    got = matches[0]
    assert got.has_pose and got.model == "essential"
    assert rotation_angle_deg(rotation_from_msg(got), rotation_from_msg(sent)) < 1e-6
    inliers = np.array(got.match_inliers)
    np.testing.assert_array_equal(np.array(got.match_reference_indices)[inliers], got.reference_indices)
    motion = motion_transform(got)  # the current camera in the reference frame: its centre is -R^T t
    rotation = rotation_from_msg(got)
    t = np.array([got.translation_direction.x, got.translation_direction.y, got.translation_direction.z])
    centre = np.array([motion.transform.translation.x, motion.transform.translation.y, motion.transform.translation.z])
    np.testing.assert_allclose(centre, -rotation.T @ t, atol=1e-9)

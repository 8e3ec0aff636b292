"""Child process for test_messages_over_dds: publishes one sample of each usp_ros message, repeatedly.

Run as a script (not imported by pytest); `build_samples()` is also loaded by the test to know
what to expect.
"""
import numpy as np
from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from usp_core.geometry.match_result import MatchResult
from usp_core.inference.features import Features
from usp_ros import msg
from usp_ros.bridge.messages import features_to_msg, frame_match_to_msg

TOPICS = {"keypoints": msg.Keypoints, "descriptors": msg.Descriptors, "features": msg.Features,
          "frame_match": msg.FrameMatch}


def build_samples() -> dict:
    """One deterministic, fully populated message per type, keyed by topic."""
    rng = np.random.default_rng(7)
    header = Header(stamp=Time(sec=1700000000, nanosec=123456789), frame_id="camera_optical")
    features = features_to_msg(header, Features(
        rng.random((300, 2), dtype=np.float32) * 400, rng.random(300, dtype=np.float32),
        rng.standard_normal((300, 256)).astype(np.float32), (640, 480)))
    homography = np.array([[1.01, 0.02, 3.5], [-0.01, 0.99, -2.25], [1e-5, -2e-5, 1.0]])
    points = rng.random((40, 2), dtype=np.float32) * 300
    frame_match = frame_match_to_msg(header, MatchResult(
        reference_stamp=Time(sec=1699999999, nanosec=900000000), homography=homography, num_matches=57,
        reference_indices=np.arange(40), current_indices=np.arange(40)[::-1], reference_points=points,
        current_points=points + 1.5, current_track_ids=np.arange(1, 301, dtype=np.uint64)))
    return {"keypoints": features.keypoints, "descriptors": features.descriptors,
            "features": features, "frame_match": frame_match}


def main() -> None:
    import rclpy

    rclpy.init()
    node = rclpy.create_node("sample_publisher")
    samples = build_samples()
    publishers = {topic: node.create_publisher(TOPICS[topic], topic, 10) for topic in samples}

    def publish_all():
        for topic, message in samples.items():
            publishers[topic].publish(message)

    node.create_timer(0.1, publish_all)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()

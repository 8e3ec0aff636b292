"""Child process for test_messages_over_dds: publishes one sample of each usp_ros message, repeatedly.

Run as a script (not imported by pytest); `build_samples()` is also loaded by the test to know
what to expect.
"""
import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from usp_core.geometry.match_result import MatchResult
from usp_core.inference.features import Features
from usp_ros import msg
from usp_ros.bridge.messages import features_to_msg, frame_match_to_msg

TOPICS = {"keypoints": msg.Keypoints, "descriptors": msg.Descriptors, "features": msg.Features,
          "frame_match": msg.FrameMatch, "frame_match_pose": msg.FrameMatch, "camera_info": CameraInfo}


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
    rotation = cv2.Rodrigues(np.array([0.02, -0.05, 0.01]))[0]
    translation = np.array([0.6, -0.1, 0.25]) / np.linalg.norm([0.6, -0.1, 0.25])
    pairs = np.stack([np.arange(60), rng.permutation(300)[:60]], axis=1)
    inliers = rng.random(60) < 0.7
    frame_match_pose = frame_match_to_msg(header, MatchResult(
        reference_stamp=Time(sec=1699999999, nanosec=900000000), homography=None, num_matches=60,
        reference_indices=pairs[inliers, 0], current_indices=pairs[inliers, 1], reference_points=points[:inliers.sum()],
        current_points=points[:inliers.sum()] + 1.5, current_track_ids=np.arange(1, 301, dtype=np.uint64),
        model="essential", matrix=rng.standard_normal((3, 3)), rotation=rotation, translation=translation,
        match_pairs=pairs, match_inliers=inliers))
    camera_info = CameraInfo(header=header, width=752, height=480, distortion_model="equidistant",
                             d=[0.1, -0.2, 0.01, 0.0], k=[458.6, 0.0, 367.2, 0.0, 457.3, 248.4, 0.0, 0.0, 1.0])
    return {"keypoints": features.keypoints, "descriptors": features.descriptors,
            "features": features, "frame_match": frame_match, "frame_match_pose": frame_match_pose,
            "camera_info": camera_info}


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

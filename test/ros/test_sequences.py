"""Real camera sequences (TUM RGB-D fr2, KITTI odometry) through detector -> matcher over DDS: homographies, and
with CameraInfo and model essential the relative rotations, pair for pair as usp-eval-pose computes them.

After warm-up frames that show the whole path is connected, the test publishes each sequence's 20
frames in order on `image` (each after the previous frame's result arrived, so no frame is dropped),
the detector node turns them into Features and the matcher node into FrameMatch messages. Every
FrameMatch must pair a frame with the one published just before it, and most pairs must give a valid
homography. The inlier counts are recorded (``user_properties``, shown with ``pytest -rA``). Needs
../shared/data and the trained bundled weights: a random-initialised network gives no meaningful
matches on real images, so without the weights the test is skipped rather than asserting a bad result.
"""
import cv2
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from usp_core.evaluation.methods import build_method
from usp_core.evaluation.pose import FrameFeatures, load_pose_sequence
from usp_core.geometry.tracking import MatchConfig, match_frames
from usp_core.geometry.two_view import rotation_angle_deg
from usp_core.inference.detector import KeypointDetector
from usp_core.inference.weights import BUNDLED_WEIGHTS
from usp_ros.bridge.images import numpy_to_image
from usp_ros.bridge.messages import rotation_from_msg
from usp_ros.msg import Features, FrameMatch
from usp_ros.support.qos import input_qos, output_qos

FRAMES = 20
FIRST_SECOND = 100  # the sequence's stamps are FIRST_SECOND + index; the warm-up frames' are below


def connect(images, image, matches, wait, attempts: int = 10) -> None:
    """Publish `image` (stamps 1, 2, ...) until the matcher answers with a FrameMatch.

    Each pair of nodes discovers the other on its own: a Features message the detector sends before it
    has matched the matcher's subscription is lost (volatile QoS), so only an answer shows that the
    whole path image -> detector -> matcher -> test is connected.
    """
    for second in range(1, attempts + 1):
        images.publish(numpy_to_image(image, header=Header(stamp=Time(sec=second), frame_id="warm-up")))
        if wait(lambda: matches, 5):
            return
    raise AssertionError(f"no FrameMatch after {attempts} warm-up frames: detector -> matcher not connected")


def answered(features, matches, index: int) -> bool:
    """The sequence's frame `index` has its result: Features for the first frame, a FrameMatch for the others."""
    if index == 0:
        return any(stamp.sec == FIRST_SECOND for stamp in features)
    return any(m.header.stamp.sec == FIRST_SECOND + index for m in matches)


def detector_listens_reliably(node) -> bool:
    """The detector has matched our reliable image publisher (its `auto` QoS re-subscribes once it sees it)."""
    return any(info.node_name == "detector" and info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
               for info in node.get_subscriptions_info_by_topic("/image"))


@pytest.mark.skipif(not BUNDLED_WEIGHTS.is_file(), reason=f"no trained weights at {BUNDLED_WEIGHTS}: real-sequence "
                    "matching is judged only with the bundled detector")
@pytest.mark.parametrize("sequence", ["tum_fr2", "kitti_odometry"])
def test_consecutive_frames_match(sequence, shared_data, ros_node, spawn, wait, record_property):
    files = sorted((shared_data / "sequences" / sequence).glob("*.png"))[:FRAMES]
    features, matches = [], []
    images = ros_node.create_publisher(type(numpy_to_image(cv2.imread(str(files[0])))), "image", output_qos(depth=1))
    ros_node.create_subscription(Features, "features", lambda msg: features.append(msg.header.stamp),
                                 input_qos(ReliabilityPolicy.RELIABLE, depth=FRAMES))
    ros_node.create_subscription(FrameMatch, "matches", matches.append, output_qos(depth=FRAMES))
    spawn("-m", "usp_ros.nodes.matcher", "--ros-args", "-p", "device:=cpu", name="matcher")
    KeypointDetector.from_pretrained(None).prepare()  # exports the default backend's graph (once) off the start clock
    detector = spawn("-m", "usp_ros.nodes.detector", "--ros-args", "-p", "device:=cpu", name="detector")
    assert wait(lambda: (detector_listens_reliably(ros_node) and ros_node.count_subscribers("features") >= 2
                         and ros_node.count_publishers("matches") >= 1)
                or detector.poll() is not None, 60), "detector/matcher did not start"
    connect(images, cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED), matches, wait)
    for index, path in enumerate(files):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        images.publish(numpy_to_image(image, header=Header(stamp=Time(sec=FIRST_SECOND + index), frame_id=sequence)))
        assert wait(lambda: answered(features, matches, index), 30), f"no result for frame {index} ({path.name})"
    matches = [m for m in matches if m.header.stamp.sec > FIRST_SECOND]  # the first frame's match is to a warm-up one
    for index, match in enumerate(matches, start=1):
        assert (match.header.stamp.sec, match.reference_stamp.sec) == (FIRST_SECOND + index, FIRST_SECOND + index - 1)
    inliers = [m.num_inliers for m in matches]
    record_property("inliers", inliers)
    record_property("valid", f"{sum(m.valid for m in matches)}/{len(matches)}")
    assert sum(m.valid for m in matches) >= 0.8 * len(matches), f"inliers per pair: {inliers}"


def camera_info(camera, header) -> CameraInfo:
    """A CameraInfo of a usp_core CameraModel (K, D, size, model), as a camera driver publishes it."""
    return CameraInfo(header=header, width=camera.width, height=camera.height, distortion_model=camera.model,
                      d=camera.distortion.tolist(), k=camera.matrix.ravel().tolist())


@pytest.mark.skipif(not BUNDLED_WEIGHTS.is_file(), reason=f"no trained weights at {BUNDLED_WEIGHTS}")
@pytest.mark.parametrize("sequence", ["tum_fr2", "kitti_odometry"])
def test_essential_rotations_agree_with_usp_eval_pose(sequence, shared_data, ros_node, spawn, wait, record_property):
    """The issue's check: frames played as Image + CameraInfo through detector -> matcher (model essential, 1 px)
    give, pair for pair, the rotations usp-eval-pose computes in-process with the bundled default (usp), and a
    TransformStamped per pair. Images go as mono8, read as usp-eval-pose reads them, so both see the same pixels."""
    folder = shared_data / "sequences" / sequence
    reference = load_pose_sequence(folder)
    files = reference.frames[:FRAMES]
    features, matches, motions = [], [], []
    grey = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in files]
    images = ros_node.create_publisher(type(numpy_to_image(grey[0])), "image", output_qos(depth=1))
    infos = ros_node.create_publisher(CameraInfo, "camera_info", output_qos(depth=5))
    ros_node.create_subscription(FrameMatch, "matches", matches.append, output_qos(depth=FRAMES))
    ros_node.create_subscription(TransformStamped, "matches/motion", motions.append, output_qos(depth=FRAMES))
    ros_node.create_subscription(Features, "features", lambda msg: features.append(msg.header.stamp),
                                 input_qos(ReliabilityPolicy.RELIABLE, depth=FRAMES))
    spawn("-m", "usp_ros.nodes.matcher", "--ros-args", "-p", "device:=cpu", "-p", "model:=essential",
          "-p", "reprojection_threshold:=1.0", name="matcher")
    KeypointDetector.from_pretrained(None).prepare()
    detector = spawn("-m", "usp_ros.nodes.detector", "--ros-args", "-p", "device:=cpu", name="detector")
    assert wait(lambda: (detector_listens_reliably(ros_node) and ros_node.count_subscribers("camera_info") >= 1
                         and ros_node.count_publishers("matches") >= 1) or detector.poll() is not None, 60)
    for second in range(1, 11):  # warm-up as connect(), each image after its CameraInfo (essential skips frames without)
        warm_up = Header(stamp=Time(sec=second), frame_id="warm-up")
        infos.publish(camera_info(reference.camera, warm_up))
        images.publish(numpy_to_image(grey[0], "mono8", warm_up))
        if wait(lambda: matches, 5):
            break
    assert matches, "no FrameMatch after 10 warm-up frames: camera_info/image -> detector -> matcher not connected"
    for index, image in enumerate(grey):
        header = Header(stamp=Time(sec=FIRST_SECOND + index), frame_id=sequence)
        infos.publish(camera_info(reference.camera, header))  # before the image, as a driver publishes them
        images.publish(numpy_to_image(image, "mono8", header))
        assert wait(lambda: answered(features, matches, index), 30), f"no result for frame {index}"
    matches = [m for m in matches if m.header.stamp.sec > FIRST_SECOND]
    config = MatchConfig(reprojection_threshold=1.0, model="essential")
    frames = FrameFeatures(build_method("usp", 1000), reference)
    differences = []
    for match in matches:
        j = match.header.stamp.sec - FIRST_SECOND
        offline = match_frames(frames.get(j - 1), frames.get(j), config)
        assert match.model == "essential" and match.has_pose == (offline.rotation is not None)
        if match.has_pose:
            differences.append(rotation_angle_deg(rotation_from_msg(match), offline.rotation))
            assert abs(match.num_inliers - offline.num_inliers) <= 0.05 * offline.num_inliers
    record_property("rotation differences (deg)", [round(d, 4) for d in differences])
    assert len(differences) >= 0.9 * (len(files) - 1)
    assert max(differences) < 0.05, differences
    assert {m.header.stamp.sec for m in motions} >= {m.header.stamp.sec for m in matches if m.has_pose}

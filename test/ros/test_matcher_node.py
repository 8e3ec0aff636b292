"""The matcher node as its own process over DDS, fed Features whose correspondences are known.

The Features come from usp_core.synthetic.sequence: each frame keeps a share of the
previous frame's keypoints moved by a known homography, with noisy descriptors. So the test checks
the node (topics, headers, stamps, counts, homography accuracy, keyframes, bad input, debug image,
parameters) independently of how good a learned detector is. Parameter changes reaching the tracker under
the worker's lock are checked in-process.
"""
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter as NodeParameter
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud
from std_msgs.msg import Header

from usp_core.evaluation.metrics import corner_error
from usp_core.geometry.two_view import direction_angle_deg, rotation_angle_deg
from usp_core.inference.features import Features as NumpyFeatures
from usp_core.support.drawing import CAPTION_HEIGHT, MAX_TRACKS
from usp_core.synthetic.sequence import SyntheticFrame, synthetic_sequence
from usp_ros.bridge.images import image_to_numpy, numpy_to_image
from usp_ros.bridge.messages import features_to_msg, homography_from_msg, rotation_from_msg
from usp_ros.msg import Features, FrameMatch, Tracks
from usp_ros.nodes.matcher import MatcherNode
from usp_ros.support.diagnostics import PUBLISHED
from usp_ros.support.qos import output_qos

from .conftest import service_answer

CONFIG = Path(__file__).resolve().parents[2] / "config" / "matcher.yaml"
SIZE = (640, 480)


def header(index: int) -> Header:
    return Header(stamp=Time(sec=1000 + index, nanosec=5000 * index), frame_id="camera_optical")


def features(frame, index: int) -> Features:
    return features_to_msg(header(index), frame.features(SIZE))


def start_matcher(spawn, *parameters: str):
    args = ["-m", "usp_ros.nodes.matcher", "--ros-args", "--params-file", str(CONFIG)]
    for parameter in parameters:
        args += ["-p", parameter]
    return spawn(*args, name="matcher")


class Link:
    """The test's side of the matcher: a Features publisher and what arrives on `matches`."""

    def __init__(self, node, wait, matcher):
        self.node, self.wait, self.matcher = node, wait, matcher
        self.matches: list[FrameMatch] = []
        self.tracked: list[Tracks] = []  # the matcher publishes Tracks for every frame it tracks, references included
        self.publisher = node.create_publisher(Features, "features", output_qos())
        matches = node.create_subscription(FrameMatch, "matches", self.matches.append, output_qos())
        tracks = node.create_subscription(Tracks, "tracks", self.tracked.append, output_qos())
        # Every direction matched before the first message: a message published before our subscription has
        # matched the matcher's publisher would be lost (volatile durability).
        assert wait(lambda: (self.publisher.get_subscription_count() > 0 and matches.get_publisher_count() > 0
                             and tracks.get_publisher_count() > 0) or matcher.poll() is not None, 30)
        assert matcher.poll() is None, "matcher process died at start"

    def send(self, msg: Features, expect_match: bool = True) -> FrameMatch | None:
        """Publish one Features message and wait until the matcher has taken it: with ``expect_match`` for its
        FrameMatch (returned), else for its Tracks (a reference frame). The matcher's queue keeps one frame and drops
        the older, so the next message may only go once this one has been taken (under load 0.3 s was too short)."""
        count = len(self.matches)
        self.publisher.publish(msg)
        if not expect_match:
            assert self.wait(lambda: any(t.header.stamp == msg.header.stamp for t in self.tracked), 20), \
                "the matcher did not track the published Features"
            return None
        assert self.wait(lambda: len(self.matches) > count, 20), "no FrameMatch for the published Features"
        return self.matches[-1]

    def skip(self, msg: Features) -> None:
        """Publish a Features message the matcher skips (malformed, or no camera model yet): nothing to wait
        for, so give its worker time to take it before the next message."""
        self.publisher.publish(msg)
        self.wait(lambda: False, 1.0)


def check_inliers(match: FrameMatch, reference, current):
    """Indices and coordinates of the inliers agree with the published keypoints; one track id per current row."""
    ref_idx, cur_idx = np.array(match.reference_indices), np.array(match.current_indices)
    assert len(ref_idx) == len(cur_idx) == match.num_inliers <= match.num_matches
    np.testing.assert_allclose(np.c_[match.reference_x, match.reference_y], reference.keypoints[ref_idx])
    np.testing.assert_allclose(np.c_[match.current_x, match.current_y], current.keypoints[cur_idx])
    assert len(match.current_track_ids) == len(current.keypoints)


def test_homographies_of_known_motion_invalid_and_malformed_frames(ros_node, spawn, wait):
    sequence = synthetic_sequence(5, keypoints=1000, dim=256, size=SIZE, seed=1)
    link = Link(ros_node, wait, start_matcher(spawn))
    diagnostics = []
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    link.send(features(sequence[0], 0), expect_match=False)
    previous_ids = None
    for index in range(1, len(sequence)):
        match = link.send(features(sequence[index], index))
        assert match.header == header(index)
        assert match.reference_stamp == header(index - 1).stamp
        assert match.valid and match.num_inliers > 500
        assert corner_error(homography_from_msg(match), sequence[index].homography, SIZE[::-1]) < 1.0
        check_inliers(match, sequence[index - 1], sequence[index])
        ids = np.array(match.current_track_ids)
        assert len(set(ids.tolist())) == len(ids) and 0 not in ids
        if previous_ids is not None:  # inliers continue the previous frame's tracks, the other rows start new ones
            np.testing.assert_array_equal(ids[match.current_indices], previous_ids[match.reference_indices])
            fresh = np.delete(ids, match.current_indices)
            assert fresh.min() > previous_ids.max()
        previous_ids = ids

    unrelated = synthetic_sequence(1, keypoints=1000, dim=256, size=SIZE, seed=2)[0]
    match = link.send(features(unrelated, 10))
    assert not match.valid and match.num_matches > 0 and match.num_inliers < 15
    np.testing.assert_array_equal(homography_from_msg(match), np.eye(3))

    for bad in range(3):
        malformed = features(sequence[0], 20 + bad)
        malformed.keypoints.y = malformed.keypoints.y[:-1]
        link.skip(malformed)
    match = link.send(features(unrelated, 30))  # still serving: matches the last good frame (10), same points
    assert match.reference_stamp == header(10).stamp and match.valid and match.num_inliers == 1000

    assert wait(lambda: matcher_diagnostics(diagnostics).get("bad frames") == "3", 5), \
        "diagnostics do not report the 3 malformed frames"


def matcher_diagnostics(diagnostics: list[DiagnosticArray]) -> dict[str, str]:
    """The values of the matcher's last diagnostics status ({} before the first)."""
    values = [{kv.key: kv.value for kv in status.values} for array in diagnostics for status in array.status
              if status.name == "/matcher: matcher"]
    return values[-1] if values else {}


@pytest.mark.parametrize("case", ["all descriptors NaN", "half the rows NaN or inf"])
def test_non_finite_rows_are_dropped_and_a_bad_frame_never_becomes_the_reference(ros_node, spawn, wait, case):
    good = synthetic_sequence(1, keypoints=1000, dim=256, size=SIZE, seed=6)[0]
    poisoned = SyntheticFrame(good.keypoints.copy(), good.scores, good.descriptors.copy(), None)
    if case == "all descriptors NaN":
        poisoned.descriptors[:] = np.nan
    else:
        poisoned.descriptors[:250] = np.nan
        poisoned.keypoints[250:500, 0] = np.inf
    order = np.random.default_rng(0).permutation(1000)
    shifted = SyntheticFrame(good.keypoints[order] + np.float32([5.0, 0.0]), good.scores[order],
                             good.descriptors[order], None)
    link = Link(ros_node, wait, start_matcher(spawn))
    diagnostics = []
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    link.send(features(good, 0), expect_match=False)

    if case == "all descriptors NaN":
        link.publisher.publish(features(poisoned, 1))
        assert wait(lambda: matcher_diagnostics(diagnostics).get("bad frames") == "1", 10), "bad frame not counted"
        assert not link.matches, "a frame without a finite row was matched"
        reference, inliers, expected = good, 1000, {"bad frames": "1", "non-finite rows dropped": "1000"}
    else:  # the 500 finite rows still match, and the published indices are rows of the message
        match = link.send(features(poisoned, 1))
        assert match.valid and match.num_inliers == 500
        assert set(match.current_indices) == set(range(500, 1000))
        np.testing.assert_array_equal(match.reference_indices, match.current_indices)
        check_inliers(match, good, poisoned)
        assert not np.any(np.array(match.current_track_ids[:500])) and all(match.current_track_ids[500:])
        reference, inliers, expected = poisoned, 500, {"bad frames": "0", "non-finite rows dropped": "500"}

    match = link.send(features(shifted, 2))
    assert match.reference_stamp == header(1 if reference is poisoned else 0).stamp
    assert match.valid and match.num_inliers == inliers
    shift = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert corner_error(homography_from_msg(match), shift, SIZE[::-1]) < 1.0
    check_inliers(match, reference, shifted)
    assert wait(lambda: {k: matcher_diagnostics(diagnostics).get(k) for k in expected} == expected, 5), \
        f"diagnostics {matcher_diagnostics(diagnostics)}, expected {expected}"


def test_keyframe_mode_matches_against_the_keyframe(ros_node, spawn, wait):
    sequence = synthetic_sequence(6, keypoints=500, dim=128, size=SIZE, seed=4)
    link = Link(ros_node, wait, start_matcher(spawn, "keyframe_mode:=true", "keyframe_inlier_fraction:=0.6"))
    link.send(features(sequence[0], 0), expect_match=False)
    references = []
    for index in range(1, len(sequence)):
        match = link.send(features(sequence[index], index))
        reference = next(i for i in range(index) if header(i).stamp == match.reference_stamp)
        references.append(reference)
        truth = np.eye(3)
        for step in range(reference + 1, index + 1):
            truth = sequence[step].homography @ truth
        assert corner_error(homography_from_msg(match), truth, SIZE[::-1]) < 1.5
    assert references[:3] == [0, 0, 0]  # the keyframe is kept while inliers stay above 0.6 of its first match
    assert references[3] == 3  # frame 3 fell below the fraction (0.7^3 of the points) and became the keyframe


def test_debug_image_only_while_subscribed(ros_node, spawn, wait):
    sequence = synthetic_sequence(3, keypoints=300, dim=64, size=SIZE, seed=5)
    link = Link(ros_node, wait, start_matcher(spawn))
    images = ros_node.create_publisher(Image, "image", output_qos())
    assert not wait(lambda: images.get_subscription_count() > 0, 1.0), "subscribed to images without a viewer"
    debug = []
    subscription = ros_node.create_subscription(Image, "matches/debug_image", debug.append, output_qos())
    assert wait(lambda: images.get_subscription_count() > 0, 10), "no image subscription for the debug view"
    picture = np.full((SIZE[1], SIZE[0]), 128, dtype=np.uint8)
    for index, frame in enumerate(sequence):
        images.publish(numpy_to_image(picture, "mono8", header(index)))
        wait(lambda: False, 0.1)
        link.send(features(frame, index), expect_match=index > 0)
    assert wait(lambda: len(debug) >= 2, 10), "no debug image"
    assert (debug[-1].width, debug[-1].height, debug[-1].encoding) == (SIZE[0], SIZE[1], "bgr8"), "the current frame"
    assert debug[-1].header == header(2)
    drawn = image_to_numpy(debug[-1])
    assert np.median(drawn[:CAPTION_HEIGHT]) < np.median(drawn[CAPTION_HEIGHT:]), "a caption band darkens the top"
    green = drawn[CAPTION_HEIGHT:, :, 1].astype(int) > drawn[CAPTION_HEIGHT:, :, 0].astype(int) + 20
    tracks = cv2.connectedComponents(green.astype(np.uint8), connectivity=8)[0] - 1  # ~210 inliers of 300 points
    assert 50 <= tracks <= MAX_TRACKS, f"{tracks} green tracks: a capped number of the inliers"
    ros_node.destroy_subscription(subscription)
    assert wait(lambda: images.get_subscription_count() == 0, 10), "image subscription kept without a viewer"


def set_parameter(node, name: str, value: ParameterValue):
    client = node.create_client(SetParameters, "/matcher/set_parameters")
    assert client.wait_for_service(timeout_sec=30)
    request = SetParameters.Request(parameters=[Parameter(name=name, value=value)])
    return service_answer(lambda: client.call_async(request)).results[0]


def test_runtime_parameters_are_validated(ros_node, spawn, wait):
    start_matcher(spawn)
    string = ParameterType.PARAMETER_STRING
    refused = set_parameter(ros_node, "method", ParameterValue(type=string, string_value="lmeds"))
    assert not refused.successful and "method" in refused.reason
    out_of_range = set_parameter(ros_node, "min_inliers",
                                 ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=2))
    assert not out_of_range.successful
    read_only = set_parameter(ros_node, "num_threads",
                              ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=2))
    assert not read_only.successful
    accepted = set_parameter(ros_node, "method", ParameterValue(type=string, string_value="magsac"))
    assert accepted.successful


def test_unavailable_device_fails_start_with_one_line(spawn, tmp_path):
    matcher = start_matcher(spawn, "device:=cuda:7")
    assert matcher.wait(timeout=30) == 1
    log = (tmp_path / "matcher.log").read_text()
    assert "cannot start" in log and "cuda:7" in log and "Traceback" not in log



def test_changes_reach_the_tracker_under_the_workers_lock_and_refused_ones_never_do():
    """In-process."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = MatcherNode(context=context, parameter_overrides=[NodeParameter("num_threads", value=0),
                                                             NodeParameter("device", value="cpu")])
    try:
        for name, value in (("method", "foo"), ("ratio_test", 2.0), ("device", "gpu"), ("model", "affine"),
                            ("refine", "gn"), ("camera_yaml", "/nonexistent/camera.yaml")):
            (result,) = node.set_parameters([NodeParameter(name, value=value)])
            assert not result.successful and result.reason and "\n" not in result.reason
            if name == "camera_yaml":
                assert "cannot read /nonexistent/camera.yaml" in result.reason
        assert node._tracker.match_config.method == "ransac" and node._tracker.match_config.ratio_test == 0.0
        with node._lock:  # the worker is matching a frame
            setter = threading.Thread(target=node.set_parameters, args=([NodeParameter("method", value="magsac")],))
            setter.start()
            setter.join(timeout=0.5)
            assert setter.is_alive(), "the change waits for the worker's lock"
            assert node._tracker.match_config.method == "ransac", "changed while the worker matches"
        setter.join(timeout=5)
        assert node._tracker.match_config.method == "magsac"
        assert node.set_parameters([NodeParameter("keyframe_mode", value=True)])[0].successful
        assert node._tracker.policy.config.mode == "keyframe"
        camera = str(Path(__file__).parent / "camera_pinhole.yaml")
        assert node.set_parameters([NodeParameter("model", value="essential"),
                                    NodeParameter("camera_yaml", value=camera)])[0].successful
        assert node._tracker.match_config.model == "essential" and node._camera_file.focal == pytest.approx(520.95)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


# ---- essential matrix and relative pose, camera model from CameraInfo ------------------------------------------

CAMERA_K = [520.9, 0.0, 325.1, 0.0, 521.0, 249.7, 0.0, 0.0, 1.0]
CAMERA_D = [0.231222, -0.784899, -0.003257, -0.000105, 0.917205]  # TUM fr2's plumb_bob: undistortion matters
MOTION_R = cv2.Rodrigues(np.radians([3.0, -5.0, 2.0]).reshape(3, 1))[0]
MOTION_T = np.array([0.6, -0.1, 0.25])  # reference -> current camera: X_cur = R X_ref + t


def scene_features(count: int = 800, seed: int = 3, distortion=CAMERA_D):
    """Makers (index -> Features message) of two views of a random 3D scene (pixels through ``distortion``, 0.3 px
    noise), descriptors shared with noise; the current view's rows shuffled."""
    rng = np.random.default_rng(seed)
    k, d = np.array(CAMERA_K).reshape(3, 3), np.array(distortion)
    points = rng.uniform([-3, -2, 3], [3, 2, 8], (count * 4, 3))
    moved = points @ MOTION_R.T + MOTION_T
    reference = cv2.projectPoints(points, np.zeros(3), np.zeros(3), k, d)[0].reshape(-1, 2)
    current = cv2.projectPoints(moved, np.zeros(3), np.zeros(3), k, d)[0].reshape(-1, 2)
    inside = np.all((reference > 5) & (reference < np.array(SIZE) - 5) & (current > 5) & (current < np.array(SIZE) - 5),
                    axis=1)
    reference, current = reference[inside][:count], current[inside][:count]
    descriptors = rng.standard_normal((count, 256)).astype(np.float32)
    noisy = descriptors + 0.2 * rng.standard_normal(descriptors.shape).astype(np.float32)
    order = rng.permutation(count)
    scores = np.linspace(1, 0, count, dtype=np.float32)

    def message(pixels, descs, index):
        pixels = pixels + rng.normal(0, 0.3, pixels.shape)
        unit = descs / np.linalg.norm(descs, axis=1, keepdims=True)
        return features_to_msg(header(index), NumpyFeatures(pixels, scores, unit, SIZE))

    return (lambda i: message(reference, descriptors, i)), (lambda i: message(current[order], noisy[order], i))


def camera_info_msg(index: int) -> CameraInfo:
    return CameraInfo(header=header(index), width=SIZE[0], height=SIZE[1], distortion_model="plumb_bob",
                      d=CAMERA_D, k=CAMERA_K)


def test_essential_pose_with_camera_info_over_dds(ros_node, spawn, wait):
    reference, current = scene_features()
    matcher = start_matcher(spawn, "model:=essential", "reprojection_threshold:=1.0", "device:=cpu")
    link = Link(ros_node, wait, matcher)
    infos = ros_node.create_publisher(CameraInfo, "camera_info", output_qos())
    motions = []
    ros_node.create_subscription(TransformStamped, "matches/motion", motions.append, output_qos())
    link.skip(reference(0))  # no camera model yet: essential skips the frames
    link.skip(current(1))
    assert not link.matches
    assert wait(lambda: infos.get_subscription_count() > 0, 20)
    for index in (2, 3):
        infos.publish(camera_info_msg(index))
    wait(lambda: False, 0.3)  # let the CameraInfo arrive before the Features of its stamp
    link.send(reference(2), expect_match=False)
    match = link.send(current(3))
    assert match.valid and match.model == "essential" and match.has_pose
    rotation, direction = rotation_from_msg(match), np.array([match.translation_direction.x,
                                                              match.translation_direction.y,
                                                              match.translation_direction.z])
    assert rotation_angle_deg(rotation, MOTION_R) < 0.1
    assert direction_angle_deg(direction, MOTION_T, signed=True) < 1.0
    essential = np.array(match.matrix).reshape(3, 3)
    assert abs(np.linalg.det(essential)) < 1e-6 and np.linalg.matrix_rank(essential, tol=1e-6) == 2
    np.testing.assert_array_equal(homography_from_msg(match), np.eye(3))  # not a homography: identity there
    inliers = np.array(match.match_inliers)
    assert len(inliers) == len(match.match_reference_indices) == len(match.match_current_indices) == match.num_matches
    assert inliers.sum() == match.num_inliers > 600
    np.testing.assert_array_equal(np.array(match.match_current_indices)[inliers], match.current_indices)
    assert wait(lambda: any(m.header.stamp == header(3).stamp for m in motions), 10), "no TransformStamped"
    motion = next(m for m in motions if m.header.stamp == header(3).stamp)
    assert motion.child_frame_id == "camera_optical_current"
    centre = np.array([motion.transform.translation.x, motion.transform.translation.y, motion.transform.translation.z])
    assert direction_angle_deg(centre, -MOTION_R.T @ MOTION_T, signed=True) < 1.0  # the current camera's centre


def test_unusable_camera_info_and_failing_matches_are_counted_and_the_node_keeps_going(wait):
    """In-process: a CameraInfo whose K's last row is not 0 0 1 is refused (counted once per calibration), so model
    essential skips the frame; an exception while matching is counted as a bad frame; the next frame is served."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = MatcherNode(context=context, parameter_overrides=[NodeParameter("num_threads", value=0),
                                                             NodeParameter("device", value="cpu"),
                                                             NodeParameter("model", value="essential")])
    try:
        reference, current = scene_features()
        for index in (0, 1):
            node._on_camera_info(CameraInfo(header=header(index), width=SIZE[0], height=SIZE[1],
                                            distortion_model="plumb_bob", d=CAMERA_D, k=CAMERA_K[:6] + [0.0] * 3))
            node._on_features(reference(index))
            assert wait(lambda: node._stats.total("no_camera") == index + 1, 10), "frame not skipped"
        assert node._stats.total("bad_camera_info") == 1
        assert node.set_parameters([NodeParameter("model", value="homography")])[0].successful
        track = node._tracker.track
        node._tracker.track = lambda frame: 1 / 0
        node._on_features(reference(2))
        assert wait(lambda: node._stats.total("bad") == 1, 10), "the failing match was not counted"
        node._tracker.track = track
        node._on_features(reference(3))
        assert wait(lambda: node._tracker.reference is not None, 10), "the worker stopped after the error"
        node._on_features(current(4))
        assert wait(lambda: node._stats.total(PUBLISHED) == 1, 10), "no match after the error"
        assert node._stats.total("bad") == 1
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_auto_picks_the_model_per_pair_with_a_camera_yaml(ros_node, spawn, wait):
    """auto with a camera_yaml: the 3D scene gives the essential matrix; the planar synthetic sequence (a
    homography between frames) gives the homography."""
    reference, current = scene_features(seed=4, distortion=[0.0] * 5)
    sequence = synthetic_sequence(2, keypoints=1000, dim=256, size=SIZE, seed=1)
    camera = Path(__file__).parent / "camera_pinhole.yaml"  # no distortion: the planar sequence stays a homography
    # min_inliers 30: unrelated frames of 1000 random points give 13-17 epipolar "inliers" at 1 px (measured), so the
    # default 15 would let the epipolar model fit the jump from the scene to the planar sequence
    link = Link(ros_node, wait, start_matcher(spawn, "model:=auto", f"camera_yaml:={camera}", "device:=cpu",
                                              "reprojection_threshold:=1.0", "min_inliers:=30"))
    link.send(reference(0), expect_match=False)
    scene_match = link.send(current(1))
    assert scene_match.model == "essential" and scene_match.has_pose
    assert not link.send(features(sequence[0], 2)).valid  # unrelated to the scene: invalid, and the new reference
    plane_match = link.send(features(sequence[1], 3))
    assert plane_match.header.stamp == header(3).stamp
    assert plane_match.model == "homography" and plane_match.valid


def test_tracks_and_the_vins_feature_cloud(ros_node, spawn, wait):
    """A subscriber written from VINS-Fusion's layout (estimator feature_callback: points (x, y, 1) normalised;
    channels by index 0 id, 1 camera id, 2 u, 3 v, 4 velocity x, 5 velocity y) and one of usp_ros/Tracks."""
    make_reference, make_current = scene_features(seed=5)
    reference, current = make_reference(0), make_current(1)
    link = Link(ros_node, wait, start_matcher(spawn, "model:=essential", "reprojection_threshold:=1.0", "device:=cpu",
                                              f"camera_yaml:={Path(__file__).parent / 'camera_tum_fr2.yaml'}"))
    clouds, tracks = [], []
    ros_node.create_subscription(PointCloud, "/feature_tracker/feature", clouds.append, output_qos())
    ros_node.create_subscription(Tracks, "tracks", tracks.append, output_qos())
    assert wait(lambda: ros_node.count_publishers("/feature_tracker/feature") > 0 and ros_node.count_publishers(
        "tracks") > 0, 20)
    wait(lambda: False, 0.5)  # the matcher sees our subscriptions (it publishes tracks only while subscribed)
    link.send(reference, expect_match=False)
    match = link.send(current)
    assert wait(lambda: any(c.header.stamp == header(1).stamp for c in clouds), 10), "no PointCloud for frame 1"
    cloud = next(c for c in clouds if c.header.stamp == header(1).stamp)
    ids, camera_ids, u, v, velocity_x, velocity_y = (np.array(c.values, np.float64) for c in cloud.channels)
    points = np.array([[p.x, p.y, p.z] for p in cloud.points])
    assert [c.name for c in cloud.channels][0] == "id_of_point" and np.all(points[:, 2] == 1.0)
    assert not camera_ids.any() and len(ids) == match.num_inliers  # every inlier seen twice, nothing else
    track_ids = np.array(match.current_track_ids)
    np.testing.assert_array_equal(np.sort(ids), np.sort(track_ids[match.current_indices].astype(np.float64)))
    rows = np.array(match.current_indices)[np.argsort(track_ids[match.current_indices])]
    order = np.argsort(ids)
    pixels = np.c_[current.keypoints.x, current.keypoints.y][rows]
    np.testing.assert_allclose(np.c_[u, v][order], pixels, atol=1e-3)
    k, d = np.array(CAMERA_K).reshape(3, 3), np.array(CAMERA_D)
    undistorted = cv2.undistortPoints(pixels.reshape(-1, 1, 2), k, d, criteria=(3, 50, 1e-12)).reshape(-1, 2)
    np.testing.assert_allclose(points[order, :2], undistorted, atol=1e-5)
    reference_rows = dict(zip(match.current_indices, match.reference_indices))
    before = np.c_[reference.keypoints.x, reference.keypoints.y][[reference_rows[r] for r in rows]]
    before = cv2.undistortPoints(before.reshape(-1, 1, 2), k, d, criteria=(3, 50, 1e-12)).reshape(-1, 2)
    seconds = 1.0 + 5000e-9  # header(1) - header(0)
    np.testing.assert_allclose(np.c_[velocity_x, velocity_y][order], (undistorted - before) / seconds, atol=1e-5)
    assert wait(lambda: any(t.header.stamp == header(1).stamp for t in tracks), 10), "no Tracks for frame 1"
    frame_tracks = next(t for t in tracks if t.header.stamp == header(1).stamp)
    assert frame_tracks.has_camera and len(frame_tracks.id) == len(current.keypoints.x)  # every row has an id
    age = np.array(frame_tracks.age)
    assert (age == 2).sum() == match.num_inliers and set(age.tolist()) == {1, 2}
    np.testing.assert_array_equal(np.array(frame_tracks.id), track_ids[np.array(frame_tracks.row)])

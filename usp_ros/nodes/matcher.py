"""ROS 2 node `matcher`: Features in, FrameMatch (homography, or essential matrix and relative pose) out.

Subscribes to ``features`` (usp_ros/Features), matches each frame against the previous frame or
the last keyframe (usp_core.geometry.tracking), and publishes ``matches`` (usp_ros/FrameMatch) with the
current frame's header.

Geometry (parameter ``model``, usp_core.geometry.two_view): ``homography`` (the default, as before),
``essential``, ``fundamental`` or ``auto`` (per pair, ORB-SLAM's score ratio picks homography or epipolar
geometry). A camera model comes from the ``camera_yaml`` parameter (camera_calibration's YAML) or, when that
is empty, from ``camera_info`` (sensor_msgs/CameraInfo): the message with the Features' stamp, as
image_pipeline pairs them, else the latest one received. With a camera model the keypoints are undistorted
(plumb_bob, rational_polynomial, equidistant) and the FrameMatch carries the relative pose reference ->
current, also published as geometry_msgs/TransformStamped on ``matches/motion`` (the current camera in the
reference camera's frame, unit translation). ``essential`` needs a camera model: until one is known,
frames are skipped (counted, logged). Without a camera model every other model works as before on pixels.

Tracks for estimators (usp_core.geometry.tracks), built only while someone subscribes: ``tracks``
(usp_ros/Tracks: every tracked point's id, pixel, normalised coordinates, velocity, age) and
``feature_tracker/feature`` (sensor_msgs/PointCloud in VINS-Mono/Fusion's layout: the points seen more
than once, with a camera model only; with no namespace that is the topic VINS subscribes to).

``matches/debug_image`` (the current frame with each inlier's track through its positions in the last
frames (usp_core.geometry.tracking.TrackTrails), a capped and evenly spread sample of them,
and a caption with the numbers) is built only while someone subscribes to it, and only then
does the node subscribe to ``image`` (images are paired with features by header stamp). Matching runs
in a worker thread behind a drop-oldest queue of depth 1, so the executor only enqueues. Malformed
Features are logged (throttled), counted as bad frames and skipped. Diagnostics go to /diagnostics
once a second (usp_ros.support.diagnostics).

Parameter changes are validated before they are taken (a refused one leaves the old values) and
applied under the lock the worker matches under, so a frame is matched with one set of settings.

Non-finite values: rows (keypoints) whose x, y or descriptor hold NaN or inf are dropped before
matching and counted ("non-finite rows dropped"). When that leaves fewer rows than ``min_inliers``
(so no valid homography could come of the frame), the frame is rejected: logged (throttled),
counted as a bad frame, never matched and never made the reference, so the next good frame is
matched against the last good one. The inlier indices of a FrameMatch are rows of the Features
messages as published, dropped rows included. Scores are not used and not checked.

Track ids (usp_core.geometry.tracking): each FrameMatch carries one id per row of the current Features; an
inlier inherits its reference keypoint's id, other rows get ids never used before by this node (a
counter from 1), dropped rows get 0 (no track). A restarted track (reset, device change) starts with
fresh ids.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from geometry_msgs.msg import TransformStamped
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud

from usp_core.geometry.camera import CameraError, CameraModel, load_camera_yaml
from usp_core.geometry.match_result import MatchResult
from usp_core.geometry.tracking import METHODS, MODELS, Frame, FrameTracker, KeyframeConfig, MatchConfig, TrackTrails
from usp_core.geometry.tracks import TrackHistory
from usp_core.geometry.two_view import REFINEMENTS
from usp_core.inference.features import Features as NumpyFeatures
from usp_core.support.device import resolve_device
from usp_core.support.drawing import draw_tracks
from usp_core.support.frame_queue import FrameQueue, QueueWorker
from usp_ros.bridge.images import ConversionError, image_to_numpy, numpy_to_image, to_bgr8
from usp_ros.bridge.messages import (camera_from_info, frame_match_to_msg, motion_transform, msg_to_features,
                                    tracks_to_msg, vins_feature_cloud)
from usp_ros.msg import Features, FrameMatch, Tracks
from usp_ros.support.diagnostics import PERIOD_S, PUBLISHED, RECEIVED, Statistics, diagnostics_message
from usp_ros.support.parameters import NodeParameters, ParameterSpec
from usp_ros.support.qos import choose_input_reliability, input_qos, output_qos, publisher_reliabilities
from usp_ros.support.run import run
from usp_ros.support.stamps import StampCache, stamp_key, stamp_ns

__all__ = ["MatcherNode", "PARAMETERS", "main", "tracker_configs", "camera_file"]

NODE_NAME = "matcher"
IMAGE_CACHE = 64  # images kept for pairing with features by stamp (about 2 s at 30 Hz)
CAMERA_INFO_CACHE = 64  # CameraInfo messages kept for pairing with features by stamp
THROTTLE_S = 5.0  # at most one warning per this many seconds for a repeated problem
DEBUG_SUBSCRIPTION_CHECK_S = 0.25  # how often the node looks whether matches/debug_image has subscribers
COUNTERS = ("valid", "bad", "non_finite", "no_camera", "bad_camera_info")  # besides received and published
WARNINGS = {"bad": "bad Features skipped", "non_finite": "non-finite rows dropped",
            "no_camera": "frames skipped without a camera model",
            "bad_camera_info": "unusable CameraInfo calibrations"}  # diagnostics: WARN when these rise

PARAMETERS: dict[str, ParameterSpec] = {
    "device": ParameterSpec("auto", "torch device for matching: auto (cuda when available), cpu, cuda or cuda:N"),
    "num_threads": ParameterSpec(1, "torch CPU threads for matching, read at start; 0 = torch's default (one per "
                                    "core). 1 leaves the other cores to the detector",
                                 read_only=True, integer_range=(0, 256)),
    "ratio_test": ParameterSpec(0.0, "Lowe's ratio test applied both ways in (0, 1]; 0 disables it",
                                float_range=(0.0, 1.0)),
    "model": ParameterSpec("homography", "geometry per pair: homography (pixels), essential (needs a camera model), "
                                         "fundamental, or auto (ORB-SLAM's score ratio picks homography or epipolar)",
                           choices=MODELS),
    "method": ParameterSpec("ransac", "robust estimator: ransac (cv2.RANSAC) or magsac (cv2.USAC_MAGSAC)",
                            choices=METHODS),
    "reprojection_threshold": ParameterSpec(3.0, "inlier threshold in pixels (for the essential matrix divided by the "
                                                 "focal length; 1.0 suits it)", float_range=(0.1, 100.0)),
    "refine": ParameterSpec("lm", "essential: lm refines R, t on the inliers (Levenberg-Marquardt on the Sampson "
                                  "error); none keeps RANSAC's model", choices=REFINEMENTS),
    "camera_yaml": ParameterSpec("", "camera calibration YAML (camera_calibration's format); empty: the camera model "
                                     "comes from the camera_info topic"),
    "min_inliers": ParameterSpec(15, "fewer inliers than this gives valid=false", integer_range=(4, 100000)),
    "keyframe_mode": ParameterSpec(False, "true: match against the last keyframe; false: against the previous frame"),
    "keyframe_inlier_fraction": ParameterSpec(0.5, "keyframe mode: take a new keyframe when inliers fall below this "
                                                   "fraction of the keyframe's first match", float_range=(0.0, 1.0)),
}


def tracker_configs(values: dict) -> tuple[MatchConfig, KeyframeConfig]:
    """Parameter values -> the FrameTracker's configs; ValueError names the bad one."""
    match = MatchConfig(float(values["ratio_test"]), values["method"], float(values["reprojection_threshold"]),
                        int(values["min_inliers"]), values["model"], values["refine"])
    keyframe = KeyframeConfig("keyframe" if values["keyframe_mode"] else "previous",
                              float(values["keyframe_inlier_fraction"]))
    return match, keyframe


def debug_caption(result: MatchResult, stamp, mode: str) -> str:
    """The numbers of one match for the debug image's caption; ``mode``: what the reference is (previous/keyframe).

    "valid: 719 matches, 700 inliers | tracks 700 kept, 300 new | previous 33 ms before"
    """
    state = ("valid" if result.valid else "INVALID") + ("" if result.model == "homography" else f" {result.model}")
    continued = result.num_inliers if result.valid else 0  # a valid match's inliers inherit their reference's ids
    started = int(np.count_nonzero(result.current_track_ids)) - continued  # rows with an id (not dropped), not inliers
    age_ms = (stamp_ns(stamp) - stamp_ns(result.reference_stamp)) / 1e6
    return (f"{state}: {result.num_matches} matches, {result.num_inliers} inliers | tracks {continued} kept, "
            f"{started} new | {mode} {age_ms:.0f} ms before")


class MatcherNode(Node):
    """Matches consecutive Features messages and publishes their homography (see the module docstring).

    Raises ValueError at start for an unusable parameter (e.g. a CUDA device this machine lacks).
    """

    _worker: QueueWorker | None = None  # a class default: rclpy destroys a half-built node at shutdown too

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._lock = threading.Lock()  # held while the worker matches; the device and configs change under it
        self._params = NodeParameters(self, PARAMETERS, self._validate, self._apply, self._lock)
        self._params.check()
        values = self._params.values
        self._device = resolve_device(values["device"])
        self._tracker = FrameTracker(*tracker_configs(values))
        self._camera_file = camera_file(values["camera_yaml"])  # the camera_yaml parameter's camera, or None
        self._camera_lock = threading.Lock()  # the CameraInfo cache: filled by the executor, read by the worker
        self._camera_infos = StampCache(CAMERA_INFO_CACHE)
        self._camera_info_model: tuple | None = None  # (CameraInfo fields, CameraModel) of the last one converted
        self._stats = Statistics(COUNTERS)
        self._images_lock = threading.Lock()  # the image cache: filled by the executor, read by the worker
        self._images = StampCache(IMAGE_CACHE)
        self._trails = TrackTrails()  # the live tracks' positions: the worker's alone, while the debug image is viewed
        self._history = TrackHistory()  # each live track's last position and age: the worker's alone
        self._image_subscription = None
        self._match_pub = self.create_publisher(FrameMatch, "matches", output_qos())
        self._debug_pub = self.create_publisher(Image, "matches/debug_image", output_qos(depth=2))
        self._motion_pub = self.create_publisher(TransformStamped, "matches/motion", output_qos())
        self._tracks_pub = self.create_publisher(Tracks, "tracks", output_qos())
        self._vins_pub = self.create_publisher(PointCloud, "feature_tracker/feature", output_qos())
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", output_qos())
        self._queue: FrameQueue[Features] = FrameQueue(depth=1, policy="drop_oldest")
        self._worker = QueueWorker(self._queue, self._process, self._on_worker_error, name="matcher").start()
        # Features are ~1 MB (1000 x 256 floats): reliable, as our detector publishes them (a best-effort
        # reader of samples that large loses them unless the publisher has a large shared-memory segment).
        self._subscription = self.create_subscription(Features, "features", self._on_features,
                                                      input_qos(ReliabilityPolicy.RELIABLE, 2))
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                 input_qos(ReliabilityPolicy.RELIABLE, depth=5))
        self.create_timer(DEBUG_SUBSCRIPTION_CHECK_S, self._update_debug_subscription)
        self.create_timer(PERIOD_S, self._publish_diagnostics)
        self.get_logger().info(f"matching on {self._device}, reference: {self._tracker.policy.config.mode}, "
                               f"model: {self._tracker.match_config.model}, method: {self._tracker.match_config.method}"
                               f", camera: {values['camera_yaml'] or 'camera_info'}")

    def destroy_node(self) -> None:
        """Stop the worker thread (waits for the frame in hand), then destroy the node."""
        if self._worker is not None:
            self._worker.stop()
        super().destroy_node()

    # ---- parameters ----------------------------------------------------------------------------------

    def _validate(self, values: dict) -> None:
        """ValueError for a device this machine lacks, a config the tracker refuses or an unusable camera YAML."""
        resolve_device(values["device"])
        tracker_configs(values)
        camera_file(values["camera_yaml"])

    def _apply(self, values: dict) -> None:
        """Under the worker's lock: the device (the worker restarts the track there), the tracker's configs and the
        camera file."""
        self._device = resolve_device(values["device"])
        self._tracker.match_config, self._tracker.policy.config = tracker_configs(values)
        self._camera_file = camera_file(values["camera_yaml"])

    # ---- worker thread -------------------------------------------------------------------------------

    def _on_features(self, msg: Features) -> None:
        self._stats.count(RECEIVED)
        self._queue.put(msg)

    def _on_worker_error(self, msg: Features, error: BaseException) -> None:
        if not self.context.ok():
            return  # shutting down: publishing failed because the context is gone
        self._stats.count("bad")
        self.get_logger().error(f"matching failed ({self._stats.total('bad')} bad frames so far): {error!r}",
                                throttle_duration_sec=THROTTLE_S)

    def _process(self, msg: Features) -> None:
        """Worker thread: convert, drop non-finite rows, match, publish."""
        try:
            features = msg_to_features(msg)
        except ConversionError as error:
            self._stats.count("bad")
            self.get_logger().warning(f"skipping malformed Features: {error}", throttle_duration_sec=THROTTLE_S)
            return
        with self._lock:
            camera = self._camera_for(msg.header.stamp, features.image_size)
            if camera is None and self._tracker.match_config.model == "essential":
                self._stats.count("no_camera")
                self.get_logger().warning("model essential needs a camera model: no CameraInfo on camera_info yet and "
                                          "no camera_yaml; frame skipped", throttle_duration_sec=THROTTLE_S)
                return
            frame = self._finite_frame(msg.header.stamp, features, camera)
            if frame is None:
                return
            reference = self._tracker.reference
            if reference is not None and reference.descriptors.device != frame.descriptors.device:
                self._tracker.reset()
            started = time.perf_counter()
            result = self._tracker.track(frame)
            elapsed = time.perf_counter() - started
            mode = self._tracker.policy.config.mode
            track_ids = self._tracker.reference_track_ids if result is None else result.current_track_ids
        if self._image_subscription is not None:
            self._trails.update(track_ids, features.keypoints)
        else:
            self._trails.clear()  # here, not in the executor: the worker alone touches the trails
        self._publish_tracks(msg.header, frame, track_ids)
        if result is None:
            return
        match = frame_match_to_msg(msg.header, result)
        self._match_pub.publish(match)
        if match.has_pose:
            self._motion_pub.publish(motion_transform(match))
        self._stats.count(PUBLISHED, seconds=elapsed)
        self._stats.count("valid", int(result.valid))
        if self._image_subscription is not None:
            self._publish_debug_image(msg, result, mode)

    def _publish_tracks(self, header, frame: Frame, track_ids: np.ndarray) -> None:
        """Worker: this frame's tracked points on `tracks` and (with a camera model) `feature_tracker/feature`, each
        while subscribed; the track history is updated every frame (velocities and ages need every frame)."""
        normalised = None
        if frame.normalised is not None:
            normalised = np.full((frame.num_rows, 2), np.nan)
            normalised[frame.source_rows(np.arange(len(frame.keypoints)))] = frame.normalised
        pixels = np.full((frame.num_rows, 2), np.nan, np.float32)
        pixels[frame.source_rows(np.arange(len(frame.keypoints)))] = frame.keypoints
        points = self._history.update(stamp_ns(header.stamp) / 1e9, track_ids, pixels, normalised)
        if self._tracks_pub.get_subscription_count() > 0:
            self._tracks_pub.publish(tracks_to_msg(header, points, normalised is not None))
        if normalised is not None and self._vins_pub.get_subscription_count() > 0:
            self._vins_pub.publish(vins_feature_cloud(header, points))

    def _finite_frame(self, stamp, features: NumpyFeatures, camera: CameraModel | None) -> Frame | None:
        """The Frame of the rows with finite values; None (counted, logged) when fewer than min_inliers are left."""
        frame = Frame.from_features(stamp, features, self._device, camera)
        if not frame.dropped:
            return frame
        self._stats.count("non_finite", frame.dropped)
        kept, min_inliers = len(frame.keypoints), self._tracker.match_config.min_inliers
        if kept < min_inliers:
            self._stats.count("bad")
            self.get_logger().warning(f"skipping Features with NaN or inf in {frame.dropped} of {len(features)} rows: "
                                      f"{kept} left, fewer than min_inliers ({min_inliers})",
                                      throttle_duration_sec=THROTTLE_S)
            return None
        self.get_logger().warning(f"dropped {frame.dropped} of {len(features)} Features rows holding NaN or inf",
                                  throttle_duration_sec=THROTTLE_S)
        return frame

    def _publish_debug_image(self, msg: Features, result: MatchResult, mode: str) -> None:
        """The current frame's image (paired by stamp) with the inliers' tracks over the last frames and the numbers."""
        with self._images_lock:
            image = self._images.get(stamp_key(msg.header.stamp))
        if image is None:
            self.get_logger().debug("no image with the stamp of the features: debug image skipped",
                                    throttle_duration_sec=THROTTLE_S)
            return
        try:
            bgr = to_bgr8(image_to_numpy(image), image.encoding)
        except ConversionError as error:
            self.get_logger().warning(f"cannot draw debug image: {error}", throttle_duration_sec=THROTTLE_S)
            return
        tracks = []  # an invalid match's "inliers" are the rejected model's: no tracks
        if result.valid:
            trails = self._trails.trails(result.current_track_ids[result.current_indices])
            tracks = [trail if len(trail) else point[None] for trail, point in zip(trails, result.current_points)]
        canvas = draw_tracks(bgr, tracks, debug_caption(result, msg.header.stamp, mode))
        self._debug_pub.publish(numpy_to_image(canvas, "bgr8", msg.header))

    # ---- camera model --------------------------------------------------------------------------------

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._camera_lock:
            self._camera_infos.put(msg.header.stamp, msg)

    def _camera_for(self, stamp, image_size: tuple[int, int]) -> CameraModel | None:
        """Worker: the camera_yaml camera, else the CameraInfo with this stamp (else the latest); None when there is
        none, or (logged) when it cannot be used or its size differs from the Features' image."""
        camera = self._camera_file
        if camera is None:
            with self._camera_lock:
                info = self._camera_infos.get(stamp_key(stamp))
                if info is None and self._camera_infos:
                    info = next(reversed(self._camera_infos.values()))
            camera = None if info is None else self._camera_from_info(info)
        if camera is not None and (camera.width, camera.height) != tuple(image_size):
            self.get_logger().warning(f"camera model is {camera.width}x{camera.height}, the features' image "
                                      f"{image_size[0]}x{image_size[1]}: camera ignored",
                                      throttle_duration_sec=THROTTLE_S)
            return None
        return camera

    def _camera_from_info(self, info: CameraInfo) -> CameraModel | None:
        """The CameraModel of a CameraInfo, converted once per distinct calibration; None (logged) when unusable."""
        key = (info.width, info.height, tuple(info.k), tuple(info.d), info.distortion_model, info.binning_x,
               info.binning_y, info.roi.width, info.roi.height)
        if self._camera_info_model is None or self._camera_info_model[0] != key:
            try:
                self._camera_info_model = (key, camera_from_info(info))
            except CameraError as error:
                self._stats.count("bad_camera_info")
                self.get_logger().warning(f"unusable CameraInfo: {error}", throttle_duration_sec=THROTTLE_S)
                self._camera_info_model = (key, None)
        return self._camera_info_model[1]

    # ---- images for the debug view -------------------------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        with self._images_lock:
            self._images.put(msg.header.stamp, msg)

    def _update_debug_subscription(self) -> None:
        """Subscribe to `image` only while `matches/debug_image` has subscribers."""
        wanted = self._debug_pub.get_subscription_count() > 0
        if wanted and self._image_subscription is None:
            self._image_subscription = self.create_subscription(Image, "image", self._on_image, self._image_qos())
        elif not wanted and self._image_subscription is not None:
            self.destroy_subscription(self._image_subscription)
            self._image_subscription = None
            with self._images_lock:
                self._images.clear()

    def _image_qos(self):
        """Images: the reliability of the publishers on `image` (best-effort when none is seen yet)."""
        reliability, _ = choose_input_reliability("auto", publisher_reliabilities(self, "image"))
        return input_qos(reliability, depth=5)

    # ---- diagnostics ---------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        period = self._stats.take_period()
        values = {
            "match + homography ms": f"{period.mean_ms.get(PUBLISHED, float('nan')):.2f}",
            "valid match rate (Hz)": f"{period.rate('valid'):.2f}",
            "dropped frames": self._queue.dropped,
            "bad frames": period.totals["bad"],
            "non-finite rows dropped": period.totals["non_finite"],
            "device": str(self._device),
            "reference": self._tracker.policy.config.mode,
            "model": self._tracker.match_config.model,
            "frames skipped without a camera model": period.totals["no_camera"],
            "unusable CameraInfo calibrations": period.totals["bad_camera_info"],
        }
        self._diagnostics_pub.publish(diagnostics_message(
            self.get_clock().now().to_msg(), f"{self.get_fully_qualified_name()}: matcher", str(self._device), period,
            WARNINGS, f"waiting for Features on {self._subscription.topic_name}", values))


def camera_file(path: str) -> CameraModel | None:
    """The camera of a calibration YAML path (None for ""); ValueError (CameraError) naming the problem."""
    return load_camera_yaml(path) if path else None


def main(args: list[str] | None = None) -> int:
    """Run the matcher node until shutdown; 1 with one fatal log line when it cannot start."""
    return run(_process_matcher, args, name=NODE_NAME)


def _process_matcher() -> MatcherNode:
    """The node as its own process runs it: torch's CPU threads set from ``num_threads``. Process-wide, so not in
    the constructor (a node built inside another program leaves that program's threads alone)."""
    node = MatcherNode()
    threads = node.get_parameter("num_threads").value
    if threads > 0:
        torch.set_num_threads(threads)
    return node


if __name__ == "__main__":
    raise SystemExit(main())

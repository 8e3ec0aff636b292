"""ROS 2 node `matcher`: Features in, FrameMatch (homography reference -> current) out.

Subscribes to ``features`` (usp_ros/Features), matches each frame against the previous frame or
the last keyframe (usp_core.geometry.tracking), and publishes ``matches`` (usp_ros/FrameMatch) with the
current frame's header. ``matches/debug_image`` (the current frame with each inlier's track through its
positions in the last frames (usp_core.geometry.tracking.TrackTrails), a capped and evenly spread sample of them,
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
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import Image

from usp_core.geometry.match_result import MatchResult
from usp_core.geometry.tracking import METHODS, Frame, FrameTracker, KeyframeConfig, MatchConfig, TrackTrails
from usp_core.inference.features import Features as NumpyFeatures
from usp_core.support.device import resolve_device
from usp_core.support.drawing import draw_tracks
from usp_core.support.frame_queue import FrameQueue, QueueWorker
from usp_ros.bridge.images import ConversionError, image_to_numpy, numpy_to_image, to_bgr8
from usp_ros.bridge.messages import frame_match_to_msg, msg_to_features
from usp_ros.msg import Features, FrameMatch
from usp_ros.support.diagnostics import PERIOD_S, PUBLISHED, RECEIVED, Statistics, diagnostics_message
from usp_ros.support.parameters import NodeParameters, ParameterSpec
from usp_ros.support.qos import choose_input_reliability, input_qos, output_qos, publisher_reliabilities
from usp_ros.support.run import run
from usp_ros.support.stamps import StampCache, stamp_key, stamp_ns

__all__ = ["MatcherNode", "PARAMETERS", "main", "tracker_configs"]

NODE_NAME = "matcher"
IMAGE_CACHE = 64  # images kept for pairing with features by stamp (about 2 s at 30 Hz)
THROTTLE_S = 5.0  # at most one warning per this many seconds for a repeated problem
DEBUG_SUBSCRIPTION_CHECK_S = 0.25  # how often the node looks whether matches/debug_image has subscribers
COUNTERS = ("valid", "bad", "non_finite")  # besides received and published
WARNINGS = {"bad": "bad Features skipped", "non_finite": "non-finite rows dropped"}  # diagnostics: WARN when these rise

PARAMETERS: dict[str, ParameterSpec] = {
    "device": ParameterSpec("auto", "torch device for matching: auto (cuda when available), cpu, cuda or cuda:N"),
    "num_threads": ParameterSpec(1, "torch CPU threads for matching, read at start; 0 = torch's default (one per "
                                    "core). 1 leaves the other cores to the detector",
                                 read_only=True, integer_range=(0, 256)),
    "ratio_test": ParameterSpec(0.0, "Lowe's ratio test applied both ways in (0, 1]; 0 disables it",
                                float_range=(0.0, 1.0)),
    "method": ParameterSpec("ransac", "robust homography estimator: ransac (cv2.RANSAC) or magsac (cv2.USAC_MAGSAC)",
                            choices=METHODS),
    "reprojection_threshold": ParameterSpec(3.0, "inlier threshold of the homography, pixels",
                                            float_range=(0.1, 100.0)),
    "min_inliers": ParameterSpec(15, "fewer inliers than this gives valid=false", integer_range=(4, 100000)),
    "keyframe_mode": ParameterSpec(False, "true: match against the last keyframe; false: against the previous frame"),
    "keyframe_inlier_fraction": ParameterSpec(0.5, "keyframe mode: take a new keyframe when inliers fall below this "
                                                   "fraction of the keyframe's first match", float_range=(0.0, 1.0)),
}


def tracker_configs(values: dict) -> tuple[MatchConfig, KeyframeConfig]:
    """Parameter values -> the FrameTracker's configs; ValueError names the bad one."""
    match = MatchConfig(float(values["ratio_test"]), values["method"], float(values["reprojection_threshold"]),
                        int(values["min_inliers"]))
    keyframe = KeyframeConfig("keyframe" if values["keyframe_mode"] else "previous",
                              float(values["keyframe_inlier_fraction"]))
    return match, keyframe


def debug_caption(result: MatchResult, stamp, mode: str) -> str:
    """The numbers of one match for the debug image's caption; ``mode``: what the reference is (previous/keyframe).

    "valid: 719 matches, 700 inliers | tracks 700 kept, 300 new | previous 33 ms before"
    """
    state = "valid" if result.valid else "INVALID"
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
        self._stats = Statistics(COUNTERS)
        self._images_lock = threading.Lock()  # the image cache: filled by the executor, read by the worker
        self._images = StampCache(IMAGE_CACHE)
        self._trails = TrackTrails()  # the live tracks' positions: the worker's alone, while the debug image is viewed
        self._image_subscription = None
        self._match_pub = self.create_publisher(FrameMatch, "matches", output_qos())
        self._debug_pub = self.create_publisher(Image, "matches/debug_image", output_qos(depth=2))
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", output_qos())
        self._queue: FrameQueue[Features] = FrameQueue(depth=1, policy="drop_oldest")
        self._worker = QueueWorker(self._queue, self._process, self._on_worker_error, name="matcher").start()
        # Features are ~1 MB (1000 x 256 floats): reliable, as our detector publishes them (a best-effort
        # reader of samples that large loses them unless the publisher has a large shared-memory segment).
        self._subscription = self.create_subscription(Features, "features", self._on_features,
                                                      input_qos(ReliabilityPolicy.RELIABLE, 2))
        self.create_timer(DEBUG_SUBSCRIPTION_CHECK_S, self._update_debug_subscription)
        self.create_timer(PERIOD_S, self._publish_diagnostics)
        self.get_logger().info(f"matching on {self._device}, reference: {self._tracker.policy.config.mode}, "
                               f"method: {self._tracker.match_config.method}")

    def destroy_node(self) -> None:
        """Stop the worker thread (waits for the frame in hand), then destroy the node."""
        if self._worker is not None:
            self._worker.stop()
        super().destroy_node()

    # ---- parameters ----------------------------------------------------------------------------------

    def _validate(self, values: dict) -> None:
        """ValueError for a device this machine lacks or a config the tracker refuses."""
        resolve_device(values["device"])
        tracker_configs(values)

    def _apply(self, values: dict) -> None:
        """Under the worker's lock: the device (the worker restarts the track there) and the tracker's configs."""
        self._device = resolve_device(values["device"])
        self._tracker.match_config, self._tracker.policy.config = tracker_configs(values)

    # ---- worker thread -------------------------------------------------------------------------------

    def _on_features(self, msg: Features) -> None:
        self._stats.count(RECEIVED)
        self._queue.put(msg)

    def _on_worker_error(self, msg: Features, error: BaseException) -> None:
        if not self.context.ok():
            return  # shutting down: publishing failed because the context is gone
        self.get_logger().error(f"matching failed: {error!r}", throttle_duration_sec=THROTTLE_S)

    def _process(self, msg: Features) -> None:
        """Worker thread: convert, drop non-finite rows, match, publish."""
        try:
            features = msg_to_features(msg)
        except ConversionError as error:
            self._stats.count("bad")
            self.get_logger().warning(f"skipping malformed Features: {error}", throttle_duration_sec=THROTTLE_S)
            return
        with self._lock:
            frame = self._finite_frame(msg.header.stamp, features)
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
        if result is None:
            return
        self._match_pub.publish(frame_match_to_msg(msg.header, result))
        self._stats.count(PUBLISHED, seconds=elapsed)
        self._stats.count("valid", int(result.valid))
        if self._image_subscription is not None:
            self._publish_debug_image(msg, result, mode)

    def _finite_frame(self, stamp, features: NumpyFeatures) -> Frame | None:
        """The Frame of the rows with finite values; None (counted, logged) when fewer than min_inliers are left."""
        frame = Frame.from_features(stamp, features, self._device)
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
            self.get_logger().debug("no image with the stamp of the features: debug image skipped")
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
        }
        self._diagnostics_pub.publish(diagnostics_message(
            self.get_clock().now().to_msg(), f"{self.get_fully_qualified_name()}: matcher", str(self._device), period,
            WARNINGS, f"waiting for Features on {self._subscription.topic_name}", values))


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

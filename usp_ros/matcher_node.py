"""ROS 2 node `matcher`: Features in, FrameMatch (homography reference -> current) out.

Subscribes to ``features`` (usp_ros/Features), matches each frame against the previous frame or
the last keyframe (usp_ros.keyframes), and publishes ``matches`` (usp_ros/FrameMatch) with the
current frame's header. ``matches/debug_image`` (the two frames side by side with the inlier
matches drawn) is built only while someone subscribes to it, and only then does the node subscribe
to ``image`` (images are paired with features by header stamp). Matching runs in a worker thread
behind a drop-oldest queue of depth 1, so the executor only enqueues. Malformed Features are logged
(throttled), counted as bad frames and skipped. Diagnostics go to /diagnostics once a second.

Non-finite values: rows (keypoints) whose x, y or descriptor hold NaN or inf are dropped before
matching and counted ("non-finite rows dropped"). When that leaves fewer rows than ``min_inliers``
(so no valid homography could come of the frame), the frame is rejected: logged (throttled),
counted as a bad frame, never matched and never made the reference, so the next good frame is
matched against the last good one. The inlier indices of a FrameMatch are rows of the Features
messages as published, dropped rows included. Scores are not used and not checked.

Track ids (usp_ros.keyframes): each FrameMatch carries one id per row of the current Features; an
inlier inherits its reference keypoint's id, other rows get ids never used before by this node (a
counter from 1), dropped rows get 0 (no track). A restarted track (reset, device change) starts with
fresh ids.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from usp_core.device import resolve_device
from usp_ros.conversions import (ConversionError, FeatureArrays, finite_rows, frame_match_to_msg,
                                 image_to_numpy, msg_to_features, numpy_to_image, to_bgr8)
from usp_ros.drawing import draw_matches
from usp_ros.frame_queue import FrameQueue, QueueWorker
from usp_ros.keyframes import Frame, FrameTracker, KeyframeConfig, MatchConfig, MatchResult
from usp_ros.msg import Features, FrameMatch
from usp_ros.parameters import describe
from usp_ros.qos import choose_input_reliability, input_qos, output_qos, publisher_reliabilities
from usp_ros.stamps import StampCache, stamp_key

__all__ = ["MatcherNode", "default_values", "main", "match_to_msg", "tracker_configs"]

IMAGE_CACHE = 64  # images kept for pairing with features by stamp (about 2 s at 30 Hz)
THROTTLE_S = 5.0  # at most one warning per this many seconds for a repeated problem


@dataclass
class Counters:
    """What the diagnostics report; totals since start, rates over the last period."""

    received: int = 0
    dropped: int = 0
    published: int = 0
    valid: int = 0
    bad: int = 0
    nonfinite_rows: int = 0
    match_seconds: float = 0.0


PARAMETERS = {  # name: (default, description, range keywords of describe())
    "device": ("auto", "torch device for matching: auto (cuda when available), cpu, cuda or cuda:N", {}),
    "num_threads": (1, "torch CPU threads for matching, read at start; 0 = torch's default (one per core). 1 leaves "
                       "the other cores to the detector", {"integer_range": (0, 256)}),
    "ratio_test": (0.0, "Lowe's ratio test applied both ways in (0, 1]; 0 disables it", {"float_range": (0.0, 1.0)}),
    "method": ("ransac", "robust homography estimator: ransac (cv2.RANSAC) or magsac (cv2.USAC_MAGSAC)", {}),
    "reprojection_threshold": (3.0, "inlier threshold of the homography, pixels",
                               {"float_range": (0.1, 100.0)}),
    "min_inliers": (15, "fewer inliers than this gives valid=false", {"integer_range": (4, 100000)}),
    "keyframe_mode": (False, "true: match against the last keyframe; false: against the previous frame", {}),
    "keyframe_inlier_fraction": (0.5, "keyframe mode: take a new keyframe when inliers fall below this fraction of "
                                      "the keyframe's first match", {"float_range": (0.0, 1.0)}),
}


READ_ONLY = {"num_threads"}  # applied once at start


def default_values() -> dict:
    """Every parameter's default value, by name."""
    return {name: default for name, (default, _, _) in PARAMETERS.items()}


def tracker_configs(values: dict) -> tuple[MatchConfig, KeyframeConfig]:
    """Parameter values -> the FrameTracker's configs; ValueError names the bad one."""
    match = MatchConfig(float(values["ratio_test"]), values["method"], float(values["reprojection_threshold"]),
                        int(values["min_inliers"]))
    keyframe = KeyframeConfig("keyframe" if values["keyframe_mode"] else "previous",
                              float(values["keyframe_inlier_fraction"]))
    return match, keyframe


def match_to_msg(header: Header, reference: Frame, frame: Frame, result: MatchResult, num_rows: int) -> FrameMatch:
    """The tracker's result for ``frame`` against ``reference`` -> usp_ros/FrameMatch; inlier indices and track ids
    refer to the rows of the Features messages (``num_rows`` in the current one), rows left out included."""
    return frame_match_to_msg(header, result.reference_stamp, result.homography, result.num_matches,
                              reference.source_rows(result.reference_indices), frame.source_rows(result.current_indices),
                              result.reference_points, result.current_points,
                              frame.ids_by_row(result.current_track_ids, num_rows))


class MatcherNode(Node):
    """Matches consecutive Features messages and publishes their homography (see the module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("matcher", **kwargs)
        self.queue: FrameQueue[Features] = FrameQueue(depth=1, policy="drop_oldest")
        self.worker = QueueWorker(self.queue, self._process, self._on_worker_error, name="matcher")
        for name, (default, description, value_range) in PARAMETERS.items():
            self.declare_parameter(name, default, describe(description, read_only=name in READ_ONLY, **value_range))
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.device = resolve_device(values["device"])
        self.tracker = FrameTracker(*tracker_configs(values))
        self.counters = Counters()
        self._last_counters = Counters()
        self._lock = threading.Lock()
        self._images = StampCache(IMAGE_CACHE)
        self._reference_image: Image | None = None
        self._image_subscription = None
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.match_publisher = self.create_publisher(FrameMatch, "matches", output_qos())
        self.debug_publisher = self.create_publisher(Image, "matches/debug_image", output_qos(depth=2))
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", output_qos())
        # Features are ~1 MB (1000 x 256 floats): reliable, as our detector publishes them (a best-effort
        # reader of samples that large loses them unless the publisher has a large shared-memory segment).
        self.create_subscription(Features, "features", self._on_features, input_qos(ReliabilityPolicy.RELIABLE, 2))
        self.create_timer(0.25, self._update_debug_subscription)
        self.create_timer(1.0, self._publish_diagnostics)
        self.worker.start()
        self.get_logger().info(f"matching on {self.device}, reference: "
                               f"{self.tracker.policy.config.mode}, method: {self.tracker.match_config.method}")

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        values.update({p.name: p.value for p in parameters if p.name in PARAMETERS})
        try:
            device = resolve_device(values["device"])
            match, keyframe = tracker_configs(values)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        self.device = device  # the worker restarts the track when the reference lives on another device
        self.tracker.match_config = match
        self.tracker.policy.config = keyframe
        return SetParametersResult(successful=True)

    def destroy_node(self) -> None:
        self.worker.stop()
        super().destroy_node()

    def _on_features(self, msg: Features) -> None:
        with self._lock:
            self.counters.received += 1
        self.queue.put(msg)

    def _on_worker_error(self, msg: Features, error: BaseException) -> None:
        if not self.context.ok():
            return  # shutting down: publishing failed because the context is gone
        self.get_logger().error(f"matching failed: {error!r}", throttle_duration_sec=THROTTLE_S)

    def _process(self, msg: Features) -> None:
        """Worker thread: convert, drop non-finite rows, match, publish."""
        try:
            arrays = msg_to_features(msg)
        except ConversionError as error:
            with self._lock:
                self.counters.bad += 1
            self.get_logger().warning(f"skipping malformed Features: {error}", throttle_duration_sec=THROTTLE_S)
            return
        frame = self._finite_frame(msg, arrays)
        if frame is None:
            return
        reference = self.tracker.reference
        if reference is not None and reference.descriptors.device != frame.descriptors.device:
            self.tracker.reset()
            reference = None
        started = time.perf_counter()
        result = self.tracker.track(frame)
        elapsed = time.perf_counter() - started
        self._keep_reference_image(msg.header.stamp)
        if result is None:
            return
        self.match_publisher.publish(match_to_msg(msg.header, reference, frame, result, len(arrays.keypoints)))
        with self._lock:
            self.counters.published += 1
            self.counters.valid += int(result.valid)
            self.counters.match_seconds += elapsed
        if self._image_subscription is not None:
            self._publish_debug_image(msg, result)

    def _finite_frame(self, msg: Features, arrays: FeatureArrays) -> Frame | None:
        """The Frame of the rows with finite values; None (counted, logged) when fewer than min_inliers are left."""
        rows = np.flatnonzero(finite_rows(arrays.keypoints, arrays.descriptors))
        total = len(arrays.keypoints)
        dropped = total - len(rows)
        if not dropped:
            return Frame(msg.header.stamp, arrays.keypoints, torch.from_numpy(arrays.descriptors).to(self.device))
        min_inliers = self.tracker.match_config.min_inliers
        rejected = len(rows) < min_inliers
        with self._lock:
            self.counters.nonfinite_rows += dropped
            self.counters.bad += int(rejected)
        if rejected:
            self.get_logger().warning(f"skipping Features with NaN or inf in {dropped} of {total} rows: "
                                      f"{len(rows)} left, fewer than min_inliers ({min_inliers})",
                                      throttle_duration_sec=THROTTLE_S)
            return None
        self.get_logger().warning(f"dropped {dropped} of {total} Features rows holding NaN or inf",
                                  throttle_duration_sec=THROTTLE_S)
        return Frame(msg.header.stamp, arrays.keypoints[rows],
                     torch.from_numpy(arrays.descriptors[rows]).to(self.device), rows)

    def _keep_reference_image(self, stamp) -> None:
        """Hold the reference frame's image while it is the reference (a keyframe may outlive the cache)."""
        if self._image_subscription is not None and self.tracker.reference is not None \
                and self.tracker.reference.stamp == stamp:
            with self._lock:
                self._reference_image = self._images.get(stamp_key(stamp))

    def _publish_debug_image(self, msg: Features, result: MatchResult) -> None:
        with self._lock:
            current = self._images.get(stamp_key(msg.header.stamp))
            reference = self._images.get(stamp_key(result.reference_stamp), self._reference_image)
        if current is None or reference is None or stamp_key(reference.header.stamp) != stamp_key(
                result.reference_stamp):
            self.get_logger().debug("no image with the stamp of the features: debug image skipped")
            return
        try:
            canvas = draw_matches(to_bgr8(image_to_numpy(reference), reference.encoding),
                                  to_bgr8(image_to_numpy(current), current.encoding),
                                  result.reference_points, result.current_points)
        except ConversionError as error:
            self.get_logger().warning(f"cannot draw debug image: {error}", throttle_duration_sec=THROTTLE_S)
            return
        self.debug_publisher.publish(numpy_to_image(canvas, "bgr8", msg.header))

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            self._images.put(msg.header.stamp, msg)

    def _update_debug_subscription(self) -> None:
        """Subscribe to `image` only while `matches/debug_image` has subscribers."""
        wanted = self.debug_publisher.get_subscription_count() > 0
        if wanted and self._image_subscription is None:
            self._image_subscription = self.create_subscription(Image, "image", self._on_image, self._image_qos())
        elif not wanted and self._image_subscription is not None:
            self.destroy_subscription(self._image_subscription)
            self._image_subscription = None
            with self._lock:
                self._images.clear()
                self._reference_image = None

    def _image_qos(self):
        """Images: the reliability of the publishers on `image` (best-effort when none is seen yet)."""
        reliability, _ = choose_input_reliability("auto", publisher_reliabilities(self, "image"))
        return input_qos(reliability, depth=5)

    def _publish_diagnostics(self) -> None:
        with self._lock:
            now = replace(self.counters, dropped=self.queue.dropped)
            last, self._last_counters = self._last_counters, now
        published = now.published - last.published
        match_ms = 1000.0 * (now.match_seconds - last.match_seconds) / published if published else float("nan")
        values = {
            "input rate (Hz)": now.received - last.received,
            "output rate (Hz)": published,
            "match + homography ms": f"{match_ms:.2f}",
            "valid matches (last second)": now.valid - last.valid,
            "dropped frames": now.dropped,
            "bad frames": now.bad,
            "non-finite rows dropped": now.nonfinite_rows,
            "device": self.device,
            "reference": self.tracker.policy.config.mode,
        }
        warn = now.bad > last.bad or now.nonfinite_rows > last.nonfinite_rows
        status = DiagnosticStatus(level=DiagnosticStatus.WARN if warn else DiagnosticStatus.OK,
                                  name=f"{self.get_name()}: matcher", hardware_id=str(self.device),
                                  message="bad Features or non-finite rows in the last second" if warn else "ok",
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        header = Header(stamp=self.get_clock().now().to_msg())
        self.diagnostics_publisher.publish(DiagnosticArray(header=header, status=[status]))


def main(args=None) -> int:
    """Entry point of `ros2 run usp_ros matcher_node`."""
    rclpy.init(args=args)
    try:
        node = MatcherNode()
    except ValueError as error:
        rclpy.logging.get_logger("matcher").error(f"cannot start: {error}")
        rclpy.try_shutdown()
        return 1
    threads = node.get_parameter("num_threads").value
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

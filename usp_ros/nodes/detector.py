"""ROS 2 node ``detector``: camera images in, UnsuperPoint keypoints and descriptors out.

Subscribes to ``image`` (sensor_msgs/Image), or ``image/compressed`` with ``input_transport:
compressed``; publishes ``features`` (usp_ros/Features, the input header copied, keypoints in the
input image's pixels) and, only while someone subscribes, ``features/debug_image`` (the input with
the keypoints drawn, coloured by their score's rank, and a caption with their count and the time the frame took).
Diagnostics go to ``/diagnostics`` once a second (usp_ros.support.diagnostics; "inference (ms)" is the
mean time from message to Features: decoding, grey conversion, network and selection).

The network runs in the ``backend`` parameter's runtime (usp_core.inference.backends; ``auto``: OpenVINO on a
CPU, torch on CUDA), prepared at start so that the start log line and the diagnostics name it. A
runtime change of ``device`` that resolves to another device prepares a detector there while the
old one keeps running (an export can take seconds), swaps it in once ready, and is refused, with the
reason, when the backend cannot run there.

The executor thread only queues incoming messages; a worker thread converts, runs the model and
publishes, behind a drop-oldest queue of depth 1 (``queue_policy``/``queue_depth``), so a slow model
drops frames instead of building a backlog. Bad frames are logged (throttled), counted and skipped.

The work one frame can cost is bounded: the input size is read before decoding (a compressed image's
header), frames over ``max_input_pixels`` are skipped and counted as oversized, the network runs with
no side over ``max_inference_side``, and a JPEG larger than the network input is decoded reduced
(usp_ros.support.detection). Keypoints whose position, score or descriptor holds NaN or inf are dropped
before publishing.

Run: ``ros2 run usp_ros detector_node --ros-args --params-file config/detector.yaml -r image:=/camera/image_raw``
(compressed input: ``-p input_transport:=compressed -r image/compressed:=/camera/image_raw/compressed``;
a remap of ``image`` does not rename ``image/compressed``).
The managed (lifecycle) variant is usp_ros.nodes.lifecycle_detector, built on this module's DetectorCore.
"""
from __future__ import annotations

import copy
import threading
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from usp_core.inference.backends.base import BACKENDS, BackendError, check
from usp_core.inference.detector import MAX_NMS_RADIUS, DetectorConfig, KeypointDetector
from usp_core.inference.precision import PRECISIONS
from usp_core.inference.weights import shipped_models
from usp_core.support.checkpoint import CheckpointError
from usp_core.support.device import resolve_device
from usp_core.support.drawing import caption, draw_keypoints
from usp_core.support.frame_queue import POLICIES, FrameQueue, QueueWorker
from usp_ros.bridge.images import ConversionError, numpy_to_image, to_bgr8
from usp_ros.bridge.messages import features_to_msg
from usp_ros.msg import Features
from usp_ros.support.detection import Detection, detect_image_message, input_size
from usp_ros.support.diagnostics import PERIOD_S, PUBLISHED, RECEIVED, Statistics, diagnostics_message
from usp_ros.support.parameters import NodeParameters, ParameterSpec
from usp_ros.support.qos import (INPUT_QOS_CHOICES, choose_input_reliability, input_qos, output_qos,
                                 publisher_reliabilities, reliability_from_publishers, reliability_name)
from usp_ros.support.run import run

__all__ = ["DetectorCore", "DetectorNode", "PARAMETERS", "START_ERRORS", "detector_config", "main"]

NODE_NAME = "detector"
TRANSPORTS = ("raw", "compressed")
BAD_FRAME_LOG_PERIOD_S = 5.0  # at most one "bad frame" warning per this many seconds
QOS_RECHECK_PERIOD_S = 1.0  # input_qos auto with no publisher yet: look again this often
MAX_INFERENCE_SIDE = 8192
MAX_INPUT_PIXELS = 80_000_000  # upper end of max_input_pixels' range (Pillow, our JPEG decoder, warns from 89 MP on)
START_ERRORS = (CheckpointError, BackendError, ValueError, ParameterException)  # an unusable model or parameter
COUNTERS = ("bad", "oversized", "non_finite", "debug_images")  # besides received and published
WARNINGS = {"bad": "bad frame(s) skipped", "oversized": "oversized frame(s) skipped"}  # WARN when these rise

PARAMETERS: dict[str, ParameterSpec] = {
    "model_path": ParameterSpec(
        "", "Checkpoint written by usp-train (UnsuperPoint or SuperPoint) or a shipped model's name "
            f"({', '.join(shipped_models())}); empty = the bundled weights", read_only=True),
    "device": ParameterSpec("auto", "Inference device: auto (cuda when available, else cpu), cpu, cuda or cuda:N"),
    "backend": ParameterSpec(
        "auto", "Inference runtime: auto (openvino on a CPU, else onnxruntime, else torch; torch on CUDA), torch, "
                "onnxruntime or openvino (these two run on the CPU)", read_only=True, choices=BACKENDS),
    "num_threads": ParameterSpec(
        0, "CPU threads for inference, honoured by every backend (torch: its process-wide count, set before "
           "inference); 0 = the runtime's default (one per core)", read_only=True, integer_range=(0, 256, 1)),
    "precision": ParameterSpec(
        "auto", "What the network computes in: auto (on the CPU the fastest precision that the weights' accuracy gate "
                "passed and the CPU runs, else fp32; fp16 on CUDA), fp32, fp16 or bf16 (CUDA; bf16 also openvino on a "
                "CPU with AMX or AVX512_BF16) or int8 (openvino, calibrated on calibration_dir)",
        read_only=True, choices=PRECISIONS),
    "calibration_dir": ParameterSpec(
        "", "precision int8: folder of photos like the camera's to calibrate on (quantised once per size, cached "
            "in ~/.cache/usp_ros); empty = $USP_ROS_CALIBRATION_DIR", read_only=True),
    "inference_width": ParameterSpec(
        0, "Width the network runs at (multiple of 8); 0 = the input's (or kept aspect when only inference_height "
           "is set). Keypoints are always in input pixels", integer_range=(0, MAX_INFERENCE_SIDE, 8)),
    "inference_height": ParameterSpec(
        0, "Height the network runs at (multiple of 8); 0 = the input's (or kept aspect when only inference_width "
           "is set)", integer_range=(0, MAX_INFERENCE_SIDE, 8)),
    "max_inference_side": ParameterSpec(
        1280, "Longest side the network runs at (multiple of 8): larger inputs, and larger inference_width/height, "
              "are scaled down with the aspect kept; 0 = no limit. 1280 runs HD (1280x720) frames at full size and "
              "a 4000x3000 frame at 1280x960 (about 4x the cost of 640x480) rather than at 12 MP, where it took "
              "gigabytes and seconds", integer_range=(0, MAX_INFERENCE_SIDE, 8)),
    "max_input_pixels": ParameterSpec(
        50_000_000, "Frames with more pixels (width x height, read before decoding) are skipped and counted as "
                    "oversized; 50 MP admits 8000x6000", integer_range=(1, MAX_INPUT_PIXELS, 1)),
    "max_keypoints": ParameterSpec(1000, "Keep at most this many keypoints per image, best scores first",
                                   integer_range=(1, 100000, 1)),
    "score_threshold": ParameterSpec(0.0, "Keep keypoints with score >= this", float_range=(0.0, 1.0)),
    "border": ParameterSpec(4, "Drop keypoints closer than this many pixels (of the network input) to the image edge",
                            integer_range=(0, 256, 1)),
    "nms_radius": ParameterSpec(
        0, "Optional: drop keypoints that have a higher-scoring kept keypoint within this many pixels (of the "
           "network input); 0 = off. Costs about 2 ms at radius 8 and 5 to 60 ms at 16 for a 640x480 input",
        integer_range=(0, MAX_NMS_RADIUS, 1)),
    "input_transport": ParameterSpec("raw", "raw: subscribe to image (sensor_msgs/Image); compressed: image/compressed",
                                     read_only=True, choices=TRANSPORTS),
    "input_qos": ParameterSpec(
        "auto", "Input reliability: auto (match the image publishers, best_effort until one appears), reliable or "
                "best_effort", read_only=True, choices=INPUT_QOS_CHOICES),
    "queue_policy": ParameterSpec(
        "drop_oldest", "When a frame arrives while the queue is full: drop_oldest (the waiting frame gives way) or "
                       "drop_newest (the arriving one is dropped)", read_only=True, choices=POLICIES),
    "queue_depth": ParameterSpec(1, "Frames waiting for inference at most; 1 keeps latency lowest",
                                 read_only=True, integer_range=(1, 100, 1)),
}


def detector_config(values: dict) -> DetectorConfig:
    """DetectorConfig from parameter values; ValueError (from the config's own checks) when invalid."""
    return DetectorConfig(max_keypoints=values["max_keypoints"], score_threshold=values["score_threshold"],
                          border=values["border"], nms_radius=values["nms_radius"], precision=values["precision"],
                          calibration_dir=values["calibration_dir"], channel_order="bgr",
                          inference_width=values["inference_width"], inference_height=values["inference_height"],
                          max_inference_side=values["max_inference_side"])


class DetectorCore:
    """The detector's work, mixed into a Node: shared by DetectorNode and the managed LifecycleDetectorNode.

    Its steps, in order: ``_declare_parameters`` (validated and applied from then on, see
    usp_ros.support.parameters), ``_create_publishers``, ``_load`` (loads the model, starts the
    worker), ``_start_input`` (subscribes; diagnostics), and back: ``_stop_input``, ``_unload``.
    ``_load`` raises one of START_ERRORS, with nothing created, when the model or a parameter is unusable.
    """

    _detector: KeypointDetector | None = None  # while loaded (a class default: rclpy may destroy a half-built node)
    _pending: KeypointDetector | None = None  # prepared for a new device by _validate, swapped in by _apply

    def _declare_parameters(self) -> None:
        """Declare PARAMETERS; changes are validated against the loaded detector and applied under its lock."""
        self._lock = threading.Lock()  # the worker detects under it; the detector and its config change under it
        self._params = NodeParameters(self, PARAMETERS, self._validate, self._apply, self._lock)

    def _create_publishers(self, create_publisher) -> None:
        """The outputs, made by ``create_publisher`` (Node.create_publisher or create_lifecycle_publisher)."""
        self._features_pub = create_publisher(Features, "features", output_qos())
        self._debug_pub = create_publisher(Image, "features/debug_image", output_qos())
        self._diagnostics_pub = create_publisher(DiagnosticArray, "/diagnostics", output_qos())

    def _load(self) -> None:
        """Check the start values, load and prepare the model, start the worker thread."""
        self._params.check()
        values = self._params.values
        self._device = resolve_device(values["device"])
        detector = KeypointDetector.from_pretrained(values["model_path"] or None, self._device,
                                                    detector_config(values), backend=values["backend"],
                                                    num_threads=values["num_threads"])
        self._backend, self._precision = detector.prepare(), detector.precision
        with self._lock:
            self._detector = detector
        self._stats = Statistics(COUNTERS)
        self._queue: FrameQueue = FrameQueue(values["queue_depth"], values["queue_policy"])
        self._compressed = values["input_transport"] == "compressed"
        self._input_topic = "image/compressed" if self._compressed else "image"
        self._worker = QueueWorker(self._queue, self._process, self._on_worker_error, name="detector-inference")
        self._worker.start()

    def _unload(self) -> None:
        """Undo ``_load``: stop the worker (waits for the frame in hand), free the model; nothing when not loaded."""
        if self._detector is None:
            return
        self._worker.stop()
        with self._lock:
            self._detector = self._pending = None

    def _start_input(self) -> None:
        """Subscribe to the images and publish diagnostics."""
        self._subscription = self._qos_timer = self._input_reliability = None
        self._subscribe(publisher_reliabilities(self, self._input_topic))
        self._diagnostics_timer = self.create_timer(PERIOD_S, self._publish_diagnostics)

    def _stop_input(self) -> None:
        """Undo ``_start_input``: no more frames in, no more diagnostics."""
        self.destroy_subscription(self._subscription)
        for timer in (self._qos_timer, self._diagnostics_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._subscription = self._qos_timer = self._diagnostics_timer = None

    def _describe(self) -> str:
        """One line for the log: input -> output, device, backend and precision, model."""
        values = self._params.values
        return (f"{self.resolve_topic_name(self._input_topic)} -> {self._features_pub.topic_name} on {self._device} "
                f"with backend {self._backend} in {self._precision}, "
                f"model {values['model_path'] or 'bundled weights'}, max_keypoints {values['max_keypoints']}")

    def destroy_node(self) -> None:
        """Stop the worker thread (waits for the frame in hand) and free the model, then destroy the node."""
        self._unload()
        super().destroy_node()

    # ---- input -------------------------------------------------------------------------------------

    def _subscribe(self, publishers) -> None:
        """(Re)create the image subscription with the reliability ``input_qos`` calls for."""
        setting = self._params.values["input_qos"]
        policy, settled = choose_input_reliability(setting, publishers)
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
        message_type = CompressedImage if self._compressed else Image
        self._subscription = self.create_subscription(message_type, self._input_topic, self._on_image,
                                                      input_qos(policy))
        self._input_reliability = policy
        if not settled:
            how = "no publisher yet, best-effort until one appears"
            self._qos_timer = self._qos_timer or self.create_timer(QOS_RECHECK_PERIOD_S, self._recheck_qos)
        else:
            how = "matching the publishers" if setting == "auto" else "input_qos parameter"
        self.get_logger().info(f"subscribed to {self._subscription.topic_name} as {reliability_name(policy)} ({how})")

    def _recheck_qos(self) -> None:
        """input_qos auto: once publishers appear, match their reliability and stop looking."""
        publishers = publisher_reliabilities(self, self._input_topic)
        if not publishers:
            return
        self.destroy_timer(self._qos_timer)
        self._qos_timer = None
        if reliability_from_publishers(publishers) != self._input_reliability:
            self._subscribe(publishers)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self._stats.count(RECEIVED)
        self._queue.put(msg)

    # ---- worker thread -------------------------------------------------------------------------------

    def _process(self, msg: Image | CompressedImage) -> None:
        """Worker: check the size, detect, publish Features (and the debug image when subscribed)."""
        limit = self._params.values["max_input_pixels"]
        try:
            width, height = input_size(msg)
            if width * height > limit:
                self._skip_oversized_frame(width, height, limit)
                return
            start = time.perf_counter()
            with self._lock:
                detection = detect_image_message(self._detector, msg)
            elapsed = time.perf_counter() - start
        except (ConversionError, cv2.error) as error:
            self._skip_bad_frame(str(error).strip().splitlines()[0])
            return
        self._count_non_finite(detection.non_finite)
        self._features_pub.publish(features_to_msg(msg.header, detection.features))
        self._stats.count(PUBLISHED, seconds=elapsed)
        if self._debug_pub.get_subscription_count() > 0:
            self._publish_debug_image(msg, detection, elapsed)

    def _publish_debug_image(self, msg: Image | CompressedImage, detection: Detection, elapsed: float) -> None:
        """The decoded image (which a JPEG may have reduced) with the keypoints coloured by score, and a caption."""
        height, width = detection.image.shape[:2]
        features = detection.features.resized((width, height))
        canvas = draw_keypoints(to_bgr8(detection.image, detection.encoding), features.keypoints, features.scores)
        caption(canvas, f"{len(features)} keypoints, {1000.0 * elapsed:.1f} ms")
        self._debug_pub.publish(numpy_to_image(canvas, "bgr8", msg.header))
        self._stats.count("debug_images")

    def _count_non_finite(self, rows: int) -> None:
        if rows:
            self._stats.count("non_finite", rows)
            self.get_logger().warning(f"dropped keypoints with NaN or inf ({self._stats.total('non_finite')} so far)",
                                      throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S)

    def _skip_oversized_frame(self, width: int, height: int, limit: int) -> None:
        self._stats.count("oversized")
        self.get_logger().warning(f"skipping oversized frame ({self._stats.total('oversized')} so far): "
                                  f"{width}x{height} is over max_input_pixels {limit}",
                                  throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S)

    def _skip_bad_frame(self, reason: str) -> None:
        self._stats.count("bad")
        self.get_logger().warning(f"skipping bad frame ({self._stats.total('bad')} so far): {reason}",
                                  throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S)

    def _on_worker_error(self, msg, error: BaseException) -> None:
        if not self.context.ok():
            return  # shutting down: publishing failed because the context is gone, not because of the frame
        self._skip_bad_frame(f"{type(error).__name__}: {error}")

    # ---- parameters ----------------------------------------------------------------------------------

    def _validate(self, values: dict) -> None:
        """Raise (ValueError, or BackendError when the model cannot go there) for an unusable device or config.

        A device that resolves to another one gets a loaded detector prepared there now, outside the
        lock, so the worker keeps detecting meanwhile; ``_apply`` swaps it in.
        """
        device = resolve_device(values["device"])
        check(values["backend"], device)
        config = detector_config(values)
        loaded = self._detector is not None
        self._pending = self._prepared_on(device, config) if loaded and device != self._device else None

    def _prepared_on(self, device, config: DetectorConfig) -> KeypointDetector:
        """A copy of the detector with its model on ``device`` and its backend prepared (an export: seconds)."""
        current = self._detector
        detector = KeypointDetector(copy.deepcopy(current.model).to(device), config, current.requested_backend,
                                    current.num_threads, current.cache_dir, current.gate)
        detector.prepare()
        return detector

    def _apply(self, values: dict) -> None:
        """Under the lock: swap in a detector prepared for a new device, set the config (nothing while unloaded)."""
        if self._detector is None:
            return
        if self._pending is not None:
            self._detector, self._pending = self._pending, None
            self._device, self._backend = self._detector.device, self._detector.backend
            self._precision = self._detector.precision
        self._detector.config = detector_config(values)

    # ---- diagnostics ---------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        period = self._stats.take_period()
        values = {
            "inference (ms)": f"{period.mean_ms.get(PUBLISHED, float('nan')):.2f}",
            "dropped frames": self._queue.dropped,
            "bad frames": period.totals["bad"],
            "oversized frames": period.totals["oversized"],
            "non-finite keypoints dropped": period.totals["non_finite"],
            "debug images": period.totals["debug_images"],
            "device": str(self._device),
            "backend": self._backend,
            "precision": self._precision,
            "input topic": self._subscription.topic_name,
            "input QoS": reliability_name(self._input_reliability),
        }
        self._diagnostics_pub.publish(diagnostics_message(
            self.get_clock().now().to_msg(), f"{self.get_fully_qualified_name()}: keypoint detector", str(self._device),
            period, WARNINGS, f"waiting for images on {self._subscription.topic_name}", values))


class DetectorNode(DetectorCore, Node):
    """Images -> usp_ros/Features (+ debug image, diagnostics), running from construction.

    Raises one of START_ERRORS at start.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        self._create_publishers(self.create_publisher)
        self._load()
        self._start_input()
        self.get_logger().info(f"ready: {self._describe()}")


def main(args: list[str] | None = None) -> int:
    """Run the detector node until shutdown; 1 with one fatal log line when it cannot start."""
    return run(DetectorNode, args, name=NODE_NAME, start_errors=START_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())

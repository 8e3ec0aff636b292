"""ROS 2 node ``detector``: camera images in, UnsuperPoint keypoints and descriptors out.

Subscribes to ``image`` (sensor_msgs/Image), or ``image/compressed`` with ``input_transport:
compressed``; publishes ``features`` (usp_ros/Features, the input header copied, keypoints in the
input image's pixels) and, only while someone subscribes, ``features/debug_image`` (the input with
the keypoints drawn, coloured by score). Diagnostics go to ``/diagnostics`` once a second.

The network runs in the ``backend`` parameter's runtime (usp_core.backends; ``auto``: OpenVINO on a
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
(libjpeg's DCT scaling). Keypoints or descriptors with NaN or inf are dropped before publishing.

Run: ``ros2 run usp_ros detector_node --ros-args --params-file config/detector.yaml -r image:=/camera/image_raw``
(compressed input: ``-p input_transport:=compressed -r image/compressed:=/camera/image_raw/compressed``;
a remap of ``image`` does not rename ``image/compressed``).
The managed (lifecycle) variant is usp_ros.lifecycle_detector_node, built on this module's DetectorCore.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from usp_core.backends import BACKENDS, BackendError, check
from usp_core.checkpoint import CheckpointError, first_line
from usp_core.device import resolve_device
from usp_core.inference import MAX_NMS_RADIUS, DetectorConfig, KeypointDetector
from usp_ros.conversions import (ConversionError, compressed_size, compressed_to_numpy, features_to_msg,
                                 finite_rows, image_to_numpy, numpy_to_image, to_bgr8, to_gray)
from usp_ros.drawing import draw_keypoints
from usp_ros.frame_queue import POLICIES, FrameQueue, QueueWorker
from usp_ros.msg import Features
from usp_ros.parameters import describe
from usp_ros.qos import (INPUT_QOS_CHOICES, choose_input_reliability, input_qos, output_qos,
                         publisher_reliabilities, reliability_from_publishers, reliability_name)

__all__ = ["DetectorCore", "DetectorNode", "decode", "default_values", "detect_finite", "detector_config",
           "inference_size", "input_size", "main", "run", "to_source_pixels"]

NODE_NAME = "detector"
TRANSPORTS = ("raw", "compressed")
BAD_FRAME_LOG_PERIOD_S = 5.0  # at most one "bad frame" warning per this many seconds
DIAGNOSTICS_PERIOD_S = 1.0
QOS_RECHECK_PERIOD_S = 1.0  # input_qos auto with no publisher yet: look again this often
MAX_INFERENCE_SIDE = 8192
MAX_INPUT_PIXELS = 80_000_000  # upper end of max_input_pixels' range (Pillow, our JPEG decoder, warns from 89 MP on)
START_ERRORS = (CheckpointError, BackendError, ValueError, ParameterException)  # an unusable model or parameter


@dataclass(frozen=True)
class _Spec:
    """One declared parameter: default, description, and (optionally) a range or read-only flag."""

    default: object
    description: str
    read_only: bool = False
    integer_range: tuple[int, int, int] | None = None  # (from, to, step)
    float_range: tuple[float, float] | None = None  # (from, to)
    choices: tuple[str, ...] = ()


PARAMETERS: dict[str, _Spec] = {
    "model_path": _Spec("", "Checkpoint written by usp-train (UnsuperPoint or SuperPoint) or a shipped model's "
                        "name (unsuperpoint, unsuperpoint_vgg, superpoint); empty = the bundled weights",
                        read_only=True),
    "device": _Spec("auto", "Inference device: auto (cuda when available, else cpu), cpu, cuda or cuda:N",
                    choices=("auto", "cpu", "cuda", "cuda:N")),
    "backend": _Spec("auto", "Inference runtime: auto (openvino on a CPU, else onnxruntime, else torch; torch on "
                             "CUDA), torch, onnxruntime or openvino (these two run on the CPU)",
                     read_only=True, choices=BACKENDS),
    "num_threads": _Spec(0, "CPU threads for inference, honoured by every backend (torch: its process-wide "
                            "count, set before inference); 0 = the runtime's default (one per core)",
                         read_only=True, integer_range=(0, 256, 1)),
    "half": _Spec(False, "Half precision (float16 autocast) on CUDA; ignored on cpu"),
    "inference_width": _Spec(0, "Width the network runs at (multiple of 8); 0 = the input's (or kept aspect "
                                "when only inference_height is set). Keypoints are always in input pixels",
                             integer_range=(0, MAX_INFERENCE_SIDE, 8)),
    "inference_height": _Spec(0, "Height the network runs at (multiple of 8); 0 = the input's (or kept aspect "
                                 "when only inference_width is set)", integer_range=(0, MAX_INFERENCE_SIDE, 8)),
    "max_inference_side": _Spec(1280, "Longest side the network runs at (multiple of 8): larger inputs, and "
                                      "larger inference_width/height, are scaled down with the aspect kept; "
                                      "0 = no limit. 1280 runs HD (1280x720) frames at full size and a 4000x3000 "
                                      "frame at 1280x960 (about 4x the cost of 640x480) rather than at 12 MP, "
                                      "where it took gigabytes and seconds",
                                integer_range=(0, MAX_INFERENCE_SIDE, 8)),
    "max_input_pixels": _Spec(50_000_000, "Frames with more pixels (width x height, read before decoding) are "
                                          "skipped and counted as oversized; 50 MP admits 8000x6000",
                              integer_range=(1, MAX_INPUT_PIXELS, 1)),
    "max_keypoints": _Spec(1000, "Keep at most this many keypoints per image, best scores first",
                           integer_range=(1, 100000, 1)),
    "score_threshold": _Spec(0.0, "Keep keypoints with score >= this", float_range=(0.0, 1.0)),
    "border": _Spec(4, "Drop keypoints closer than this many pixels (of the network input) to the image edge",
                    integer_range=(0, 256, 1)),
    "nms_radius": _Spec(0, "Optional: drop keypoints that have a higher-scoring kept keypoint within this many "
                           "pixels (of the network input); 0 = off. Costs about 2 ms at radius 8 and 5 to 60 ms "
                           "at 16 for a 640x480 input", integer_range=(0, MAX_NMS_RADIUS, 1)),
    "input_transport": _Spec("raw", "raw: subscribe to image (sensor_msgs/Image); compressed: image/compressed",
                             read_only=True, choices=TRANSPORTS),
    "input_qos": _Spec("auto", "Input reliability: auto (match the image publishers, best_effort until one "
                               "appears), reliable or best_effort", read_only=True, choices=INPUT_QOS_CHOICES),
    "queue_policy": _Spec("drop_oldest", "When a frame arrives while the queue is full: drop_oldest (the waiting "
                                         "frame gives way) or drop_newest (the arriving one is dropped)",
                          read_only=True, choices=POLICIES),
    "queue_depth": _Spec(1, "Frames waiting for inference at most; 1 keeps latency lowest",
                         read_only=True, integer_range=(1, 100, 1)),
}


def inference_size(height: int, width: int, inference_width: int, inference_height: int,
                   max_side: int = 0) -> tuple[int, int] | None:
    """(h, w) the network should run at for a height x width input, or None for the native size.

    0 means "as the input"; when only one side is set the other keeps the aspect ratio (rounded to a
    multiple of 8, at least 8). max_side > 0 then scales the size down, aspect kept and each side rounded
    down to a multiple of 8 (at least 8), until no side exceeds it.
    """
    if inference_width == 0 and inference_height == 0:
        inference_height, inference_width = height, width
    elif inference_height == 0:
        inference_height = max(8, int(round(height * inference_width / width / 8.0)) * 8)
    elif inference_width == 0:
        inference_width = max(8, int(round(width * inference_height / height / 8.0)) * 8)
    size = (inference_height, inference_width)
    if 0 < max_side < max(size):
        size = tuple(max(8, side * max_side // max(size) // 8 * 8) for side in size)
    return None if size == (height, width) else size


def decode(msg: Image | CompressedImage, size: tuple[int, int] | None) -> tuple[np.ndarray, str]:
    """Message -> (array, encoding); a JPEG comes reduced when the network runs at ``size`` (h, w) anyway.

    ConversionError for anything unusable.
    """
    if isinstance(msg, CompressedImage):
        image = compressed_to_numpy(msg, min_size=size)
        return image, "bgr8" if image.ndim == 3 else ("mono16" if image.dtype == np.uint16 else "mono8")
    return image_to_numpy(msg), msg.encoding


def input_size(msg: Image | CompressedImage) -> tuple[int, int]:
    """(width, height) of the frame, without decoding it (a compressed image's header); ConversionError for a
    broken header."""
    return compressed_size(msg) if isinstance(msg, CompressedImage) else (msg.width, msg.height)


def detect_finite(detector: KeypointDetector, grey: np.ndarray,
                  size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(H, W) grey, run at ``size`` (h, w) or at H x W when None -> keypoints (N, 2) in its pixels, scores (N,),
    descriptors (N, D) without the rows holding NaN or inf, and how many rows were dropped."""
    found = detector.detect(grey)[0] if size is None or size == grey.shape[:2] else detector.detect_resized(grey, size)
    keypoints, scores, descriptors = found.numpy()
    finite = finite_rows(keypoints, descriptors, scores)
    if finite.all():
        return keypoints, scores, descriptors, 0
    return keypoints[finite], scores[finite], descriptors[finite], len(finite) - int(finite.sum())


def to_source_pixels(points: np.ndarray, decoded: tuple[int, int], source: tuple[int, int]) -> np.ndarray:
    """(N, 2) (x, y) in a decoded (h, w) image -> the same points in the source (H, W) image.

    Pixel-centre convention, as for the network input: x = (x' + 0.5) W / w - 0.5.
    """
    if decoded == source:
        return points
    scale = np.array([source[1] / decoded[1], source[0] / decoded[0]], dtype=np.float32)
    return (points + 0.5) * scale - 0.5


class _Stats:
    """Counters shared by the executor and worker threads; ``take_period`` reads and restarts the rates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = self.published = self.bad = self.oversized = self.non_finite = self.debug_images = 0
        self._period_start = time.monotonic()
        self._period_received = self._period_published = self._period_bad = self._period_oversized = 0
        self._inference_s = 0.0
        self.last_inference_ms = float("nan")

    def count_received(self) -> None:
        with self._lock:
            self.received += 1
            self._period_received += 1

    def count_bad(self) -> None:
        with self._lock:
            self.bad += 1
            self._period_bad += 1

    def count_oversized(self) -> None:
        with self._lock:
            self.oversized += 1
            self._period_oversized += 1

    def count_non_finite(self, rows: int) -> None:
        with self._lock:
            self.non_finite += rows

    def count_published(self, inference_s: float) -> None:
        with self._lock:
            self.published += 1
            self._period_published += 1
            self._inference_s += inference_s

    def count_debug_image(self) -> None:
        with self._lock:
            self.debug_images += 1

    def take_period(self) -> dict[str, float]:
        """Rates (Hz) and mean inference ms since the last call, plus bad and oversized frames in that period."""
        with self._lock:
            now = time.monotonic()
            elapsed = max(now - self._period_start, 1e-9)
            if self._period_published:
                self.last_inference_ms = 1000.0 * self._inference_s / self._period_published
            period = {"input_hz": self._period_received / elapsed, "output_hz": self._period_published / elapsed,
                      "inference_ms": self.last_inference_ms, "bad_in_period": self._period_bad,
                      "oversized_in_period": self._period_oversized}
            self._period_start = now
            self._period_received = self._period_published = self._period_bad = self._period_oversized = 0
            self._inference_s = 0.0
            return period


class DetectorCore:
    """The detector's work, mixed into a Node: shared by DetectorNode and the managed LifecycleDetectorNode.

    Its steps, in order: ``_declare_parameters``, ``_create_publishers``, ``_load`` (reads the
    parameters, loads the model, starts the worker), ``_start_input`` (subscribes; diagnostics), and
    back: ``_stop_input``, ``_unload``. ``_load`` raises one of START_ERRORS, with nothing created, when
    the model or a parameter is unusable.
    """

    def _declare_parameters(self) -> None:
        """Declare PARAMETERS, with their descriptions and ranges."""
        for name, spec in PARAMETERS.items():
            self.declare_parameter(name, spec.default, describe(
                spec.description, read_only=spec.read_only, integer_range=spec.integer_range,
                float_range=spec.float_range, choices=spec.choices))

    def _create_publishers(self, create_publisher) -> None:
        """The outputs, made by ``create_publisher`` (Node.create_publisher or create_lifecycle_publisher)."""
        self._features_pub = create_publisher(Features, "features", output_qos())
        self._debug_pub = create_publisher(Image, "features/debug_image", output_qos())
        self._diagnostics_pub = create_publisher(DiagnosticArray, "/diagnostics", output_qos())

    def _load(self) -> None:
        """Read the parameters, load and prepare the model, start the worker thread, watch parameter changes."""
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        _check_choices(values)
        self._device = resolve_device(values["device"])
        self._detector = KeypointDetector.from_pretrained(values["model_path"] or None, self._device,
                                                          detector_config(values), backend=values["backend"],
                                                          num_threads=values["num_threads"])
        self._backend = self._detector.prepare()
        self._values = values
        self._lock = threading.Lock()  # the detector, its config and the inference size change under it
        self._pending: KeypointDetector | None = None  # prepared for a new device by _validate_parameters
        self._stats = _Stats()
        self._queue: FrameQueue = FrameQueue(values["queue_depth"], values["queue_policy"])
        self._compressed = values["input_transport"] == "compressed"
        self._input_topic = "image/compressed" if self._compressed else "image"
        self._worker = QueueWorker(self._queue, self._process, self._on_worker_error, name="detector-inference")
        self._worker.start()
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

    def _unload(self) -> None:
        """Undo ``_load``: stop watching parameters, stop the worker (waits for the frame in hand), free the model."""
        self.remove_on_set_parameters_callback(self._validate_parameters)
        self.remove_post_set_parameters_callback(self._apply_parameters)
        self.shutdown()
        with self._lock:
            self._detector = self._pending = None

    def _start_input(self) -> None:
        """Subscribe to the images and publish diagnostics."""
        self._subscription = self._qos_timer = self._input_reliability = None
        self._subscribe(publisher_reliabilities(self, self._input_topic))
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)

    def _stop_input(self) -> None:
        """Undo ``_start_input``: no more frames in, no more diagnostics."""
        self.destroy_subscription(self._subscription)
        for timer in (self._qos_timer, self._diagnostics_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._subscription = self._qos_timer = self._diagnostics_timer = None

    def _describe(self) -> str:
        """One line for the log: input -> output, device, backend, model."""
        return (f"{self.resolve_topic_name(self._input_topic)} -> {self._features_pub.topic_name} on {self._device} "
                f"with backend {self._backend}, model {self._values['model_path'] or 'bundled weights'}, "
                f"max_keypoints {self._values['max_keypoints']}")

    # ---- input -------------------------------------------------------------------------------------

    def _subscribe(self, publishers) -> None:
        """(Re)create the image subscription with the reliability ``input_qos`` calls for."""
        policy, settled = choose_input_reliability(self._values["input_qos"], publishers)
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
            how = "matching the publishers" if self._values["input_qos"] == "auto" else "input_qos parameter"
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
        self._stats.count_received()
        self._queue.put(msg)

    # ---- worker thread -------------------------------------------------------------------------------

    def _process(self, msg: Image | CompressedImage) -> None:
        """Worker: check the size, convert, detect, publish Features (and the debug image when subscribed)."""
        values = self._values
        try:
            width, height = input_size(msg)
            if width * height > values["max_input_pixels"]:
                self._skip_oversized_frame(width, height, values["max_input_pixels"])
                return
            size = inference_size(height, width, values["inference_width"], values["inference_height"],
                                  values["max_inference_side"])
            image, encoding = decode(msg, size)
            grey = to_gray(image, encoding)
        except (ConversionError, cv2.error) as error:
            self._skip_bad_frame(str(error).strip().splitlines()[0])
            return
        start = time.perf_counter()
        keypoints, scores, descriptors = self._detect(grey, size)
        elapsed = time.perf_counter() - start
        source_points = to_source_pixels(keypoints, grey.shape[:2], (height, width))
        self._features_pub.publish(features_to_msg(msg.header, (width, height), source_points, scores, descriptors))
        self._stats.count_published(elapsed)
        if self._debug_pub.get_subscription_count() > 0:  # drawn on the decoded image, which a JPEG may have reduced
            debug = draw_keypoints(to_bgr8(image, encoding), keypoints, scores)
            self._debug_pub.publish(numpy_to_image(debug, "bgr8", msg.header))
            self._stats.count_debug_image()

    def _detect(self, grey: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(H, W) grey -> keypoints (N, 2) in its pixels, scores (N,), descriptors (N, D); non-finite rows dropped."""
        with self._lock:
            keypoints, scores, descriptors, dropped = detect_finite(self._detector, grey, size)
        if dropped:
            self._stats.count_non_finite(dropped)
            self.get_logger().warning(f"dropped keypoints with NaN or inf ({self._stats.non_finite} so far)",
                                      throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S)
        return keypoints, scores, descriptors

    def _skip_oversized_frame(self, width: int, height: int, limit: int) -> None:
        self._stats.count_oversized()
        self.get_logger().warning(f"skipping oversized frame ({self._stats.oversized} so far): {width}x{height} is "
                                  f"over max_input_pixels {limit}", throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S)

    def _skip_bad_frame(self, reason: str) -> None:
        self._stats.count_bad()
        self.get_logger().warning(f"skipping bad frame ({self._stats.bad} so far): {reason}",
                                  throttle_duration_sec=BAD_FRAME_LOG_PERIOD_S)

    def _on_worker_error(self, msg, error: BaseException) -> None:
        if not self.context.ok():
            return  # shutting down: publishing failed because the context is gone, not because of the frame
        self._skip_bad_frame(f"{type(error).__name__}: {error}")

    # ---- parameters ----------------------------------------------------------------------------------

    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Refuse a change (with the reason) that would give an unusable device or detector config.

        A device that resolves to another one gets its detector prepared here, outside the lock, so
        the worker keeps detecting meanwhile; _apply_parameters swaps it in.
        """
        values = dict(self._values, **{p.name: p.value for p in parameters})
        try:
            _check_choices(values)
            device = resolve_device(values["device"])
            check(values["backend"], device)
            config = detector_config(values)
            self._pending = None if device == self._device else self._prepared_on(device, config)
        except (ValueError, RuntimeError) as error:  # RuntimeError: BackendError, or the model cannot go there
            return SetParametersResult(successful=False, reason=first_line(error))
        return SetParametersResult(successful=True)

    def _prepared_on(self, device, config: DetectorConfig) -> KeypointDetector:
        """A copy of the detector with its model on ``device`` and its backend prepared (an export: seconds)."""
        current = self._detector
        detector = KeypointDetector(copy.deepcopy(current.model).to(device), config, current.requested_backend,
                                    current.num_threads, current.cache_dir)
        detector.prepare()
        return detector

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        values = dict(self._values, **{p.name: p.value for p in parameters})
        with self._lock:
            if self._pending is not None:
                self._detector, self._pending = self._pending, None
                self._device, self._backend = self._detector.device, self._detector.backend
            self._detector.config = detector_config(values)
            self._values = values
        changed = ", ".join(f"{p.name}={p.value}" for p in parameters)
        self.get_logger().info(f"parameters changed: {changed}")

    # ---- diagnostics ---------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        period = self._stats.take_period()
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: keypoint detector",
                                  hardware_id=str(self._device))
        skipped = [f"{period[key]} {kind} frame(s) skipped" for key, kind in
                   (("bad_in_period", "bad"), ("oversized_in_period", "oversized")) if period[key]]
        if skipped:
            status.level, status.message = DiagnosticStatus.WARN, ", ".join(skipped)
        elif period["input_hz"] == 0.0:
            status.level, status.message = DiagnosticStatus.OK, f"waiting for images on {self._subscription.topic_name}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "running"
        values = {
            "input rate (Hz)": f"{period['input_hz']:.2f}",
            "output rate (Hz)": f"{period['output_hz']:.2f}",
            "inference (ms)": f"{period['inference_ms']:.2f}",
            "frames received": self._stats.received,
            "frames published": self._stats.published,
            "dropped frames": self._queue.dropped,
            "bad frames": self._stats.bad,
            "oversized frames": self._stats.oversized,
            "non-finite keypoints dropped": self._stats.non_finite,
            "debug images": self._stats.debug_images,
            "device": str(self._device),
            "backend": self._backend,
            "half": self._values["half"] and self._device.type == "cuda",
            "input topic": self._subscription.topic_name,
            "input QoS": reliability_name(self._input_reliability),
        }
        status.values = [KeyValue(key=key, value=str(value)) for key, value in values.items()]
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics_pub.publish(DiagnosticArray(header=header, status=[status]))

    def shutdown(self) -> None:
        """Stop the worker thread (waits for the frame in hand)."""
        self._worker.stop()


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


def _check_choices(values: dict) -> None:
    """ValueError when a string parameter is not one of its choices (device is checked by resolve_device)."""
    for name, spec in PARAMETERS.items():
        if spec.choices and name != "device" and values[name] not in spec.choices:
            raise ValueError(f"{name} must be one of {', '.join(spec.choices)}, got {values[name]!r}")


def default_values() -> dict:
    """Every parameter's default value, by name."""
    return {name: spec.default for name, spec in PARAMETERS.items()}


def detector_config(values: dict) -> DetectorConfig:
    """DetectorConfig from parameter values; ValueError (from the config's own checks) when invalid."""
    return DetectorConfig(max_keypoints=values["max_keypoints"], score_threshold=values["score_threshold"],
                          border=values["border"], nms_radius=values["nms_radius"], half=values["half"],
                          channel_order="bgr")


def main(args: list[str] | None = None) -> int:
    """Run the detector node until shutdown; 1 with one fatal log line when it cannot start."""
    return run(DetectorNode, args)


def run(node_class, args: list[str] | None) -> int:
    """Run a ``node_class(DetectorCore, ...)`` node until shutdown; 1 with one fatal log line when it cannot start."""
    rclpy.init(args=args)
    try:
        node = node_class()
    except START_ERRORS as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {error}")
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

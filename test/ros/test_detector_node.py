"""The detector node as its own process over real DDS: encodings, sizes, compressed input, garbage frames,
runtime parameters, diagnostics, start-up failures; and its image -> Features path (usp_ros.support.detection)
in-process. A small random-initialised model keeps it fast."""
import itertools

import cv2
import numpy as np
import pytest
import rclpy
import torch
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from usp_core.inference import detector as inference
from usp_core.inference.backends.base import BackendError
from usp_core.inference.detector import MAX_NMS_RADIUS, DetectorConfig, KeypointDetector
from usp_core.inference.features import Features as NumpyFeatures
from usp_core.inference.precision import cpu_precisions
from usp_core.support.drawing import CAPTION_HEIGHT, draw_keypoints
from usp_ros.bridge.images import numpy_to_compressed, numpy_to_image
from usp_ros.bridge.messages import msg_to_features
from usp_ros.msg import Features
from usp_ros.nodes import detector as detector_node
from usp_ros.nodes.detector import MAX_INFERENCE_SIDE, MAX_INPUT_PIXELS, DetectorNode
from usp_ros.nodes.image_source import bgr_to_encoding
from usp_ros.support.detection import detect_image_message, input_size
from usp_ros.support.diagnostics import PUBLISHED

from .conftest import TINY, service_answer

_namespaces = itertools.count()


@pytest.fixture
def tiny_model(tiny_model):
    """conftest's tiny_model, with the default backend's graph exported (once) off the nodes' clocks."""
    KeypointDetector.from_pretrained(tiny_model).prepare()
    return tiny_model


def textured(height, width, seed=0):
    """(H, W) uint8 grey test picture with structure at several scales."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.random((height // 12, width // 12)).astype(np.float32), (width, height)) * 160
    image += cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 1.5) * 95
    return image.astype(np.uint8)


class Detector:
    """A detector process in its own namespace, and this test's endpoints talking to it."""

    def __init__(self, ros_node, spawn, wait, model, *parameters, publisher_qos=10):
        self.node, self.wait = ros_node, wait
        self.namespace = f"/detector_test_{next(_namespaces)}"
        self.name = f"{self.namespace}/detector"
        args = ["-p", f"model_path:={model}", "-p", "num_threads:=1"]
        for parameter in parameters:
            args += ["-p", parameter]
        self.process = spawn("-m", "usp_ros.nodes.detector", "--ros-args", "-r", f"__ns:={self.namespace}", *args,
                             name="detector")
        self.features: dict[tuple[int, int], Features] = {}
        self.answers: list[tuple[int, int]] = []  # the stamp of every Features received, copies included
        self.debug_images: dict[tuple[int, int], Image] = {}
        self.diagnostics: list[dict[str, str]] = []
        self.publisher_qos = publisher_qos
        self.publishers = {}
        ros_node.create_subscription(Features, f"{self.namespace}/features", self._on_features, 10)
        ros_node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._stamps = itertools.count(1)

    def _on_features(self, msg):
        self.features[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
        self.answers.append((msg.header.stamp.sec, msg.header.stamp.nanosec))

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.startswith(self.name + ":"):
                self.diagnostics.append({value.key: value.value for value in status.values})

    def subscribe_debug_images(self):
        self.node.create_subscription(Image, f"{self.namespace}/features/debug_image",
                                      lambda msg: self.debug_images.__setitem__(
                                          (msg.header.stamp.sec, msg.header.stamp.nanosec), msg), 10)

    def publish(self, msg, topic="image"):
        if topic not in self.publishers:
            self.publishers[topic] = self.node.create_publisher(type(msg), f"{self.namespace}/{topic}",
                                                                self.publisher_qos)
        self.publishers[topic].publish(msg)

    def header(self, frame_id="camera_optical"):
        return Header(stamp=Time(sec=1700000000 + next(self._stamps), nanosec=4321), frame_id=frame_id)

    def send(self, msg, topic="image", timeout=30.0) -> Features:
        """Publish ``msg`` (again every 0.5 s, until answered) and return the Features with its stamp.

        Copies sent before the answer came back may still be queued in the node, or on their way to it, when this
        returns: the node takes each as a frame of its own (answered again, or dropped by its queue). A frame
        published after them, and counted, comes after all of them (one publisher: in order, queue: first in
        first out).
        """
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        for _ in range(int(timeout / 0.5)):
            assert self.process.poll() is None, "detector process died"
            self.publish(msg, topic)
            if self.wait(lambda: key in self.features, timeout=0.5):
                return self.features[key]
        raise AssertionError(f"no Features for stamp {key} within {timeout} s")

    def send_bad(self, msg, expected_total: int, topic="image") -> None:
        """Publish one bad frame; wait until the diagnostics count ``expected_total`` bad frames.

        One at a time: the node's depth-1 queue would drop (not count as bad) frames sent in a burst.
        """
        self.publish(msg, topic)
        values = self.latest_diagnostics(lambda v: int(v["bad frames"]) >= expected_total, timeout=10)
        assert int(values["bad frames"]) == expected_total
        assert self.process.poll() is None, "detector process died on a bad frame"

    def check_every_frame_counted_once(self, values: dict[str, str], answered) -> None:
        """Each frame the node took, in the diagnostics ``values``, is counted once: published (a Features this test
        received, with the stamp of one of the headers ``answered``), dropped by the queue, bad or oversized.

        ``values`` must come after the node counted the last frame sent (later counts would be missing).
        """
        published = int(values["frames published"])
        skipped = sum(int(values[key]) for key in ("dropped frames", "bad frames", "oversized frames"))
        assert int(values["frames received"]) == published + skipped, values
        assert self.wait(lambda: len(self.answers) >= published, timeout=10)
        assert len(self.answers) == published, f"{len(self.answers)} Features received, {published} published"
        assert set(self.answers) <= {(header.stamp.sec, header.stamp.nanosec) for header in answered}

    def latest_diagnostics(self, condition=lambda values: True, timeout=5.0) -> dict[str, str]:
        """The newest diagnostics of this node that satisfy ``condition``."""
        self.wait(lambda: self.diagnostics and condition(self.diagnostics[-1]), timeout=timeout)
        assert self.diagnostics, "no diagnostics from the detector"
        return self.diagnostics[-1]

    def set_parameters(self, **values):
        client = AsyncParameterClient(self.node, self.name)
        assert client.wait_for_services(timeout_sec=30)
        parameters = [Parameter(name, value=value) for name, value in values.items()]
        return service_answer(lambda: client.set_parameters(parameters)).results


def check_features(msg, header, width, height, border=4, max_keypoints=1000):
    """Header copied, sizes given, keypoints inside the image (minus the border); returns the arrays."""
    assert msg.header == header and msg.keypoints.header == header
    assert (msg.keypoints.image_width, msg.keypoints.image_height) == (width, height)
    arrays = msg_to_features(msg)
    assert 0 < len(arrays.keypoints) <= max_keypoints
    assert arrays.descriptors.shape == (len(arrays.keypoints), TINY["descriptor_dim"])
    x, y = arrays.keypoints[:, 0], arrays.keypoints[:, 1]
    assert x.min() >= border and x.max() <= width - 1 - border
    assert y.min() >= border and y.max() <= height - 1 - border
    np.testing.assert_allclose(np.linalg.norm(arrays.descriptors, axis=1), 1.0, atol=1e-4)
    assert np.all(np.diff(arrays.scores) <= 0), "keypoints come best score first"
    return arrays


def test_encodings_and_sizes_over_dds(ros_node, spawn, wait, tiny_model):
    detector = Detector(ros_node, spawn, wait, tiny_model)
    reference = KeypointDetector.from_pretrained(tiny_model, config=DetectorConfig(max_keypoints=1000))
    for height, width in ((480, 640), (720, 1280)):
        grey = textured(height, width)
        expected = reference.detect(grey)[0].keypoints
        bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        for encoding in ("mono8", "bgr8", "rgb8", "mono16", "bayer_rggb8"):
            header = detector.header()
            features = detector.send(numpy_to_image(bgr_to_encoding(bgr, encoding), encoding, header))
            arrays = check_features(features, header, width, height)
            if not encoding.startswith("bayer"):  # the same grey picture: the same keypoints as in-process
                np.testing.assert_allclose(arrays.keypoints, expected, atol=1e-3, err_msg=encoding)
            else:  # demosaicing a grey mosaic gives back nearly the same picture
                shared = {tuple(p) for p in np.round(arrays.keypoints)} & {tuple(p) for p in np.round(expected)}
                assert len(shared) > 0.5 * len(expected)
    values = detector.latest_diagnostics(lambda v: int(v["frames published"]) >= 10)  # send() may leave copies
    assert values["input QoS"] == "reliable", "auto QoS must match the reliable publisher that appeared late"
    assert values["bad frames"] == "0" and values["device"] == "cpu" and values["debug images"] == "0"
    assert values["backend"] == reference.backend, "backend auto picks the same runtime as the library"
    assert float(values["inference (ms)"]) > 0


def test_debug_image_is_published_to_subscribers(ros_node, spawn, wait, tiny_model):
    detector = Detector(ros_node, spawn, wait, tiny_model, "max_keypoints:=30")
    detector.subscribe_debug_images()
    grey = textured(240, 320)
    header = detector.header()
    rgb = np.dstack([grey, grey // 2, 255 - grey])
    features = detector.send(numpy_to_image(rgb, "rgb8", header))
    key = (header.stamp.sec, header.stamp.nanosec)
    assert wait(lambda: key in detector.debug_images, timeout=10)
    debug = detector.debug_images[key]
    assert debug.header == header and (debug.width, debug.height, debug.encoding) == (320, 240, "bgr8")
    picture = np.frombuffer(bytes(debug.data), np.uint8).reshape(240, 320, 3)
    arrays = msg_to_features(features)
    expected = draw_keypoints(rgb[..., ::-1], arrays.keypoints, arrays.scores)
    np.testing.assert_array_equal(picture[CAPTION_HEIGHT:], expected[CAPTION_HEIGHT:])
    assert (picture[:CAPTION_HEIGHT] != expected[:CAPTION_HEIGHT]).any(), "a caption on a band at the top"


def test_compressed_input_and_undecodable_frames(ros_node, spawn, wait, tiny_model):
    detector = Detector(ros_node, spawn, wait, tiny_model, "input_transport:=compressed")
    for (height, width), image_format in itertools.product(((480, 640), (720, 1280)), ("jpeg", "png")):
        grey = textured(height, width, seed=height)
        header = detector.header()
        features = detector.send(numpy_to_compressed(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), image_format, header),
                                 topic="image/compressed")
        check_features(features, header, width, height)
    garbage = [CompressedImage(header=detector.header(), format="jpeg", data=b"\xff\xd8 not a jpeg at all"),
               CompressedImage(header=detector.header(), format="png", data=b"")]
    for count, msg in enumerate(garbage, start=1):
        detector.send_bad(msg, count, topic="image/compressed")
    header = detector.header()
    check_features(detector.send(numpy_to_compressed(textured(480, 640), "jpeg", header), topic="image/compressed"),
                   header, 640, 480)
    assert detector.process.poll() is None


def bad_images(header_factory):
    """Images that cannot be converted: unknown encoding, short data, step too small, empty."""
    good = numpy_to_image(textured(240, 320), "mono8")
    unknown = numpy_to_image(textured(240, 320), "mono8", header_factory())
    unknown.encoding = "yuv_wrong"
    short = numpy_to_image(textured(240, 320), "mono8", header_factory())
    short.data = good.data[: len(good.data) // 2]
    narrow = numpy_to_image(textured(240, 320), "mono8", header_factory())
    narrow.step = 100
    empty = Image(header=header_factory(), height=0, width=0, encoding="mono8", step=0)
    return [unknown, short, narrow, empty]


def test_bad_frames_are_counted_and_skipped_with_a_best_effort_publisher(ros_node, spawn, wait, tiny_model):
    best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    detector = Detector(ros_node, spawn, wait, tiny_model, publisher_qos=best_effort)
    # the publisher exists before the node has started (its start takes seconds: importing torch)
    detector.publish(numpy_to_image(textured(240, 320), "mono8", Header()))
    header = detector.header()
    check_features(detector.send(numpy_to_image(textured(240, 320), "mono8", header)), header, 320, 240)
    for count, msg in enumerate(bad_images(detector.header), start=1):
        detector.send_bad(msg, count)
    values = detector.latest_diagnostics()
    assert values["input QoS"] == "best_effort", "auto QoS must match the best-effort publisher found at start"
    detector.check_every_frame_counted_once(values, answered=[header])  # no bad frame published
    header = detector.header()
    check_features(detector.send(numpy_to_image(textured(240, 320, seed=3), "mono8", header)), header, 320, 240)
    assert detector.process.poll() is None


def test_runtime_parameter_changes(ros_node, spawn, wait, tiny_model):
    detector = Detector(ros_node, spawn, wait, tiny_model)
    grey = textured(480, 640)

    def count_and_extent():
        header = detector.header()
        arrays = check_features(detector.send(numpy_to_image(grey, "mono8", header)), header, 640, 480,
                                max_keypoints=5000)
        return len(arrays.keypoints), arrays.keypoints[:, 0].max()

    assert count_and_extent()[0] == 1000
    assert all(result.successful for result in detector.set_parameters(max_keypoints=50))
    assert count_and_extent()[0] == 50

    results = detector.set_parameters(inference_width=320, inference_height=240, max_keypoints=5000)
    assert all(result.successful for result in results)
    count, largest_x = count_and_extent()
    assert count <= 40 * 30, "the network ran at 320x240: at most one keypoint per 8x8 cell"
    assert largest_x > 560, "keypoints of the resized run are mapped back to the 640x480 input"

    assert all(result.successful for result in detector.set_parameters(nms_radius=MAX_NMS_RADIUS))
    header = detector.header()
    thinned = check_features(detector.send(numpy_to_image(grey, "mono8", header)), header, 640, 480).keypoints
    gaps = np.linalg.norm(thinned[:, None] - thinned[None], axis=2) + np.eye(len(thinned)) * 1e9
    assert gaps.min() > MAX_NMS_RADIUS and len(thinned) < count, "no two keypoints within nms_radius"
    assert all(result.successful for result in detector.set_parameters(nms_radius=0))

    refused = [
        ("max_keypoints", 0),  # below the declared range
        ("score_threshold", 1.5),  # above the declared range
        ("inference_width", 100),  # not a multiple of 8
        ("device", "gpu"),  # not a device name
        ("model_path", "/tmp/other.pt"),  # read-only
        ("backend", "torch"),  # read-only
        ("nms_radius", -1),  # below the declared range
        ("nms_radius", MAX_NMS_RADIUS + 1),  # above it: radius NMS cost grows fast with the radius
        ("border", "wide"),  # wrong type
        ("max_inference_side", 100),  # not a multiple of 8
        ("max_input_pixels", 0),  # below the declared range
    ]
    for name, value in refused:
        (result,) = detector.set_parameters(**{name: value})
        assert not result.successful, f"{name}={value!r} must be refused"
        assert result.reason, f"refusing {name}={value!r} must give a reason"
    if not torch.cuda.is_available():
        (result,) = detector.set_parameters(device="cuda")
        assert not result.successful and "CUDA is not available" in result.reason
    assert all(result.successful for result in detector.set_parameters(device="cpu", score_threshold=0.0))
    assert count_and_extent()[0] <= 40 * 30, "refused changes leave the previous values in force"


def _fail_to_prepare(*args, **kwargs):
    raise BackendError("backend 'torch' cannot run: simulated")


def test_device_change_prepares_a_new_detector_and_a_refused_one_leaves_the_node_working(tiny_model, monkeypatch):
    """In-process node. 'meta' stands in for a second device (this machine may have no CUDA)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = DetectorNode(context=context, parameter_overrides=[
        Parameter("model_path", value=str(tiny_model)), Parameter("backend", value="torch")])
    try:
        before = node._detector
        assert node.set_parameters([Parameter("device", value="cpu")])[0].successful
        assert node._detector is before, "auto -> cpu resolves to the same device: nothing rebuilt"

        monkeypatch.setattr(detector_node, "resolve_device", lambda name: torch.device(
            "meta" if name == "cuda" else "cpu"))
        real_make_runner = inference.make_runner
        monkeypatch.setattr(inference, "make_runner", _fail_to_prepare)
        (result,) = node.set_parameters([Parameter("device", value="cuda")])
        assert not result.successful and result.reason == "backend 'torch' cannot run: simulated"
        assert node.get_parameter("device").value == "cpu" and node._detector is before
        node._process(numpy_to_image(textured(240, 320), "mono8", Header()))
        assert (node._stats.total(PUBLISHED), node._stats.total("bad")) == (1, 0), \
            "the refused change left the node working"

        monkeypatch.setattr(inference, "make_runner", real_make_runner)
        assert node.set_parameters([Parameter("device", value="cuda")])[0].successful
        assert node._detector is not before and node._detector.device.type == "meta"
        assert node._device.type == "meta" and node._backend == "torch"
        assert before.device.type == "cpu", "the new detector has its own copy of the model"
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("content", [None, b"this is not a torch checkpoint"])
def test_missing_or_corrupt_model_fails_start_up_with_one_line(spawn, wait, tmp_path, content):
    model = tmp_path / "model.pt"
    if content is not None:
        model.write_bytes(content)
    child = spawn("-m", "usp_ros.nodes.detector", "--ros-args", "-p", f"model_path:={model}", name="failing")
    assert wait(lambda: child.poll() is not None, timeout=30)
    assert child.returncode != 0
    lines = (tmp_path / "failing.log").read_text().strip().splitlines()
    assert len(lines) == 1, lines
    assert "FATAL" in lines[0] and f"cannot load checkpoint {model}" in lines[0]


def test_int8_without_calibration_photos_fails_start_up_with_one_line(spawn, wait, tmp_path, tiny_model,
                                                                     monkeypatch):
    monkeypatch.delenv("USP_ROS_CALIBRATION_DIR", raising=False)
    child = spawn("-m", "usp_ros.nodes.detector", "--ros-args", "-p", f"model_path:={tiny_model}",
                  "-p", "backend:=openvino", "-p", "precision:=int8", name="failing")
    assert wait(lambda: child.poll() is not None, timeout=60)
    lines = (tmp_path / "failing.log").read_text().strip().splitlines()
    assert child.returncode == 1 and len(lines) == 1, lines
    assert "FATAL" in lines[0] and "cannot start" in lines[0] and "precision int8 needs" in lines[0], lines


BF16 = pytest.mark.skipif("bf16" not in cpu_precisions(), reason="this CPU does not run bf16 natively")
INT8 = pytest.mark.skipif("int8" not in cpu_precisions(), reason="this CPU does not run int8 natively")


@pytest.mark.parametrize("parameters, backend, precision", [
    (("backend:=torch",), "torch", "fp32"),
    pytest.param(("backend:=openvino", "precision:=bf16"), "openvino", "bf16", marks=BF16),
    pytest.param(("backend:=openvino", "precision:=int8"), "openvino", "int8", marks=INT8),
])
def test_backend_and_precision_are_logged_at_start_and_in_diagnostics(parameters, backend, precision, ros_node,
                                                                      spawn, wait, tiny_model, tmp_path):
    if precision == "int8":  # calibration photos: a few test pictures
        (tmp_path / "calibration").mkdir()
        for seed in range(4):
            cv2.imwrite(str(tmp_path / "calibration" / f"{seed}.png"), textured(240, 320, seed=seed))
        parameters = (*parameters, f"calibration_dir:={tmp_path / 'calibration'}")
    detector = Detector(ros_node, spawn, wait, tiny_model, *parameters)
    header = detector.header()
    check_features(detector.send(numpy_to_image(textured(240, 320), "mono8", header)), header, 320, 240)
    values = detector.latest_diagnostics(lambda v: v["frames published"] != "0")
    assert (values["backend"], values["precision"]) == (backend, precision)
    start = [line for line in (tmp_path / "detector.log").read_text().splitlines() if "ready:" in line]
    assert len(start) == 1 and f"with backend {backend} in {precision}" in start[0]


def test_model_path_superpoint_runs_the_bundled_superpoint(ros_node, spawn, wait, tmp_path):
    """model_path:=superpoint: the shipped SuperPoint by name, the same points as in-process."""
    detector = Detector(ros_node, spawn, wait, "superpoint", "backend:=torch")
    reference = KeypointDetector.from_pretrained("superpoint", backend="torch")
    grey, header = textured(240, 320), detector.header()
    msg = detector.send(numpy_to_image(grey, "mono8", header))
    arrays = msg_to_features(msg)
    expected = reference.detect(grey)[0]
    assert arrays.descriptors.shape[1] == reference.model.config.descriptor_dim
    np.testing.assert_allclose(arrays.keypoints, expected.keypoints, atol=1e-3)
    start = [line for line in (tmp_path / "detector.log").read_text().splitlines() if "ready:" in line]
    assert len(start) == 1 and "model superpoint" in start[0]


def test_unknown_backend_fails_start_up_with_one_line(spawn, wait, tmp_path, tiny_model):
    child = spawn("-m", "usp_ros.nodes.detector", "--ros-args", "-p", f"model_path:={tiny_model}",
                  "-p", "backend:=tensorrt", name="failing")
    assert wait(lambda: child.poll() is not None, timeout=30)
    lines = (tmp_path / "failing.log").read_text().strip().splitlines()
    assert child.returncode != 0 and len(lines) == 1, lines
    assert "FATAL" in lines[0] and "backend must be one of auto, torch, onnxruntime, openvino" in lines[0]


def test_a_large_jpeg_is_decoded_reduced_and_its_keypoints_come_in_source_pixels(tiny_model):
    detector = KeypointDetector.from_pretrained(tiny_model, config=DetectorConfig(max_inference_side=320),
                                                backend="torch")
    grey = textured(960, 1280)
    msg = numpy_to_compressed(grey, "jpeg")
    assert input_size(msg) == (1280, 960)
    detection = detect_image_message(detector, msg)
    assert detection.image.shape == (240, 320) and detection.encoding == "mono8", "JPEG decoded at 1/4"
    assert detection.non_finite == 0 and detection.features.image_size == (1280, 960)
    (reduced,) = detector.detect(detection.image)
    np.testing.assert_allclose(detection.features.keypoints, reduced.resized((1280, 960)).keypoints)
    assert detection.features.keypoints[:, 0].max() > 1200, "keypoints span the source image"


def poisoned(features: NumpyFeatures) -> NumpyFeatures:
    """A copy with NaN or inf in three rows: a keypoint's x, a score, a descriptor value."""
    keypoints, scores, descriptors = features.keypoints.copy(), features.scores.copy(), features.descriptors.copy()
    keypoints[0, 0], scores[1], descriptors[2, 3] = np.nan, np.inf, np.nan
    return NumpyFeatures(keypoints, scores, descriptors, features.image_size)


def test_non_finite_rows_are_dropped_and_counted(tiny_model, monkeypatch):
    detector = KeypointDetector.from_pretrained(tiny_model, backend="torch")
    detect = detector.detect
    monkeypatch.setattr(detector, "detect", lambda images: [poisoned(features) for features in detect(images)])
    detection = detect_image_message(detector, numpy_to_image(textured(240, 320), "mono8"))
    assert detection.non_finite == 3 and len(detection.features) > 0
    assert detection.features.finite_rows().all()


def test_an_8000x6000_jpeg_is_answered_in_source_pixels_and_the_next_frame_too(ros_node, spawn, wait, tiny_model):
    """Over DDS; that such a JPEG is decoded reduced (its memory bounded) is checked in-process above."""
    detector = Detector(ros_node, spawn, wait, tiny_model, "input_transport:=compressed")
    header = detector.header()
    check_features(detector.send(numpy_to_compressed(textured(480, 640), "jpeg", header), topic="image/compressed"),
                   header, 640, 480)
    big = cv2.resize(cv2.cvtColor(textured(600, 800), cv2.COLOR_GRAY2BGR), (8000, 6000),
                     interpolation=cv2.INTER_NEAREST)
    header = detector.header()
    arrays = check_features(detector.send(numpy_to_compressed(big, "jpeg", header), topic="image/compressed",
                                          timeout=60), header, 8000, 6000)
    assert arrays.keypoints[:, 0].max() > 7000, "keypoints are mapped back to the 8000x6000 input"
    header = detector.header()
    check_features(detector.send(numpy_to_compressed(textured(480, 640, seed=1), "jpeg", header),
                                 topic="image/compressed"), header, 640, 480)


def test_a_4000x3000_raw_frame_runs_at_max_inference_side_and_larger_ones_are_skipped(ros_node, spawn, wait,
                                                                                      tiny_model, tmp_path):
    detector = Detector(ros_node, spawn, wait, tiny_model, "max_keypoints:=100000")
    large = cv2.resize(textured(750, 1000), (4000, 3000), interpolation=cv2.INTER_NEAREST)
    header = detector.header()
    arrays = check_features(detector.send(numpy_to_image(cv2.cvtColor(large, cv2.COLOR_GRAY2BGR), "bgr8", header),
                                          timeout=60), header, 4000, 3000, max_keypoints=100000)
    assert len(arrays.keypoints) <= 160 * 120, "the network ran at 1280x960: at most one keypoint per 8x8 cell"
    assert arrays.keypoints[:, 0].max() > 3600, "keypoints are mapped back to the 4000x3000 input"

    # A copy of the large frame that send() left queued behind the one in hand would be taken after the limit drops
    # and count as oversized too (under load it did: 2): a small frame answered after the copies leaves none.
    small = detector.header()
    check_features(detector.send(numpy_to_image(textured(480, 640), "mono8", small)), small, 640, 480,
                   max_keypoints=100000)
    assert all(result.successful for result in detector.set_parameters(max_input_pixels=10_000_000))
    detector.publish(numpy_to_image(large, "mono8", detector.header()))
    values = detector.latest_diagnostics(lambda v: v["oversized frames"] != "0", timeout=20)
    assert values["oversized frames"] == "1" and values["bad frames"] == "0"
    detector.check_every_frame_counted_once(values, answered=[header, small])  # the oversized one not published
    header = detector.header()
    check_features(detector.send(numpy_to_image(textured(480, 640), "mono8", header)), header, 640, 480,
                   max_keypoints=100000)
    log = (tmp_path / "detector.log").read_text()
    assert "skipping oversized frame (1 so far): 4000x3000 is over max_input_pixels 10000000" in log


def test_a_compressed_frame_over_max_input_pixels_is_skipped_before_decoding(ros_node, spawn, wait, tiny_model):
    detector = Detector(ros_node, spawn, wait, tiny_model, "input_transport:=compressed",
                        "max_input_pixels:=1000000")
    header = detector.header()
    check_features(detector.send(numpy_to_compressed(textured(480, 640), "jpeg", header), topic="image/compressed"),
                   header, 640, 480)
    detector.publish(numpy_to_compressed(textured(960, 1280), "jpeg", detector.header()), topic="image/compressed")
    values = detector.latest_diagnostics(lambda v: v["oversized frames"] != "0", timeout=20)
    assert values["oversized frames"] == "1" and values["bad frames"] == "0"
    detector.check_every_frame_counted_once(values, answered=[header])  # the oversized one not published
    header = detector.header()
    png = numpy_to_compressed(textured(480, 640, seed=1), "png", header)
    check_features(detector.send(png, topic="image/compressed"), header, 640, 480)


def test_corrupt_jpegs_leave_no_decoder_lines_in_the_log(ros_node, spawn, wait, tiny_model, tmp_path):
    detector = Detector(ros_node, spawn, wait, tiny_model, "input_transport:=compressed")
    data = numpy_to_compressed(textured(240, 320), "jpeg").data.tobytes()
    for index in range(50):
        header = detector.header()
        msg = CompressedImage(header=header, format="jpeg")
        position = 1000 + 40 * index
        msg.data = data[:position] + b"\xff\xd0" * 50 + data[position + 100:]  # stray restart markers
        check_features(detector.send(msg, topic="image/compressed"), header, 320, 240)
    lines = [line for line in (tmp_path / "detector.log").read_text().splitlines() if "JPEG" in line]
    assert len(lines) <= 2, lines


def test_non_finite_keypoints_are_never_published(tiny_model, monkeypatch):
    """In-process node, its detector made to return NaN and inf rows."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = DetectorNode(context=context, parameter_overrides=[Parameter("model_path", value=str(tiny_model))])
    try:
        detect = node._detector.detect
        published = []
        monkeypatch.setattr(node._detector, "detect", lambda images: [poisoned(found) for found in detect(images)])
        monkeypatch.setattr(node._features_pub, "publish", published.append)
        node._process(numpy_to_image(textured(240, 320), "mono8", Header()))
        arrays = msg_to_features(published[0])
        assert np.isfinite(arrays.keypoints).all() and np.isfinite(arrays.scores).all()
        assert np.isfinite(arrays.descriptors).all() and len(arrays.keypoints) > 0
        assert node._stats.total("non_finite") == 3 and node._stats.total(PUBLISHED) == 1
        for name, top in (("max_inference_side", MAX_INFERENCE_SIDE), ("max_input_pixels", MAX_INPUT_PIXELS)):
            descriptor = node.describe_parameter(name)
            assert descriptor.description and descriptor.integer_range[0].to_value == top
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)

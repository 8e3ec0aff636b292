"""Reduced precisions: bf16 and int8 against fp32 on real photos, int8's cached graphs, ``auto`` and its gate, and
a CPU without the instructions (simulated).

Tolerances of the real-photo checks (measured on an AMX Xeon, bundled weights v3 with the parabola peak
fit, at both evaluation settings, on nine photos of Oxford, HPatches and the test photo): a "same point" is
an fp32 keypoint with a keypoint of the other precision within 0.5 px. bf16 kept 97-100 % of the points,
descriptors (unit length) 0.006-0.013 apart at the median; int8 88-98 % and 0.025-0.043 (with the
soft-argmax at inference int8 kept 92-97 %: the peak fit follows the logits' curvature more closely).
The tests ask for 95 % / 0.02 (bf16) and 85 % / 0.07 (int8, since weights v8 measured up to 0.058 on a CPU
without VNNI; see TOLERANCES): bounds that catch a broken path (a wrong scale or calibration moves most points and
puts descriptors about 1 apart), not the accuracy that decides a precision, which is usp-gate's.
"""
import json

import cv2
import numpy as np
import pytest
import torch

from usp_core.inference import precision as precision_module
from usp_core.inference.backends.base import BackendError
from usp_core.inference.backends.choose import make_runner
from usp_core.inference.detector import DetectorConfig, KeypointDetector
from usp_core.inference.graph_cache import MANIFEST, weights_digest
from usp_core.inference.precision import PrecisionGate, cpu_precisions, gate_path, resolve_precision
from usp_core.models.layers import ModelConfig
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_core.support.checkpoint import save_checkpoint

SETTINGS = ((240, 320, 300), (480, 640, 1000))
# (share of fp32's points kept within 0.5 px, median descriptor distance of those); the bundled weights measured
# bf16 on AMX 0.95-0.99 / 0.01-0.02, int8 on AMX 0.88-0.98 / 0.025-0.043 (weights v3-v6) and int8 on AVX2 without
# VNNI (OpenVINO's u8 x s8 multiply-adds) 0.92-0.98 / 0.040-0.050 (v7) and 0.91-0.97 / 0.043-0.058 (v8); the
# accuracy that counts is usp-gate's (README "Precisions"), which v8's int8 passed
TOLERANCES = {"bf16": (0.95, 0.02), "int8": (0.85, 0.07)}
TINY = {"widths": [4, 4, 8, 8, 8, 8, 16, 16], "descriptor_dim": 8}
CPU = torch.device("cpu")


def _native(name: str):
    """Skip mark for a test of ``name`` on a CPU without its instructions."""
    return pytest.mark.skipif(name not in cpu_precisions(), reason=f"this CPU does not run {name} natively")


def _same_points(reference, other) -> tuple[float, float]:
    """(share of reference's keypoints with one of other's within 0.5 px, median descriptor distance of those)."""
    distance = np.linalg.norm(reference.keypoints[:, None] - other.keypoints[None], axis=2)
    nearest = distance.argmin(axis=1)
    same = distance[np.arange(len(nearest)), nearest] < 0.5
    gaps = np.linalg.norm(reference.descriptors[same] - other.descriptors[nearest[same]], axis=1)
    return float(same.mean()), float(np.median(gaps))


@pytest.mark.parametrize("precision", [pytest.param("bf16", marks=_native("bf16")),
                                       pytest.param("int8", marks=_native("int8"))])
def test_reduced_precision_keeps_the_points_and_descriptors_of_fp32(precision, real_photos, shared_data):
    share_needed, gap_allowed = TOLERANCES[precision]
    calibration = str(shared_data / "train")
    for height, width, top_k in SETTINGS:
        size = dict(max_keypoints=top_k, inference_height=height, inference_width=width)
        reference = KeypointDetector.from_pretrained(None, backend="openvino",
                                                     config=DetectorConfig(precision="fp32", **size))
        reduced = KeypointDetector.from_pretrained(None, backend="openvino", config=DetectorConfig(
            precision=precision, calibration_dir=calibration, **size))
        assert reduced.precision == precision
        for photo in real_photos:
            share, gap = _same_points(reference.detect(photo)[0], reduced.detect(photo)[0])
            assert share >= share_needed and gap <= gap_allowed, (height, share, gap)


def _photos(folder, count: int, seed: int):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = cv2.GaussianBlur((rng.random((60, 80)) * 255).astype(np.uint8), (5, 5), 1.5)
        cv2.imwrite(str(folder / f"{index}.png"), image)
    return folder


@_native("int8")
def test_int8_graphs_are_cached_per_size_and_calibration_set(tmp_path, monkeypatch):
    pytest.importorskip("nncf")
    from usp_core.inference.backends import openvino_runner

    quantized = []
    real_quantize = openvino_runner.OpenVinoRunner._quantize
    monkeypatch.setattr(openvino_runner.OpenVinoRunner, "_quantize", lambda runner, *size:
                        quantized.append(size) or real_quantize(runner, *size))
    torch.manual_seed(0)
    model = UnsuperPoint(ModelConfig(**TINY)).eval()
    first, second = _photos(tmp_path / "first", 3, seed=0), _photos(tmp_path / "second", 3, seed=1)
    cache = tmp_path / "cache"

    def run(calibration, shape=(1, 1, 32, 48)):
        runner = make_runner("openvino", model, CPU, 1, cache, precision="int8", calibration_dir=calibration)
        assert runner.precision == "int8"
        return runner(torch.rand(shape))

    run(first)
    assert quantized == [(1, 32, 48)]
    score = run(first, shape=(2, 1, 32, 48))[0].copy()
    assert quantized == [(1, 32, 48)], "the int8 graph of the same size and photos is read from the cache"
    assert np.isfinite(score).all() and score.shape == (2, 1, 4, 6), "any batch"
    run(second)
    run(first, shape=(1, 1, 40, 48))
    assert quantized == [(1, 32, 48), (1, 32, 48), (1, 40, 48)], "other photos, or another size: another graph"
    entries = [folder for folder in (cache / "graphs").iterdir() if (folder / MANIFEST).is_file()]
    descriptions = [json.loads((folder / MANIFEST).read_text())["description"]["precision"] for folder in entries]
    assert sorted(text.split(",")[0] for text in descriptions) == ["f32", "int8", "int8", "int8"]


@pytest.mark.parametrize("name, channels", [("unsuperpoint", [1, 1, 1, 128, 128]),  # + the fine scores' and
                                           ("unsuperpoint_v7", [1, 1, 1, 128, 128]),
                                           ("unsuperpoint_v6", [1, 1, 1, 128, 128]),
                                           ("unsuperpoint_v5", [1, 1, 1, 128, 128]),
                                           ("unsuperpoint_v4", [1, 1, 128, 128]),  # the fine descriptors' MLP outputs
                                           ("unsuperpoint_v3", [1, 1, 128]), ("unsuperpoint_v2", [1, 2, 128]),
                                           ("superpoint", [65, 256])])
def test_int8_keeps_the_heads_output_layers_and_what_follows_in_float(name, channels):
    ov = pytest.importorskip("openvino")
    from usp_core.inference.backends.openvino_runner import output_head_ops
    from usp_core.inference.export import export_program
    from usp_core.inference.weights import load_network

    graph = ov.convert_model(export_program(load_network(name)))
    convolutions = {op.get_friendly_name(): op for op in graph.get_ordered_ops() if op.get_type_name() == "Convolution"}
    kept = output_head_ops(graph)
    kept_convolutions = [name for name in kept if name in convolutions]
    assert len(convolutions) > 10  # the backbone's stay quantised
    assert sorted(convolutions[n].get_output_partial_shape(0)[1].get_length() for n in kept_convolutions) == channels
    kinds = {op.get_type_name() for op in graph.get_ordered_ops() if op.get_friendly_name() in kept}
    assert {"GridSample", "ReduceL2"} <= kinds  # descriptor sampling and normalisation stay float


def test_int8_without_calibration_photos_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("USP_ROS_CALIBRATION_DIR", raising=False)
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"amx_int8"}))
    model = UnsuperPoint(ModelConfig(**TINY)).eval()
    for folder, message in ((None, "needs calibration photos"), (tmp_path / "nothing", "is not a folder")):
        with pytest.raises(BackendError, match=message):
            make_runner("openvino", model, CPU, 1, tmp_path / "cache", precision="int8", calibration_dir=folder)
    (tmp_path / "empty").mkdir()
    detector = KeypointDetector(model, DetectorConfig(precision="int8", calibration_dir=str(tmp_path / "empty")),
                                backend="openvino", cache_dir=tmp_path / "cache")
    with pytest.raises(BackendError, match="holds no photos"):
        detector.prepare()


@pytest.mark.parametrize("flags, expected", [
    (frozenset(), ("fp32",)),
    (frozenset({"avx512f", "avx512_bf16"}), ("fp32", "bf16")),
    (frozenset({"avx512_vnni"}), ("fp32", "int8")),
    (frozenset({"avx", "avx2", "fma"}), ("fp32", "int8")),
    (frozenset({"sse4_2", "avx"}), ("fp32",)),
    (frozenset({"amx_bf16", "amx_int8", "amx_tile"}), ("fp32", "bf16", "int8")),
])
def test_cpu_precisions_follow_the_instruction_flags(flags, expected):
    assert cpu_precisions(flags) == expected


def test_auto_picks_the_fastest_gated_precision_this_cpu_runs():
    gate = PrecisionGate("digest", ("fp32", "bf16", "int8"), {"fp32": 40.0, "bf16": 15.0, "int8": 20.0})
    amx = frozenset({"amx_bf16", "amx_int8"})
    assert resolve_precision("auto", "openvino", CPU, gate, amx) == "bf16"
    vnni = frozenset({"avx512_vnni"})
    assert resolve_precision("auto", "openvino", CPU, gate, vnni, calibrated=True) == "int8"
    assert resolve_precision("auto", "openvino", CPU, gate, vnni) == "fp32", "no calibration photos: no int8"
    int8_fastest = PrecisionGate("digest", ("fp32", "bf16", "int8"), {"fp32": 40.0, "bf16": 15.0, "int8": 9.0})
    assert resolve_precision("auto", "openvino", CPU, int8_fastest, amx, calibrated=True) == "int8"
    assert resolve_precision("auto", "openvino", CPU, int8_fastest, amx) == "bf16"
    assert resolve_precision("auto", "openvino", CPU, gate, frozenset()) == "fp32", "no instructions: fp32"
    failed = PrecisionGate("digest", ("fp32",), {"fp32": 40.0, "bf16": 15.0})
    assert resolve_precision("auto", "openvino", CPU, failed, amx) == "fp32", "a precision that failed is not used"
    assert resolve_precision("auto", "openvino", CPU, None, amx) == "fp32", "weights without a gate: fp32"
    assert resolve_precision("auto", "onnxruntime", CPU, gate, amx) == "fp32"
    assert resolve_precision("auto", "torch", CPU, gate, amx) == "fp32"
    assert resolve_precision("auto", "torch", torch.device("cuda", 0), gate, amx) == "fp16"


@pytest.mark.parametrize("requested, backend, flags, message", [
    ("bf16", "openvino", frozenset(), "needs a CPU with amx_bf16 or avx512_bf16"),
    ("int8", "openvino", frozenset({"amx_bf16"}), "needs a CPU with amx_int8"),
    ("bf16", "onnxruntime", frozenset({"amx_bf16"}), "does not run in backend onnxruntime"),
    ("fp16", "openvino", frozenset({"amx_bf16"}), "does not run in backend openvino"),
    ("fp16", "torch", frozenset(), "runs in torch on CUDA only"),
    ("int8", "torch", frozenset({"amx_int8"}), "runs in backend openvino only"),
    ("fp64", "torch", frozenset(), "precision must be one of"),
])
def test_a_precision_that_cannot_run_is_refused_in_one_line(requested, backend, flags, message):
    with pytest.raises(ValueError, match=message) as error:
        resolve_precision(requested, backend, CPU, None, flags)
    assert "\n" not in str(error.value)


def _checkpoint_with_gate(tmp_path, passed=("fp32", "bf16"), digest=None):
    torch.manual_seed(0)
    model = UnsuperPoint(ModelConfig(**TINY))
    path = save_checkpoint(tmp_path / "mine.pt", {"model": model.state_dict(), "config": {"model": TINY}})
    record = {"weights": digest or weights_digest(model.float().eval()), "passed": list(passed),
              "milliseconds": {"fp32": 30.0, "bf16": 10.0}}
    gate_path(path).write_text(json.dumps(record))
    return path


def test_the_gate_beside_a_checkpoint_sets_auto_on_a_cpu_with_and_without_bf16(tmp_path, monkeypatch):
    path = _checkpoint_with_gate(tmp_path)
    assert gate_path(path) == tmp_path / "mine.gate.json"
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    detector = KeypointDetector.from_pretrained(path, backend="openvino", cache_dir=tmp_path / "cache")
    assert detector.precision == "bf16"
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset())  # a CPU without the instructions
    fallback = KeypointDetector.from_pretrained(path, backend="openvino", cache_dir=tmp_path / "cache")
    assert fallback.precision == "fp32"
    assert len(fallback.detect(np.zeros((48, 64), np.uint8))[0]) > 0
    explicit = KeypointDetector.from_pretrained(path, backend="openvino", cache_dir=tmp_path / "cache",
                                                config=DetectorConfig(precision="bf16"))
    with pytest.raises(BackendError, match="needs a CPU with"):
        explicit.prepare()


def test_a_gate_of_other_weights_is_not_used_and_a_broken_one_is_an_error(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    path = _checkpoint_with_gate(tmp_path, digest="0" * 64)
    detector = KeypointDetector.from_pretrained(path, backend="openvino", cache_dir=tmp_path / "cache")
    assert detector.gate is None and detector.precision == "fp32"
    assert "measured other weights" in caplog.text
    gate_path(path).write_text("{not json")
    with pytest.raises(ValueError, match="precision gate .* is unreadable"):
        KeypointDetector.from_pretrained(path)


def test_an_unknown_precision_is_refused_by_the_config():
    with pytest.raises(ValueError, match="precision must be one of"):
        DetectorConfig(precision="half")

"""Every inference backend gives the torch backend's points; graphs are cached, verified and rebuilt.

Agreement is checked with the bundled weights on real photos (the ``real_photos`` fixture) at the
two evaluation settings; the bundled model's graphs live in the session's cache (test/conftest.py),
as in use. Cache behaviour is checked with a tiny model in a temporary cache.
"""
import importlib.util
import logging
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from usp_core.inference.backends.base import BackendError
from usp_core.inference.backends.choose import make_runner
from usp_core.inference.detector import DetectorConfig, KeypointDetector
from usp_core.inference.graph_cache import MANIFEST
from usp_core.models.build import build_model
from usp_core.models.layers import BACKBONE_WIDTHS, ModelConfig
from usp_core.models.unsuperpoint import UnsuperPoint

SETTINGS = ((240, 320, 300), (480, 640, 1000))  # (height, width, top-k) of the evaluation protocol
PACKAGES = {"openvino": ("openvino",), "onnxruntime": ("onnxruntime", "onnx", "onnxscript")}  # what each needs
TINY = ModelConfig(widths=(4, 4, 8, 8, 8, 8, 16, 16), descriptor_dim=8)


def _missing(backend: str) -> list[str]:
    return [package for package in PACKAGES[backend] if importlib.util.find_spec(package) is None]


def _needs(backend: str):
    """Skip mark for a test of ``backend`` when any package it needs is not installed."""
    return pytest.mark.skipif(bool(_missing(backend)), reason=f"{', '.join(_missing(backend))} not installed")


CPU_BACKENDS = [pytest.param(name, marks=_needs(name)) for name in PACKAGES]


def _same_points(reference, other) -> tuple[float, float]:
    """(fraction of other's keypoints within 1e-3 px of one of reference's, max descriptor difference of those)."""
    keypoints, descriptors = reference.keypoints, reference.descriptors
    other_keypoints, other_descriptors = other.keypoints, other.descriptors
    distance = np.linalg.norm(other_keypoints[:, None] - keypoints[None], axis=2)
    nearest = distance.argmin(axis=1)
    same = distance[np.arange(len(nearest)), nearest] < 1e-3
    gap = np.abs(other_descriptors[same] - descriptors[nearest[same]]).max(initial=0.0)
    return float(same.mean()), float(gap)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_matches_torch_on_real_photos(backend, real_photos):
    torch_detector = KeypointDetector.from_pretrained(None, backend="torch")
    detector = KeypointDetector.from_pretrained(None, backend=backend, num_threads=2,
                                                config=DetectorConfig(precision="fp32"))
    assert detector.backend == backend and detector.precision == "fp32"
    for height, width, top_k in SETTINGS:
        torch_detector.config = detector.config = DetectorConfig(max_keypoints=top_k, precision="fp32")
        for photo in real_photos:
            image = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
            reference, found = torch_detector.detect(image)[0], detector.detect(image)[0]
            same, descriptor_gap = _same_points(reference, found)
            assert len(found) == len(reference) == top_k
            assert same >= 0.99 and descriptor_gap <= 1e-4, (backend, height, width, same, descriptor_gap)


def _tiny_model() -> UnsuperPoint:
    """The same small random model every call, with BatchNorm statistics that are not the identity."""
    torch.manual_seed(0)
    model = UnsuperPoint(TINY).eval()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    return model


def _dense_gap(runner, model: UnsuperPoint) -> float:
    """Largest difference between the runner's dense maps and the eager model's, on two input sizes."""
    gap = 0.0
    for shape in ((1, 1, 48, 64), (2, 1, 40, 56)):
        images = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            eager = model(images)
        gap = max(gap, *(float(np.abs(got - want.numpy()).max()) for got, want in zip(runner(images), eager)))
    return gap


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A function backend -> a cache folder holding _tiny_model()'s graph for that backend.

    One folder for the module; each backend's graph is exported on the first request for it.
    """
    folder, built = tmp_path_factory.mktemp("graph_cache"), set()

    def with_graph(backend: str) -> Path:
        if backend not in built:
            make_runner(backend, _tiny_model(), torch.device("cpu"), cache_dir=folder)
            built.add(backend)
        return folder
    return with_graph


def _entries(cache: Path) -> dict[Path, int]:
    """Entry folder -> latest modification time of its graph files (a rebuild rewrites them; a hit does not)."""
    return {folder: max(path.stat().st_mtime_ns for path in folder.iterdir() if path.name != MANIFEST)
            for folder in (cache / "graphs").iterdir()}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cached_graph_is_reused(backend, tiny_cache):
    cache = tiny_cache(backend)
    before = _entries(cache)
    runner = make_runner(backend, _tiny_model(), torch.device("cpu"), cache_dir=cache)
    assert _dense_gap(runner, _tiny_model()) < 1e-4 and _entries(cache) == before  # nothing rebuilt


@_needs("openvino")
def test_corrupt_graph_is_replaced(tiny_cache, tmp_path, caplog):
    """A flipped byte in a cached graph: the entry is rebuilt (one export) and the runner is right."""
    cache = shutil.copytree(tiny_cache("openvino"), tmp_path / "cache")
    (entry,) = [folder for folder in _entries(cache) if "openvino" in (folder / MANIFEST).read_text()]
    weights = entry / "model.bin"
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    weights.write_bytes(bytes(damaged))
    before = _entries(cache)
    with caplog.at_level(logging.WARNING, logger="usp_core.inference.graph_cache"):
        runner = make_runner("openvino", _tiny_model(), torch.device("cpu"), cache_dir=cache)
    assert "model.bin does not match its SHA-256" in caplog.text
    assert _dense_gap(runner, _tiny_model()) < 1e-4 and weights.read_bytes() != bytes(damaged)
    assert set(_entries(cache)) == set(before) and _entries(cache)[entry] > before[entry]  # replaced in place


@_needs("openvino")
@pytest.mark.parametrize("backbone", [name for name in BACKBONE_WIDTHS if name != TINY.backbone])
def test_openvino_runs_every_backbone(backbone, tmp_path):
    torch.manual_seed(0)
    model = UnsuperPoint(ModelConfig(backbone=backbone, descriptor_dim=16)).eval()
    assert _dense_gap(make_runner("openvino", model, torch.device("cpu"), cache_dir=tmp_path), model) < 1e-4


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_every_cpu_backend_runs_fine_and_patch_descriptors_and_fine_scores(backend, tmp_path):
    torch.manual_seed(0)
    model = UnsuperPoint(ModelConfig(backbone="fast", descriptor_dim=16, position_head="softargmax",
                                     fine_descriptor_width=8, fine_score_width=4, patch_descriptor_width=6)).eval()
    for layer in (model.point_descriptors.fine[-1], model.point_descriptors.patch[-1], model.point_scores.mlp[-1]):
        torch.nn.init.normal_(layer.weight, std=0.5)  # they start at zero: make them count
    assert _dense_gap(make_runner(backend, model, torch.device("cpu"), cache_dir=tmp_path), model) < 1e-4


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_every_cpu_backend_runs_superpoint(backend, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture="superpoint", backbone="fast", descriptor_dim=16)).eval()
    assert _dense_gap(make_runner(backend, model, torch.device("cpu"), cache_dir=tmp_path), model) < 1e-4


@pytest.mark.parametrize("backend, blocked, package", [("openvino", "openvino", "openvino"),
                                                       ("onnxruntime", "onnxruntime", "onnxruntime"),
                                                       ("onnxruntime", "onnxscript", "onnxscript")])
def test_missing_runtime_is_a_one_line_error_naming_the_package(backend, blocked, package, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, blocked, None)  # makes "import <blocked>" fail
    detector = KeypointDetector(_tiny_model(), backend=backend, cache_dir=tmp_path)
    with pytest.raises(BackendError) as error:
        detector.prepare()
    message = str(error.value)
    assert "\n" not in message and f"pip install {package}" in message and backend in message


def test_auto_falls_back_to_torch_with_a_log_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    detector = KeypointDetector(_tiny_model(), DetectorConfig(max_keypoints=20), cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="usp_core.inference.backends.choose"):
        assert detector.backend == "torch"
    assert "pip install openvino" in caplog.text and "running the network in torch" in caplog.text
    assert len(detector.detect(np.zeros((64, 80), np.uint8))[0]) == 20


@_needs("openvino")
@_needs("onnxruntime")
def test_auto_prefers_openvino_on_the_cpu_then_onnxruntime(tiny_cache, monkeypatch, caplog):
    assert KeypointDetector(_tiny_model(), cache_dir=tiny_cache("openvino")).backend == "openvino"
    monkeypatch.setitem(sys.modules, "openvino", None)
    with caplog.at_level(logging.WARNING, logger="usp_core.inference.backends.choose"):
        assert KeypointDetector(_tiny_model(), cache_dir=tiny_cache("onnxruntime")).backend == "onnxruntime"
    assert "running the network in onnxruntime" in caplog.text and "pip install openvino" in caplog.text


def _fail(*args, **kwargs):
    raise RuntimeError("simulated runtime failure\nsecond line")


@pytest.mark.parametrize("backend, target, name", [
    pytest.param("openvino", "openvino.Core", "read_model", marks=_needs("openvino")),
    pytest.param("onnxruntime", "onnxruntime", "InferenceSession", marks=_needs("onnxruntime")),
])
def test_runtime_failure_while_loading_is_a_backend_error_and_auto_falls_back(backend, target, name, tiny_cache,
                                                                               monkeypatch, caplog):
    cache = tiny_cache(backend)
    monkeypatch.setattr(f"{target}.{name}", _fail)
    with pytest.raises(BackendError) as error:
        KeypointDetector(_tiny_model(), backend=backend, cache_dir=cache).prepare()
    assert str(error.value) == f"backend {backend!r} cannot load the model: simulated runtime failure"
    monkeypatch.setitem(sys.modules, "openvino" if backend == "onnxruntime" else "onnxruntime", None)
    with caplog.at_level(logging.WARNING, logger="usp_core.inference.backends.choose"):
        assert KeypointDetector(_tiny_model(), cache_dir=cache).backend == "torch"
    assert "running the network in torch" in caplog.text and "simulated runtime failure" in caplog.text


def test_bad_backend_choices_are_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        KeypointDetector(_tiny_model(), backend="tensorrt")
    with pytest.raises(ValueError, match="backend 'openvino' runs on the CPU, not on cuda"):
        make_runner("openvino", _tiny_model(), torch.device("cuda"))
    with pytest.raises(ValueError, match="backend 'onnxruntime' runs on the CPU, not on meta"):
        KeypointDetector(_tiny_model().to("meta"), backend="onnxruntime")
    assert make_runner("auto", _tiny_model(), torch.device("cuda")).name == "torch"
    with pytest.raises(ValueError, match="num_threads"):
        KeypointDetector(_tiny_model(), num_threads=-1)


@_needs("openvino")
def test_to_another_device_chooses_the_backend_again(tiny_cache):
    """auto: openvino on the CPU; moved to a non-CPU device (meta stands in for CUDA here), torch."""
    detector = KeypointDetector(_tiny_model(), cache_dir=tiny_cache("openvino"))
    assert detector.backend == "openvino"
    detector.to("meta")
    assert detector.backend == "torch" and detector.device.type == "meta"

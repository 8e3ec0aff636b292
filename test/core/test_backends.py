"""Every inference backend gives the torch backend's points; graphs are cached, verified and rebuilt.

Agreement is checked with the bundled weights on real photos (../shared/data when present, and the
photo that ships with matplotlib) at the two evaluation settings; the bundled model's graphs live in
the default cache, as in use. Cache behaviour is checked with a tiny model in a temporary cache.
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
from matplotlib import cbook

from usp_core.backends import BackendError, make_runner
from usp_core.graph_cache import MANIFEST
from usp_core.inference import DetectorConfig, KeypointDetector
from usp_core.model import BACKBONE_WIDTHS, ModelConfig, UnsuperPoint

SETTINGS = ((240, 320, 300), (480, 640, 1000))  # (height, width, top-k) of the evaluation protocol
CPU_BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(module) is None,
                                                             reason=f"{module} is not installed"))
                for name, module in (("openvino", "openvino"), ("onnxruntime", "onnxscript"))]
TINY = ModelConfig(widths=(4, 4, 8, 8, 8, 8, 16, 16), descriptor_dim=8)


@pytest.fixture(scope="module")
def photos(request) -> list[np.ndarray]:
    """Grey uint8 photos: the first image of up to three shared evaluation sequences, and Grace Hopper."""
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        encoded = np.frombuffer(handle.read(), np.uint8)
    images = [cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)]
    shared = Path(request.config.rootpath).parent / "shared" / "data" / "eval"
    for folder in sorted(shared.glob("*/*"))[:3] if shared.is_dir() else []:
        image = cv2.imread(str(folder / "1.png"), cv2.IMREAD_GRAYSCALE)
        if image is not None:
            images.append(image)
    return images


def _same_points(reference, other) -> tuple[float, float]:
    """(fraction of other's keypoints within 1e-3 px of one of reference's, max descriptor difference of those)."""
    keypoints, _, descriptors = reference.numpy()
    other_keypoints, _, other_descriptors = other.numpy()
    distance = np.linalg.norm(other_keypoints[:, None] - keypoints[None], axis=2)
    nearest = distance.argmin(axis=1)
    same = distance[np.arange(len(nearest)), nearest] < 1e-3
    gap = np.abs(other_descriptors[same] - descriptors[nearest[same]]).max(initial=0.0)
    return float(same.mean()), float(gap)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_matches_torch_on_real_photos(backend, photos):
    for height, width, top_k in SETTINGS:
        config = DetectorConfig(max_keypoints=top_k)
        torch_detector = KeypointDetector.from_pretrained(None, config=config, backend="torch")
        detector = KeypointDetector.from_pretrained(None, config=config, backend=backend, num_threads=2)
        assert detector.backend == backend
        for photo in photos:
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
        gap = max(gap, *(float(np.abs(got - want.numpy()).max()) for got, want in zip(runner(images, False), eager)))
    return gap


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """A cache folder holding the graphs of _tiny_model() for each installed CPU backend (built once)."""
    folder = tmp_path_factory.mktemp("graph_cache")
    for name, module in (("openvino", "openvino"), ("onnxruntime", "onnxscript")):
        if importlib.util.find_spec(module) is not None:
            make_runner(name, _tiny_model(), torch.device("cpu"), cache_dir=folder)
    return folder


def _entries(cache: Path) -> dict[Path, int]:
    """Entry folder -> modification time of its manifest."""
    return {folder: (folder / MANIFEST).stat().st_mtime_ns for folder in (cache / "graphs").iterdir()}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cached_graph_is_reused(backend, tiny_cache):
    before = _entries(tiny_cache)
    runner = make_runner(backend, _tiny_model(), torch.device("cpu"), cache_dir=tiny_cache)
    assert _dense_gap(runner, _tiny_model()) < 1e-4 and _entries(tiny_cache) == before  # nothing rebuilt


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_graph_rebuilt_when_weights_change_and_replaced_when_corrupt(tiny_cache, tmp_path, caplog):
    cache, cpu = shutil.copytree(tiny_cache, tmp_path / "cache"), torch.device("cpu")
    model = _tiny_model()
    with torch.no_grad():
        model.score_head[1].bias += 0.5
    before = _entries(cache)
    assert _dense_gap(make_runner("openvino", model, cpu, cache_dir=cache), model) < 1e-4
    (new_entry,) = set(_entries(cache)) - set(before)  # new weights, new entry; the old one stays

    weights = new_entry / "model.bin"
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    weights.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="usp_core.graph_cache"):
        runner = make_runner("openvino", model, cpu, cache_dir=cache)
    assert "model.bin does not match its SHA-256" in caplog.text
    assert _dense_gap(runner, model) < 1e-4 and weights.read_bytes() != bytes(damaged)
    assert set(_entries(cache)) == set(before) | {new_entry}


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
@pytest.mark.parametrize("backbone", [name for name in BACKBONE_WIDTHS if name != TINY.backbone])
def test_openvino_runs_every_backbone(backbone, tmp_path):
    torch.manual_seed(0)
    model = UnsuperPoint(ModelConfig(backbone=backbone, descriptor_dim=16)).eval()
    assert _dense_gap(make_runner("openvino", model, torch.device("cpu"), cache_dir=tmp_path), model) < 1e-4


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
    with caplog.at_level(logging.WARNING, logger="usp_core.backends"):
        assert detector.backend == "torch"
    assert "pip install openvino" in caplog.text and "running the network in torch" in caplog.text
    assert len(detector.detect(np.zeros((64, 80), np.uint8))[0]) == 20


def test_auto_prefers_openvino_on_the_cpu_then_onnxruntime(tiny_cache, monkeypatch, caplog):
    pytest.importorskip("openvino")
    assert KeypointDetector(_tiny_model(), cache_dir=tiny_cache).backend == "openvino"
    pytest.importorskip("onnxscript")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with caplog.at_level(logging.WARNING, logger="usp_core.backends"):
        assert KeypointDetector(_tiny_model(), cache_dir=tiny_cache).backend == "onnxruntime"
    assert "running the network in onnxruntime" in caplog.text and "pip install openvino" in caplog.text


def test_bad_backend_choices_are_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        KeypointDetector(_tiny_model(), backend="tensorrt")
    with pytest.raises(ValueError, match="runs on the CPU"):
        make_runner("openvino", _tiny_model(), torch.device("cuda"))
    assert make_runner("auto", _tiny_model(), torch.device("cuda")).name == "torch"
    with pytest.raises(ValueError, match="num_threads"):
        KeypointDetector(_tiny_model(), num_threads=-1)


def test_to_another_device_chooses_the_backend_again(tmp_path):
    detector = KeypointDetector(_tiny_model(), backend="torch", cache_dir=tmp_path)
    assert detector.backend == "torch"
    runner = detector._runner
    detector.to("cpu")
    assert detector.backend == "torch" and detector._runner is not runner

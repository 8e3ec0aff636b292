"""Exported TorchScript / ONNX / fp16 weights reproduce the eager model."""
from pathlib import Path

import pytest
import torch

from usp_core.inference.export import ExportError, export_onnx, export_torchscript, export_weights
from usp_core.inference.weights import load_network
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_core.support.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from usp_core.training.config import TrainConfig, from_dict, to_dict

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

TINY = {"widths": [8, 8, 16, 16, 16, 16, 32, 32], "descriptor_dim": 32}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of a tiny model whose BatchNorm statistics are not the identity."""
    config = from_dict({"model": TINY})
    torch.manual_seed(0)
    model = UnsuperPoint(config.model)
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 1, 48, 64) * 0.5 + 0.2)
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    return save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(config), "step": 7, "seed": 0})


def _inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(1, 1, 48, 64, generator=generator), torch.rand(2, 1, 32, 40, generator=generator)]


def test_torchscript_matches_eager_at_several_sizes(checkpoint: Path, tmp_path: Path):
    model = load_network(checkpoint)
    path = export_torchscript(model, tmp_path / "m.ts", height=48, width=64)
    scripted = torch.jit.load(str(path))
    with torch.no_grad():
        for images in _inputs():
            eager = model(images)
            exported = scripted(images)
            assert len(exported) == 3
            for got, want in zip(exported, eager):
                assert got.shape == want.shape
                assert torch.allclose(got, want, atol=1e-5)


def test_onnx_matches_eager_at_several_sizes(checkpoint: Path, tmp_path: Path):
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    model = load_network(checkpoint)
    path = export_onnx(model, tmp_path / "m.onnx", height=48, width=64)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["score", "position", "descriptors"]
    with torch.no_grad():
        for images in _inputs():
            exported = session.run(None, {"images": images.numpy()})
            for got, want in zip(exported, model(images)):
                assert got.shape == tuple(want.shape)
                assert torch.allclose(torch.from_numpy(got), want, atol=1e-4)


def test_fp16_weights_are_compact_and_reload(checkpoint: Path, tmp_path: Path):
    model, state = load_network(checkpoint), load_checkpoint(checkpoint)
    path = export_weights(model, state, tmp_path / "unsuperpoint.pt")
    compact = torch.load(path, weights_only=True)
    assert {"model", "config", "step", "seed"} <= set(compact) and "optimizer" not in compact
    assert compact["step"] == 7 and compact["config"]["model"]["descriptor_dim"] == 32
    assert all(t.dtype == torch.float16 for t in compact["model"].values() if t.is_floating_point())
    assert path.stat().st_size < 0.7 * checkpoint.stat().st_size
    reloaded = load_network(path)
    images = _inputs()[0]
    with torch.no_grad():
        assert torch.allclose(reloaded(images).position, model(images).position, atol=0.05)


def test_mismatched_checkpoint_names_the_first_misfit(tmp_path: Path):
    config = to_dict(TrainConfig())
    save_checkpoint(tmp_path / "bad.pt", {"model": UnsuperPoint(from_dict({"model": TINY}).model).state_dict(),
                                          "config": config})
    with pytest.raises(CheckpointError, match=r"size mismatch for \S+: checkpoint \[[\d, ]+\], model \[[\d, ]+\]$"):
        load_network(tmp_path / "bad.pt")
    model = load_network(save_checkpoint(tmp_path / "ok.pt", {"model": UnsuperPoint(
        from_dict({"model": TINY}).model).state_dict(), "config": {"model": TINY}}))
    with pytest.raises(ExportError, match="multiples of 8"):
        export_torchscript(model, tmp_path / "x.ts", height=50, width=64)


def test_onnx_without_exporter_packages_is_a_clear_error(checkpoint: Path, tmp_path: Path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real_find_spec(name, *a))
    model = load_network(checkpoint)
    with pytest.raises(ExportError, match="needs the onnxscript package"):
        export_onnx(model, tmp_path / "m.onnx", height=48, width=64)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("export", [export_torchscript, export_onnx])
def test_a_failed_export_leaves_the_previous_file_and_no_partial_one(checkpoint: Path, tmp_path: Path, export,
                                                                      monkeypatch):
    if export is export_onnx:  # the check that fails here runs in onnxruntime
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")
    from usp_core.inference import export as export_module

    model = load_network(checkpoint)
    path = tmp_path / "m.out"
    path.write_bytes(b"the good export")
    monkeypatch.setattr(export_module, "check_outputs", lambda *args: 1 / 0)  # the check fails after the write
    with pytest.raises(ExportError, match="export failed: division by zero"):
        export(model, path, height=48, width=64)
    assert path.read_bytes() == b"the good export" and [p.name for p in tmp_path.iterdir()] == ["m.out"]
    monkeypatch.undo()
    export(model, path, height=48, width=64)
    assert path.stat().st_size > 1000

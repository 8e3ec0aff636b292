"""Export a trained network (UnsuperPoint or SuperPoint) to TorchScript, ONNX, or a compact weights-only checkpoint.

Exported graphs take images (B, 1, H, W) float in [0, 1] (H, W multiples of 8) and return the
dense maps as a plain tuple ``(score (B,1,H/8,W/8), position (B,2,H/8,W/8), descriptors (B,D,H/8,W/8))``,
the fields of ``DenseOutput``; top-k selection stays in the caller (``usp_core.inference.detector``).

- TorchScript: ``torch.jit.trace`` at an example size; the traced graph reads sizes from its input,
  so it runs at other sizes too (tested).
- ONNX: ``torch.onnx.export(dynamo=True)`` with dynamic batch, height and width (multiples of 8).
  torch 2.13's exporter needs the ``onnx`` and ``onnxscript`` packages; running the file needs
  ``onnxruntime`` (or any ONNX runtime).
- Weights: ``{"model", "config": {"model": ...}, "step", "seed"}`` with float tensors in fp16 by
  default, the form the package ships and ``KeypointDetector.from_pretrained`` reads.
- ``export_program``: the ``torch.export`` program with the same dynamic shapes, which the
  inference backends (usp_core.inference.backends) convert to their runtime.

Every file export is checked against the eager model on the example input (``check_outputs``)
before it is reported done; ``export_program`` is not, and the backend that converts its program
checks the converted graph against the eager model instead.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from usp_core.support.atomic import atomic_path
from usp_core.support.checkpoint import save_checkpoint
from usp_core.support.errors import first_line

__all__ = ["ExportError", "DenseTuple", "export_torchscript", "export_onnx", "export_weights",
           "export_program", "check_outputs", "onnx_session", "quiet_pytree_deprecation", "FORMATS", "OUTPUT_NAMES"]

FORMATS = ("torchscript", "onnx", "weights")
OUTPUT_NAMES = ("score", "position", "descriptors")
TOLERANCE = 1e-4  # max abs difference allowed between exported and eager outputs


class ExportError(RuntimeError):
    """An export could not be written or does not reproduce the eager model."""


class DenseTuple(nn.Module):
    """Wraps a network (UnsuperPoint or SuperPoint): forward returns a plain tuple (score, position, descriptors)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W) -> (score (B,1,H/8,W/8), position (B,2,H/8,W/8), descriptors (B,D,H/8,W/8))."""
        output = self.model(images)
        return output.score, output.position, output.descriptors


def _example(wrapper: DenseTuple, height: int, width: int, batch: int = 1) -> torch.Tensor:
    """A seeded (batch, C, height, width) input for the wrapped model (C from its config, else 1)."""
    if height % 8 or width % 8 or height <= 0 or width <= 0:
        raise ExportError(f"export size must be positive multiples of 8, got {height}x{width}")
    device = next(wrapper.parameters()).device
    channels = int(getattr(getattr(wrapper.model, "config", None), "in_channels", 1))
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, channels, height, width, generator=generator).to(device)


def _dynamic_shapes(cell: int = 8) -> dict:
    """torch.export dynamic shapes of the input "images": any batch, height and width multiples of ``cell``."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    rows = torch.export.Dim("rows", min=1, max=1024)
    cols = torch.export.Dim("cols", min=1, max=1024)
    return {"images": {0: batch, 2: cell * rows, 3: cell * cols}}


def check_outputs(exported: tuple, reference: tuple, what: str) -> None:
    """ExportError unless each exported output (array or tensor) has the shape of the eager model's
    (tensor) and lies within TOLERANCE of it; ``what`` names the export in the message."""
    if len(exported) != len(reference):
        raise ExportError(f"{what} gives {len(exported)} outputs, not {len(reference)}")
    for name, got, want in zip(OUTPUT_NAMES, exported, reference):
        got = torch.as_tensor(got).to(want.device)
        if got.shape != want.shape or not torch.allclose(got, want, atol=TOLERANCE, rtol=TOLERANCE):
            raise ExportError(f"{what} output '{name}' differs from the eager model")


def export_torchscript(model: nn.Module, path: str | Path, height: int = 240, width: int = 320) -> Path:
    """Trace ``model`` on a (1, 1, height, width) input and save it. Returns the path."""
    wrapper = DenseTuple(model).eval()
    example = _example(wrapper, height, width)
    with atomic_path(path) as staged, torch.no_grad(), warnings.catch_warnings(), _export_errors("TorchScript"):
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated")
        torch.jit.trace(wrapper, example).save(str(staged))
        reloaded = torch.jit.load(str(staged), map_location=example.device)
        check_outputs(reloaded(example), wrapper(example), "TorchScript")
    return Path(path)


def export_onnx(model: nn.Module, path: str | Path, height: int = 240, width: int = 320,
                opset: int = 18) -> Path:
    """Export to ONNX with dynamic batch/height/width (input "images"; outputs OUTPUT_NAMES) as one self-contained
    file (the weights inside), written atomically once checked. Returns the path.

    Checked with onnxruntime when it is installed. Raises ExportError without onnx/onnxscript.
    """
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs the {' and '.join(missing)} package(s): pip install onnx onnxscript")
    import onnx

    wrapper = DenseTuple(copy.deepcopy(model).cpu()).eval()
    example = _example(wrapper, height, width)
    with atomic_path(path) as staged, _export_errors("ONNX"):
        with torch.no_grad(), quiet_pytree_deprecation(), tempfile.TemporaryDirectory(prefix="usp_onnx_") as folder:
            exported = Path(folder) / "model.onnx"  # the exporter writes the weights beside it (model.onnx.data)
            torch.onnx.export(wrapper, (example,), str(exported), dynamo=True, opset_version=opset, verbose=False,
                              input_names=["images"], output_names=list(OUTPUT_NAMES),
                              dynamic_shapes=_dynamic_shapes())
            reference = wrapper(example)
            staged.write_bytes(onnx.load(str(exported)).SerializeToString())  # one file, the weights inside
        session = onnx_session(staged)
        if session is not None:
            check_outputs(tuple(session.run(None, {"images": example.numpy()})), reference, "ONNX")
    return Path(path)


@contextlib.contextmanager
def _export_errors(what: str):
    """Any exporter or runtime failure as ExportError (one line), ExportError as it is."""
    try:
        yield
    except ExportError:
        raise
    except Exception as error:  # the exporters raise many types (UserError, RuntimeError, onnx errors, ...)
        raise ExportError(f"{what} export failed: {first_line(error)}") from error


def export_program(model: nn.Module, height: int = 64, width: int = 96) -> torch.export.ExportedProgram:
    """``torch.export`` of DenseTuple(model), float32 on the CPU, with dynamic batch, height and width.

    Heights and widths are multiples of ``model.cell`` (8 when absent). The example batch holds 2
    images, since torch.export fixes a dimension it sees at size 1. Raises ExportError (one line)
    when the model does not export.
    """
    wrapper = DenseTuple(copy.deepcopy(model).float().cpu()).eval()
    example = _example(wrapper, height, width, batch=2)
    with torch.no_grad(), _export_errors(f"torch.export of {type(model).__name__}"):
        return torch.export.export(wrapper, (example,), dynamic_shapes=_dynamic_shapes(getattr(model, "cell", 8)))


@contextlib.contextmanager
def quiet_pytree_deprecation():
    """Silence torch 2.13's FutureWarning about ``isinstance(treespec, LeafSpec)``, raised inside torch's
    own pytree code whenever an exported program is copied (by the ONNX exporter, openvino.convert_model)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated", category=FutureWarning)
        yield


def onnx_session(path: str | Path):
    """An onnxruntime CPU InferenceSession for ``path``, or None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def export_weights(model: nn.Module, state: dict[str, Any], path: str | Path, half: bool = True) -> Path:
    """Write a compact inference checkpoint (floats in fp16 when ``half``) atomically. Returns the path.

    Keeps the model config and the run's provenance (``step``, ``seed``, the full training config
    under ``train_config``); drops optimizer and scheduler state.
    """
    weights = {
        name: tensor.half() if half and tensor.is_floating_point() else tensor
        for name, tensor in model.state_dict().items()
    }
    config = state.get("config", {})
    compact = {
        "model": {name: tensor.detach().cpu().clone() for name, tensor in weights.items()},
        "config": {"model": config.get("model", {})},
        "train_config": config,
        "step": state.get("step", 0),
        "seed": state.get("seed", 0),
    }
    return save_checkpoint(path, compact)

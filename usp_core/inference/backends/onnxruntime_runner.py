"""The ONNX Runtime backend: the model exported to ONNX once (cached on disk), run on the CPU.

The ONNX graph has dynamic batch, height and width, so one session serves every input size.
Exporting needs the ``onnx`` and ``onnxscript`` packages besides ``onnxruntime``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from usp_core.inference.backends.base import require
from usp_core.inference.export import export_onnx
from usp_core.inference.graph_cache import GraphCache, describe_graph

__all__ = ["OnnxRuntimeRunner"]

FILE = "model.onnx"


class OnnxRuntimeRunner:
    """ONNX Runtime's CPU execution provider for a snapshot of ``model``'s weights (taken now)."""

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, model: nn.Module, num_threads: int, cache: GraphCache) -> None:
        ort, onnx, onnxscript = require("onnxruntime", "onnxruntime", "onnx", "onnxscript")
        versions = f"{ort.__version__} (onnx {onnx.__version__}, onnxscript {onnxscript.__version__})"
        description = describe_graph(model, "onnxruntime", versions, runner=OnnxRuntimeRunner,
                                     inputs="images (batch, C, height, width), all but C dynamic", precision="f32")
        files = cache.get_or_build(description, (FILE,), lambda: {FILE: _export(model)})
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(files[FILE], options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """images (B, C, H, W) float32 on the CPU -> dense maps as numpy float32 (B, ., h, w)."""
        array = np.ascontiguousarray(images.detach().numpy(), dtype=np.float32)
        return tuple(self._session.run(None, {"images": array}))


def _export(model: nn.Module) -> bytes:
    """One self-contained ONNX file (weights inside) of ``model``, checked against it by export_onnx.

    Raises ExportError (one line) when the exporter fails.
    """
    with tempfile.TemporaryDirectory(prefix="usp_onnx_") as folder:
        return export_onnx(model, Path(folder) / FILE, height=64, width=96).read_bytes()

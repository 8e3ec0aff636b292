"""The OpenVINO backend: the model converted once (cached on disk), compiled per input shape for the CPU in float32.

The graph on disk has dynamic batch, height and width; a compiled model is made for each input
shape on first sight (about 0.2 s) and kept in memory, since the static shapes ran 4 to 12 % faster
than one dynamically shaped compiled model here. Compilation properties: the LATENCY performance
hint, ``INFERENCE_NUM_THREADS`` when a thread count is given, and float32 inference precision (on
CPUs with AMX OpenVINO would otherwise run in bfloat16, about 1e-2 away from torch).
"""
from __future__ import annotations

import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from usp_core.inference.backends.base import require
from usp_core.inference.export import (OUTPUT_NAMES, DenseTuple, ExportError, check_outputs, export_program,
                                       quiet_pytree_deprecation)
from usp_core.inference.graph_cache import GraphCache, describe_graph
from usp_core.support.errors import first_line

__all__ = ["OpenVinoRunner"]

COMPILED_SHAPES = 4  # compiled input shapes kept in memory, least recently used dropped first
FILES = ("model.xml", "model.bin")


class OpenVinoRunner:
    """OpenVINO on the CPU for a snapshot of ``model``'s weights (taken now)."""

    name = "openvino"

    def __init__(self, model: nn.Module, num_threads: int, cache: GraphCache) -> None:
        (self._ov,) = require("openvino", "openvino")
        self._core = self._ov.Core()
        description = describe_graph(model, "openvino", self._ov.__version__, runner=OpenVinoRunner,
                                     inputs="images (batch, C, height, width), all but C dynamic", precision="f32")
        files = cache.get_or_build(description, FILES, lambda: self._convert(model))
        self._model = self._core.read_model(files["model.xml"], files["model.bin"])
        self._properties = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if num_threads:
            self._properties["INFERENCE_NUM_THREADS"] = num_threads
        self._requests: OrderedDict[tuple[int, ...], object] = OrderedDict()

    def __call__(self, images: torch.Tensor, half: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """images (B, C, H, W) float32 on the CPU -> dense maps as numpy float32 (B, ., h, w); ``half`` is ignored.

        The maps are views into the compiled model's output buffers (no copy): valid until the next call.
        """
        array = np.ascontiguousarray(images.detach().numpy(), dtype=np.float32)
        outputs = self._request(array.shape).infer([array], share_inputs=True, share_outputs=True)
        return tuple(outputs[index] for index in range(len(OUTPUT_NAMES)))

    def _request(self, shape: tuple[int, ...]):
        """The infer request of the model compiled for ``shape`` (compiled on first use)."""
        if shape in self._requests:
            self._requests.move_to_end(shape)
            return self._requests[shape]
        static = self._model.clone()
        static.reshape(list(shape))
        request = self._core.compile_model(static, "CPU", self._properties).create_infer_request()
        self._requests[shape] = request
        if len(self._requests) > COMPILED_SHAPES:
            self._requests.popitem(last=False)
        return request

    def _convert(self, model: nn.Module) -> dict[str, bytes]:
        """IR files of ``model`` (float32 weights), checked against the eager model; ExportError on failure."""
        program = export_program(model)
        try:
            with quiet_pytree_deprecation():
                converted = self._ov.convert_model(program)
        except Exception as error:  # the converter raises its own types
            raise ExportError(f"openvino.convert_model failed: {first_line(error)}") from error
        with tempfile.TemporaryDirectory(prefix="usp_openvino_") as folder:
            self._ov.save_model(converted, str(Path(folder) / FILES[0]), compress_to_fp16=False)
            files = {name: (Path(folder) / name).read_bytes() for name in FILES}
        example = program.example_inputs[0][0]
        compiled = self._core.compile_model(self._core.read_model(files["model.xml"], files["model.bin"]), "CPU",
                                            {"INFERENCE_PRECISION_HINT": "f32"})
        with torch.no_grad():
            reference = DenseTuple(model)(example)
        got = compiled(example.numpy())
        check_outputs(tuple(got[index] for index in range(len(OUTPUT_NAMES))), reference, "the OpenVINO graph")
        return files

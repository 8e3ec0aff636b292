"""The OpenVINO backend: the model converted once (cached on disk), compiled per input shape for the CPU.

The graph on disk has dynamic batch, height and width; a compiled model is made for each input
shape on first sight (about 0.2 s) and kept in memory, since the static shapes ran 4 to 12 % faster
than one dynamically shaped compiled model here. Compilation properties: the LATENCY performance
hint, ``INFERENCE_NUM_THREADS`` when a thread count is given, and the inference precision: float32
for ``fp32`` and ``int8`` (on CPUs with AMX OpenVINO's default would be bfloat16), bfloat16 for ``bf16``.

int8: each input shape gets its own quantised graph, made at its first sight (seconds) by NNCF's
post-training quantisation calibrated on photos at that size (usp_core.inference.calibration), and
cached on disk like the float graph, keyed also by the shape, NNCF's version, the photos' digest and the
source of usp_core.inference.calibration (which prepares them).
What is quantised: NNCF's default (``PERFORMANCE`` preset: symmetric int8 weights and activations) on
the inputs of every convolution but the last one before each output, with fast bias correction.
:func:`output_head_ops` finds what stays float32: those last convolutions (the score, descriptor and
position-logit heads' output layers) and every op between them and the outputs: the peak fit and
cell-grid arithmetic that turns the full-resolution logits into pixel positions, the sigmoid of the
scores, and the bilinear sampling and normalisation of the descriptors. Measured on the bundled v3 at
both evaluation sizes (share of fp32's points with an int8 point within 0.5 px): with int8 logits 84 %;
with float logits but the peak fit's gathers and arithmetic quantised (NNCF quantises what it meets),
49 %; with all of it float, 88-98 %.
"""
from __future__ import annotations

import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from usp_core.inference.backends.base import BackendError, require
from usp_core.inference import calibration
from usp_core.inference.calibration import CalibrationError, calibration_set
from usp_core.inference.export import (OUTPUT_NAMES, DenseTuple, ExportError, check_outputs, export_program,
                                       quiet_pytree_deprecation)
from usp_core.inference.graph_cache import GraphCache, describe_graph, source_digest
from usp_core.support.errors import first_line

__all__ = ["OpenVinoRunner", "output_head_ops"]

COMPILED_SHAPES = 4  # compiled input shapes kept in memory, least recently used dropped first
FILES = ("model.xml", "model.bin")
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # INFERENCE_PRECISION_HINT of each precision


class OpenVinoRunner:
    """OpenVINO on the CPU for a snapshot of ``model``'s weights (taken now), in ``precision`` (fp32, bf16, int8).

    ``calibration_dir``: int8's calibration photos (usp_core.inference.calibration); chosen and hashed now, read
    at the first image of each size. Raises BackendError (one line) when int8 has no photos or no NNCF.
    """

    name = "openvino"

    def __init__(self, model: nn.Module, num_threads: int, cache: GraphCache, precision: str = "fp32",
                 calibration_dir: str | Path | None = None) -> None:
        (self._ov,) = require("openvino", "openvino")
        if precision == "int8":
            (self._nncf,) = require("openvino", "nncf")
            try:
                self._calibration = calibration_set(calibration_dir)
            except CalibrationError as error:
                raise BackendError(str(error)) from None
        self.precision, self._cache = precision, cache
        self._core = self._ov.Core()
        self._description = describe_graph(model, "openvino", self._ov.__version__, runner=OpenVinoRunner,
                                           inputs="images (batch, C, height, width), all but C dynamic",
                                           precision="f32")
        files = cache.get_or_build(self._description, FILES, lambda: self._convert(model))
        self._model = self._read(files)
        self._properties = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": HINTS[precision]}
        if num_threads:
            self._properties["INFERENCE_NUM_THREADS"] = num_threads
        self._requests: OrderedDict[tuple[int, ...], object] = OrderedDict()

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """images (B, C, H, W) float32 on the CPU -> dense maps as numpy float32 (B, ., h, w).

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
        static = self._quantized(*shape[1:]) if self.precision == "int8" else self._model.clone()
        static.reshape(list(shape))
        request = self._core.compile_model(static, "CPU", self._properties).create_infer_request()
        self._requests[shape] = request
        if len(self._requests) > COMPILED_SHAPES:
            self._requests.popitem(last=False)
        return request

    def _quantized(self, channels: int, height: int, width: int):
        """The int8 graph for images of ``height`` x ``width`` (any batch), from the cache or made now."""
        preprocessing = source_digest(calibration)  # None when unreadable: then nothing is cached
        description = self._description and preprocessing and {
            **self._description, "inputs": f"images (batch, {channels}, {height}, {width}), batch dynamic",
            "sources": {**self._description["sources"], "calibration": preprocessing},
            "precision": f"int8, NNCF {self._nncf.__version__}, {len(self._calibration.photos)} calibration photos "
                         f"sha256 {self._calibration.digest}"}
        files = self._cache.get_or_build(description, FILES,
                                         lambda: self._save(self._quantize(channels, height, width)))
        return self._read(files)

    def _quantize(self, channels: int, height: int, width: int):
        """An int8 copy of the float graph, calibrated on the photos at ``height`` x ``width`` (see the module
        docstring); its batch stays dynamic."""
        static = self._model.clone()
        static.reshape([1, channels, height, width])
        images = self._calibration.images(height, width)
        kept_float = self._nncf.IgnoredScope(names=output_head_ops(static), validate=False)
        quantized = self._nncf.quantize(static, self._nncf.Dataset(images), subset_size=len(images),
                                        preset=self._nncf.QuantizationPreset.PERFORMANCE, ignored_scope=kept_float)
        quantized.reshape([-1, channels, height, width])
        return quantized

    def _read(self, files: dict[str, bytes]):
        return self._core.read_model(files["model.xml"], files["model.bin"])

    def _save(self, graph) -> dict[str, bytes]:
        """The IR files of an OpenVINO graph (weights as they are: float32, or int8 once quantised)."""
        with tempfile.TemporaryDirectory(prefix="usp_openvino_") as folder:
            self._ov.save_model(graph, str(Path(folder) / FILES[0]), compress_to_fp16=False)
            return {name: (Path(folder) / name).read_bytes() for name in FILES}

    def _convert(self, model: nn.Module) -> dict[str, bytes]:
        """IR files of ``model`` (float32 weights), checked against the eager model; ExportError on failure."""
        program = export_program(model)
        try:
            with quiet_pytree_deprecation():
                converted = self._ov.convert_model(program)
        except Exception as error:  # the converter raises its own types
            raise ExportError(f"openvino.convert_model failed: {first_line(error)}") from error
        files = self._save(converted)
        example = program.example_inputs[0][0]
        compiled = self._core.compile_model(self._read(files), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        with torch.no_grad():
            reference = DenseTuple(model)(example)
        got = compiled(example.numpy())
        check_outputs(tuple(got[index] for index in range(len(OUTPUT_NAMES))), reference, "the OpenVINO graph")
        return files


def output_head_ops(graph) -> list[str]:
    """Names of the ops of an OpenVINO graph from its last convolutions to its outputs: walking back from every
    output through the ops that are not convolutions up to the first convolution on each path, every op met,
    those convolutions included (a ShapeOf reads only its input's shape, so the walk does not pass it)."""
    found, seen = [], set()
    pending = [result.input_value(0).get_node() for result in graph.get_results()]
    while pending:
        node = pending.pop()
        if node.get_friendly_name() in seen or node.get_type_name() == "ShapeOf":
            continue
        seen.add(node.get_friendly_name())
        found.append(node.get_friendly_name())
        if node.get_type_name() != "Convolution":
            pending.extend(value.get_node() for value in node.input_values())
    return sorted(found)

"""The runner for a backend name and precision: "auto" picks the fastest that runs here (see
usp_core.inference.backends and usp_core.inference.precision)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from usp_core.inference.backends.base import BackendError, Runner, check
from usp_core.inference.backends.onnxruntime_runner import OnnxRuntimeRunner
from usp_core.inference.backends.openvino_runner import OpenVinoRunner
from usp_core.inference.backends.torch_runner import TorchRunner
from usp_core.inference.calibration import calibration_given
from usp_core.inference.export import ExportError
from usp_core.inference.graph_cache import GraphCache
from usp_core.inference.precision import PrecisionGate, resolve_precision
from usp_core.support.errors import first_line

__all__ = ["make_runner", "CPU_PREFERENCE"]

logger = logging.getLogger(__name__)

CPU_PREFERENCE = ("openvino", "onnxruntime")  # fastest first (see the package docstring)


def make_runner(backend: str, model: nn.Module, device: torch.device, num_threads: int = 0,
                cache_dir: str | Path | None = None, precision: str = "auto", gate: PrecisionGate | None = None,
                calibration_dir: str | Path | None = None) -> Runner:
    """The runner for ``backend`` (one of BACKENDS) and ``model`` (eval mode, on ``device``) in ``precision``.

    ``num_threads`` > 0 caps the CPU threads of the runtime (0: its default). ``gate``: the accuracy gate of
    the model's weights (for precision ``auto``); ``calibration_dir``: int8's photos. Raises ValueError as
    :func:`check` does, and BackendError when an explicitly named backend cannot run, or not in the
    precision asked for; ``auto`` falls back instead, with a log line.
    """
    check(backend, device)
    options = Options(num_threads, cache_dir, precision, gate, calibration_dir)
    if backend == "torch" or (backend == "auto" and device.type != "cpu"):
        return _torch(model, device, options)
    if backend != "auto":
        return _cpu_runner(backend, model, device, options)
    reasons = []
    for candidate in CPU_PREFERENCE:
        try:
            runner = _cpu_runner(candidate, model, device, options)
        except BackendError as error:
            reasons.append(first_line(error))
            continue
        if reasons:
            logger.warning("backend auto: running the network in %s (%s)", candidate, "; ".join(reasons))
        return runner
    logger.warning("backend auto: running the network in torch (%s)", "; ".join(reasons))
    return _torch(model, device, options)


class Options(NamedTuple):
    """What every runner is made with besides the model."""

    num_threads: int
    cache_dir: str | Path | None
    precision: str
    gate: PrecisionGate | None
    calibration_dir: str | Path | None

    def resolve(self, backend: str, device: torch.device) -> str:
        """The concrete precision in ``backend``; BackendError (one line) when it cannot run there."""
        try:
            return resolve_precision(self.precision, backend, device, self.gate,
                                     calibrated=calibration_given(self.calibration_dir))
        except ValueError as error:
            raise BackendError(str(error)) from None


def _torch(model: nn.Module, device: torch.device, options: Options) -> Runner:
    return TorchRunner(model, options.num_threads, options.resolve("torch", device))


def _cpu_runner(backend: str, model: nn.Module, device: torch.device, options: Options) -> Runner:
    """An openvino or onnxruntime runner; export and runtime failures (reading, compiling, loading the
    graph) become BackendError, so that ``auto`` falls back."""
    precision = options.resolve(backend, device)
    try:
        if backend == "openvino":
            return OpenVinoRunner(model, options.num_threads, GraphCache(options.cache_dir), precision,
                                  options.calibration_dir)
        return OnnxRuntimeRunner(model, options.num_threads, GraphCache(options.cache_dir))
    except BackendError:
        raise
    except ExportError as error:
        raise BackendError(f"backend {backend!r} cannot convert the model: {first_line(error)}") from error
    except Exception as error:  # the runtimes raise their own types (openvino RuntimeError, onnxruntime Fail, ...)
        raise BackendError(f"backend {backend!r} cannot load the model: {first_line(error)}") from error

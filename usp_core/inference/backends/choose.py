"""The runner for a backend name: "auto" picks the fastest that runs here (see usp_core.inference.backends)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from usp_core.inference.backends.base import BackendError, Runner, check
from usp_core.inference.backends.onnxruntime_runner import OnnxRuntimeRunner
from usp_core.inference.backends.openvino_runner import OpenVinoRunner
from usp_core.inference.backends.torch_runner import TorchRunner
from usp_core.inference.export import ExportError
from usp_core.inference.graph_cache import GraphCache
from usp_core.support.errors import first_line

__all__ = ["make_runner", "CPU_PREFERENCE"]

logger = logging.getLogger(__name__)

CPU_PREFERENCE = ("openvino", "onnxruntime")  # fastest first (see the package docstring)


def make_runner(backend: str, model: nn.Module, device: torch.device, num_threads: int = 0,
                cache_dir: str | Path | None = None) -> Runner:
    """The runner for ``backend`` (one of BACKENDS) and ``model`` (eval mode, on ``device``).

    ``num_threads`` > 0 caps the CPU threads of the runtime (0: its default). Raises ValueError as
    :func:`check` does, and BackendError when an explicitly named backend cannot run; ``auto`` falls
    back instead, with a log line.
    """
    check(backend, device)
    if backend == "torch" or (backend == "auto" and device.type != "cpu"):
        return _torch(model, num_threads)
    if backend != "auto":
        return _cpu_runner(backend, model, num_threads, cache_dir)
    reasons = []
    for candidate in CPU_PREFERENCE:
        try:
            runner = _cpu_runner(candidate, model, num_threads, cache_dir)
        except BackendError as error:
            reasons.append(first_line(error))
            continue
        if reasons:
            logger.warning("backend auto: running the network in %s (%s)", candidate, "; ".join(reasons))
        return runner
    logger.warning("backend auto: running the network in torch (%s)", "; ".join(reasons))
    return _torch(model, num_threads)


def _torch(model: nn.Module, num_threads: int) -> Runner:
    return TorchRunner(model, num_threads)


def _cpu_runner(backend: str, model: nn.Module, num_threads: int, cache_dir: str | Path | None) -> Runner:
    """An openvino or onnxruntime runner; export and runtime failures (reading, compiling, loading the
    graph) become BackendError, so that ``auto`` falls back."""
    runner_class = OpenVinoRunner if backend == "openvino" else OnnxRuntimeRunner
    try:
        return runner_class(model, num_threads, GraphCache(cache_dir))
    except BackendError:
        raise
    except ExportError as error:
        raise BackendError(f"backend {backend!r} cannot convert the model: {first_line(error)}") from error
    except Exception as error:  # the runtimes raise their own types (openvino RuntimeError, onnxruntime Fail, ...)
        raise BackendError(f"backend {backend!r} cannot load the model: {first_line(error)}") from error

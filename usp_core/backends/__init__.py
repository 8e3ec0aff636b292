"""Inference backends: the runtime that evaluates the dense network, behind one small interface.

A runner takes the network input ``images (B, C, H, W)`` float32 in [0, 1] (H, W multiples of the
cell) on the model's device and returns the dense maps as float32 numpy arrays ``(score (B, 1, h, w),
position (B, 2, h, w), descriptors (B, D, h, w))``, valid until its next call (they may be views into
the runtime's buffers); point selection is shared (usp_core.selection) and copies what it keeps.

- ``torch``: the eager module (any device, float16 autocast on CUDA when asked).
- ``openvino``: the module exported with ``torch.export`` and converted by ``openvino.convert_model``,
  compiled for the CPU in float32 per input shape. The fastest on a CPU: with the light VGG weights
  (unsuperpoint_vgg) at 240x320, usp-bench timed it at about 0.8x SIFT's time on 2 busy cores (run
  usp-bench for this machine's figures).
- ``onnxruntime``: the module exported to ONNX (dynamic shapes) and run by ONNX Runtime on the CPU.

``auto`` takes torch on a CUDA device; on the CPU the first of openvino and onnxruntime that is
installed and converts the model, else torch, logging why. Exported graphs are cached on disk
(usp_core.graph_cache), so only the first use of given weights pays for the export.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np
import torch
from torch import nn

from usp_core.errors import first_line

__all__ = ["BACKENDS", "BackendError", "Runner", "check", "make_runner", "require"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
CPU_PREFERENCE = ("openvino", "onnxruntime")  # fastest first (see the module docstring)


class BackendError(RuntimeError):
    """A backend that cannot run here: its runtime is not installed, or the model does not convert. One line."""


class Runner(Protocol):
    """Evaluates the dense network; see the module docstring for shapes."""

    name: str

    def __call__(self, images: torch.Tensor, half: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """images (B, C, H, W) float32 -> (score (B,1,h,w), position (B,2,h,w), descriptors (B,D,h,w)) numpy float32."""


def require(backend: str, *packages: str) -> list[ModuleType]:
    """Import ``packages``; BackendError naming what to pip install when any is missing."""
    modules, missing = [], []
    for package in packages:
        try:
            modules.append(importlib.import_module(package))
        except ImportError:
            missing.append(package)
    if missing:
        raise BackendError(f"backend {backend!r} needs the Python package(s) {', '.join(missing)}: "
                           f"pip install {' '.join(missing)}")
    return modules


def check(backend: str, device: torch.device) -> None:
    """ValueError (one line) for a backend not in BACKENDS, or a CPU-only backend with a non-CPU ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend not in ("auto", "torch") and device.type != "cpu":
        raise ValueError(f"backend {backend!r} runs on the CPU, not on {device} (use backend torch or auto)")


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
    from usp_core.backends.torch_runner import TorchRunner

    return TorchRunner(model, num_threads)


def _cpu_runner(backend: str, model: nn.Module, num_threads: int, cache_dir: str | Path | None) -> Runner:
    """An openvino or onnxruntime runner; export and runtime failures (reading, compiling, loading the
    graph) become BackendError, so that ``auto`` falls back."""
    from usp_core.export import ExportError
    from usp_core.graph_cache import GraphCache

    if backend == "openvino":
        from usp_core.backends.openvino_runner import OpenVinoRunner as runner_class
    else:
        from usp_core.backends.onnxruntime_runner import OnnxRuntimeRunner as runner_class
    try:
        return runner_class(model, num_threads, GraphCache(cache_dir))
    except BackendError:
        raise
    except ExportError as error:
        raise BackendError(f"backend {backend!r} cannot convert the model: {first_line(error)}") from error
    except Exception as error:  # the runtimes raise their own types (openvino RuntimeError, onnxruntime Fail, ...)
        raise BackendError(f"backend {backend!r} cannot load the model: {first_line(error)}") from error

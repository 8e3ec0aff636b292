"""What every inference backend shares: the names, the runner interface, one-line errors, imports on demand."""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol

import numpy as np
import torch

__all__ = ["BACKENDS", "BackendError", "Runner", "check", "require"]

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")


class BackendError(RuntimeError):
    """A backend that cannot run here: its runtime is not installed, or the model does not convert. One line."""


class Runner(Protocol):
    """Evaluates the dense network; see usp_core.inference.backends for the shapes."""

    name: str
    precision: str  # what it computes in (usp_core.inference.precision): fp32, fp16, bf16 or int8

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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

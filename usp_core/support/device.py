"""Choosing a torch device from a user's string: one set of rules for the CLIs and the ROS nodes."""
from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """auto | cpu | cuda | cuda:N (or a torch.device) -> torch.device usable on this machine.

    "auto" is the current CUDA device when there is one, else cpu. A CUDA device always carries its index
    (torch.device("cuda") != torch.device("cuda:0"), and the nodes compare devices). Raises ValueError naming
    the problem for an unknown name, or for a CUDA device this machine does not have.
    """
    name = str(name)
    if name == "auto":
        return torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    index = name.removeprefix("cuda:") if name.startswith("cuda:") else ("0" if name == "cuda" else None)
    if index is None or not index.isdigit():
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine (use auto or cpu)")
    if int(index) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(f"cuda:{index}")

"""Atomic checkpoint files.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled objects), so
it loads with ``torch.load(..., weights_only=True)``. Saving writes a temporary file in the target's
folder, flushes and fsyncs it, then ``os.replace``-s it over the target: a crash or kill at any point
leaves either the previous checkpoint or the new one, never a truncated file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from usp_core.atomic import atomic_write

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "model_weights", "first_line"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not a checkpoint dict."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type name when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def model_weights(state: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint dict, without DistributedDataParallel's "module." prefix.

    Raises CheckpointError when ``state`` has no "model" entry.
    """
    if "model" not in state:
        raise CheckpointError(f"cannot load checkpoint {path}: no 'model' entry (keys: {sorted(state)})")
    return {key.removeprefix("module."): value for key, value in state["model"].items()}


def model_from_checkpoint(state: dict[str, Any], path: str | Path):
    """The UnsuperPoint described by a checkpoint dict ("config" with a "model" section), weights loaded.

    Raises CheckpointError when the config or the weights do not make a model.
    """
    from usp_core.model import ModelConfig, UnsuperPoint  # the model module does not need this one

    weights = model_weights(state, path)
    section = (state.get("config") or {}).get("model") or {}
    try:
        model = UnsuperPoint(ModelConfig(**section))
        model.load_state_dict(weights)
    except (TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise CheckpointError(f"cannot load checkpoint {path}: {first_line(error)}") from error
    return model


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (see usp_core.atomic) and return the path."""
    return atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: "cannot load checkpoint <path>: <reason>" when the file is missing,
            corrupt, holds non-allow-listed objects, or is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"cannot load checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise CheckpointError(f"cannot load checkpoint {path}: {first_line(error)}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot load checkpoint {path}: expected a dict, got {type(state).__name__}")
    return state

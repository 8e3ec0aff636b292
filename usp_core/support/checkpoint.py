"""Atomic checkpoint files.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled objects), so
it loads with ``torch.load(..., weights_only=True)``. Saving writes a temporary file in the target's
folder, flushes and fsyncs it, then ``os.replace``-s it over the target: a crash or kill at any point
leaves either the previous checkpoint or the new one, never a truncated file.

Errors are one line, "cannot load checkpoint <path>: <reason>", with a reason a user can act on:
"empty file", the first entry whose shape differs from the model's, or "refused: ..." for a file
holding Python objects. torch's own text for the last suggests loading with weights_only=False,
which would run whatever code the file carries; it is never passed on.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from usp_core.support.atomic import atomic_write
from usp_core.support.errors import first_line

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "model_weights", "load_weights", "compact_state"]

UNSAFE = "refused: not a plain weights file (it contains Python objects that weights_only loading does not allow)"
UNREADABLE = "not a checkpoint (corrupt, truncated or another format)"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not a checkpoint dict."""


def model_weights(state: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint dict, without DistributedDataParallel's "module." prefix.

    Raises CheckpointError when ``state`` has no "model" entry.
    """
    if "model" not in state:
        raise CheckpointError(f"cannot load checkpoint {path}: no 'model' entry (keys: {sorted(state)})")
    if not isinstance(state["model"], dict):
        raise CheckpointError(f"cannot load checkpoint {path}: 'model' is a {type(state['model']).__name__}, "
                              "not a state dict")
    return {key.removeprefix("module."): value for key, value in state["model"].items()}


def load_weights(model: nn.Module, weights: dict[str, Any], path: str | Path) -> None:
    """Load a state dict into ``model``; CheckpointError names the first entry that does not fit.

    The reason is one of "missing weights for X", "unexpected weights X (not in the model)",
    "X is a <type>, not a tensor" or "size mismatch for X: checkpoint [16, 1, 3, 3], model [8, 1, 3, 3]".
    """
    problem = _mismatch(model.state_dict(), weights)
    if problem is None:
        try:
            model.load_state_dict(weights)
        except RuntimeError as error:
            problem = first_line(error)
    if problem is not None:
        raise CheckpointError(f"cannot load checkpoint {path}: {problem}")


def _mismatch(expected: dict[str, torch.Tensor], weights: dict[str, Any]) -> str | None:
    """The first entry where ``weights`` differs from the model's state dict ``expected``, in words; None if none."""
    for name, tensor in expected.items():
        if name not in weights:
            return f"missing weights for {name}"
        value = weights[name]
        if not isinstance(value, torch.Tensor):
            return f"{name} is a {type(value).__name__}, not a tensor"
        if value.shape != tensor.shape:
            return f"size mismatch for {name}: checkpoint {list(value.shape)}, model {list(tensor.shape)}"
    extra = next((name for name in weights if name not in expected), None)
    return None if extra is None else f"unexpected weights {extra} (not in the model)"


def compact_state(state: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint dict at about a third of its size, for committing a campaign's state.

    Model weights become float16 (as the shipped weights), the optimizer's floating state bfloat16
    (float16 would flush Adam's small second moments to zero). Loading casts both back to the
    parameters' float32 (``load_state_dict`` of model and optimizer), so ``Trainer.resume`` reads it
    like any checkpoint; the run continues from rounded values, not bit for bit.
    """
    def cast(value: Any, dtype: torch.dtype) -> Any:
        if isinstance(value, dict):
            return {key: cast(item, dtype) for key, item in value.items()}
        if torch.is_tensor(value) and value.is_floating_point() and value.dim() > 0:
            return value.to(dtype)
        return value

    return {**state, "model": cast(state["model"], torch.float16),
            "optimizer": {**state["optimizer"], "state": cast(state["optimizer"]["state"], torch.bfloat16)}}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (see usp_core.support.atomic) and return the path."""
    return atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: "cannot load checkpoint <path>: <reason>" when the file is missing, empty,
            corrupt, holds objects weights_only loading refuses (nothing in it is run), or is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"cannot load checkpoint {path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot load checkpoint {path}: empty file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise CheckpointError(f"cannot load checkpoint {path}: {_load_failure(error)}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot load checkpoint {path}: expected a dict, got {type(state).__name__}")
    return state


def _load_failure(error: Exception) -> str:
    """Why torch.load(weights_only=True) failed, in one line without torch's advice to turn weights_only off.

    The weights-only unpickler raises UnpicklingError at the first GLOBAL (a class or function: an
    object) it does not allow, and also for bytes that are no pickle at all (any non-zip file).
    """
    if isinstance(error, pickle.UnpicklingError):
        return UNSAFE if "GLOBAL " in str(error) else UNREADABLE
    if isinstance(error, EOFError):
        return UNREADABLE
    return first_line(error)

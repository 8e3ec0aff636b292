"""The one place that loads a network: from a checkpoint path or the name of a shipped model.

``usp_core/weights/<name>.pt`` are the shipped models (:func:`shipped_models`; unsuperpoint is the
default). A checkpoint's "config" has a "model" section (a ModelConfig, whose ``architecture`` says
UnsuperPoint or SuperPoint); :func:`usp_core.models.build.build_model` makes the network and the
weights are checked entry by entry (usp_core.support.checkpoint) before they are loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from usp_core.models.build import build_model
from usp_core.models.layers import ModelConfig
from usp_core.support.checkpoint import CheckpointError, load_checkpoint, load_weights, model_weights
from usp_core.support.errors import first_line

__all__ = ["BUNDLED_WEIGHTS", "shipped_models", "resolve_weights", "model_from_checkpoint", "load_network"]

BUNDLED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "unsuperpoint.pt"


def shipped_models() -> list[str]:
    """The names of the shipped models (usp_core/weights/<name>.pt), the default first, the rest sorted."""
    names = (path.stem for path in BUNDLED_WEIGHTS.parent.glob("*.pt"))
    return sorted(names, key=lambda name: (name != BUNDLED_WEIGHTS.stem, name))


def resolve_weights(path_or_name: str | Path | None) -> Path:
    """None or "bundled" -> the default bundled weights; a bare name of a shipped model ("superpoint")
    -> usp_core/weights/<name>.pt; else a path."""
    if path_or_name is None or str(path_or_name) == "bundled":
        return BUNDLED_WEIGHTS
    path = Path(path_or_name)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        return BUNDLED_WEIGHTS.parent / f"{path.name}.pt"
    return path


def model_from_checkpoint(state: dict[str, Any], path: str | Path, architecture: str | None = None) -> nn.Module:
    """The network described by a checkpoint dict ("config" with a "model" section), weights loaded:
    UnsuperPoint, or SuperPoint when the section says ``architecture: superpoint``.

    Raises CheckpointError when the config or the weights do not make a model, or when
    ``architecture`` is given and the checkpoint holds another.
    """
    weights = model_weights(state, path)
    section = (state.get("config") or {}).get("model") or {}
    held = section.get("architecture", "unsuperpoint")
    if architecture is not None and held != architecture:
        raise CheckpointError(f"cannot use checkpoint {path}: it holds a model of architecture {held}, "
                              f"this needs {architecture}")
    try:
        model = build_model(ModelConfig(**section))
    except (TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise CheckpointError(f"cannot load checkpoint {path}: {first_line(error)}") from error
    load_weights(model, weights, path)
    return model


def load_network(path_or_name: str | Path | None = None, device: str | torch.device = "cpu",
                 architecture: str | None = None) -> nn.Module:
    """The network of a checkpoint path or shipped name (:func:`resolve_weights`), float32, eval mode, on ``device``.

    Raises CheckpointError (one line) for a missing, unreadable or misfitting checkpoint, or one that
    holds another ``architecture`` than the one asked for.
    """
    path = resolve_weights(path_or_name)
    if path_or_name is None and not path.is_file():
        raise CheckpointError(f"cannot load checkpoint {path}: no bundled weights in this install; "
                              "pass a checkpoint written by usp-train")
    model = model_from_checkpoint(load_checkpoint(path, map_location="cpu"), path, architecture)
    return model.float().eval().to(device)

"""The one place that builds a network from a config: UnsuperPoint or SuperPoint, as ``architecture`` says.

Loading a network from a checkpoint file or a shipped name is :mod:`usp_core.inference.weights`.
"""
from __future__ import annotations

from torch import nn

from usp_core.models.layers import ModelConfig
from usp_core.models.superpoint import SuperPoint
from usp_core.models.unsuperpoint import UnsuperPoint

__all__ = ["build_model"]


def build_model(config: ModelConfig) -> nn.Module:
    """The network ``config.architecture`` names, freshly initialised: UnsuperPoint or SuperPoint."""
    if config.architecture == "superpoint":
        return SuperPoint(config)
    return UnsuperPoint(config)

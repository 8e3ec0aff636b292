"""The networks: UnsuperPoint and SuperPoint/MagicPoint, their shared layers, and build_model.

layers: ModelConfig, DenseOutput, backbones, heads, descriptor sampling; unsuperpoint, superpoint: the
networks; build: the network a ModelConfig names. No network imports checkpoints or inference.
"""
from usp_core.models.build import build_model
from usp_core.models.layers import DenseOutput, ModelConfig
from usp_core.models.superpoint import SuperPoint
from usp_core.models.unsuperpoint import UnsuperPoint

__all__ = ["ModelConfig", "DenseOutput", "UnsuperPoint", "SuperPoint", "build_model"]

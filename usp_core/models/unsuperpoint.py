"""The UnsuperPoint network (Christiansen et al. 2019, section 1): dense score, position and descriptor maps.

Backbones, heads, positions and descriptor sampling, and the design choices where the paper is silent,
are in :mod:`usp_core.models.layers`, shared with SuperPoint.
"""
from __future__ import annotations

import torch
from torch import nn

from usp_core.models.layers import (DenseOutput, FineHead, ModelConfig, PointDescriptors, PointScores, TrainingMaps,
                                   build_backbone, cell_grid, cell_peak_parabola, cell_softargmax, check_position_fit,
                                   conv_head)

__all__ = ["UnsuperPoint"]


class UnsuperPoint(nn.Module):
    """UnsuperPoint: a stride-8 backbone (``config.backbone``) and score, position and descriptor heads.

    Input: images (B, C, H, W) float in [0, 1], H and W multiples of 8, C = ``config.in_channels``.
    Output: :class:`DenseOutput`. The forward has no data-dependent Python control flow, so it can be
    exported with ``torch.jit.trace`` and ``torch.onnx.export``.
    """

    cell = 8

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ModelConfig()
        slope = self.config.negative_slope
        self.backbone, channels = build_backbone(self.config)
        self.score_head = conv_head(channels, 1, slope)
        if self.config.position_head == "softargmax":
            self.fine_head = FineHead(self.config.widths[:3], self.config.fine_width, slope, self.config.fine_upsample)
        else:
            self.position_head = conv_head(channels, 2, slope)
        self.descriptor_head = conv_head(channels, self.config.descriptor_dim, slope)
        fine_widths = self.config.widths[1:3]  # the 1/2 and 1/4 levels that points read (forward's levels[1:3])
        self.point_descriptors = PointDescriptors(fine_widths, self.config.fine_descriptor_width,
                                                  self.config.descriptor_dim, slope, self.config.patch_descriptor_width)
        self.point_scores = (PointScores(fine_widths, self.config.fine_score_width, slope)
                             if self.config.fine_score_width else None)

    def forward(self, images: torch.Tensor, training: bool = False,
                position_fit: str = "softargmax") -> DenseOutput | TrainingMaps:
        """images (B, C, H, W) in [0, 1] -> DenseOutput with maps of size (H/8, W/8).

        ``training=True`` returns :class:`TrainingMaps` (the DenseOutput plus the maps the losses need); with
        the soft-argmax head, its positions are then placed by ``position_fit``: "softargmax" (the
        differentiable window soft-argmax, weights v3-v6) or "parabola" (the peak fit that inference uses,
        differentiable in the logits it reads; usp_core.models.layers). Inference always fits the parabola.
        """
        check_position_fit(position_fit)
        fine, fine_levels = None, []
        if self.config.position_head == "softargmax":
            levels = self.backbone.pyramid(images)
            detection, description = levels[3], self.backbone.describe(levels[3])
            fine = self.fine_head(levels[:3])
            fine_levels = levels[1:3] if self.config.reads_fine_levels else []
            soft = training and position_fit == "softargmax"
            position = (cell_softargmax(fine, self.config.refine_radius, self.cell) if soft
                        else cell_peak_parabola(fine, self.cell))
        else:
            features = self.backbone(images)
            detection, description = features if isinstance(features, tuple) else (features, features)
            offset = torch.sigmoid(self.position_head(detection).float())
            grid = cell_grid(offset.shape[-2], offset.shape[-1], offset.device, offset.dtype)
            position = (grid + offset) * self.cell
        raw = self.descriptor_head(description)
        reads = self.point_descriptors.read((raw, *fine_levels), position)
        logit = self.score_head(detection)
        if self.point_scores is not None:
            logit = logit + self.point_scores(reads.fine)
        dense = DenseOutput(torch.sigmoid(logit), position, self.point_descriptors.combine(reads))
        sources = (raw, *fine_levels) if self.config.describes_from_fine_levels else (raw,)
        return TrainingMaps(dense, logit, fine, sources) if training else dense

"""The SuperPoint network (DeTone, Malisiewicz, Rabinovich, CVPR-W 2018) and MagicPoint, its detector half.

A stride-8 backbone (the same choices as UnsuperPoint: ``vgg`` or ``fast``, see usp_core.models.layers) feeds
two heads on the 1/8 map:

- interest points: 65 logits per 8x8 cell, the cell's 64 pixels (row-major: index ``8 dy + dx``)
  plus a "no point" dustbin. Softmax over the 65, the dustbin dropped and depth-to-space give a
  full-resolution heatmap (:func:`heatmap_from_logits`).
- descriptors: a semi-dense (B, D, H/8, W/8) map, bilinearly sampled at the points and
  L2-normalised (:func:`usp_core.models.layers.sample_descriptors`, the same convention as UnsuperPoint).

MagicPoint is this network trained with the interest-point loss alone, on Synthetic Shapes; its
descriptor head is carried untrained.

``forward`` returns the :class:`usp_core.models.layers.DenseOutput` of UnsuperPoint, one candidate per cell,
so every inference backend and the shared point selection run both models unchanged: the heatmap
goes through max-pool non-maximum suppression (radius ``NMS_RADIUS``, as in the paper), and each
cell offers its best surviving pixel (score = its heatmap value, position = that pixel refined by a
parabola through the log-heatmap along each axis, usp_core.models.layers.cell_peak_parabola: the
localisation error at 240x320 fell 1.302 -> 1.231 px on Oxford and 1.401 -> 1.327 on HPatches, the
rest within one pair, against the pixel's centre).
Where the paper would keep two points of one cell (4 px or more apart), this keeps the better; at
the point counts used here (top-300 of 1200 cells at 240x320) that rarely binds.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from usp_core.models.layers import (DenseOutput, ModelConfig, build_backbone, cell_peak_parabola, conv_head,
                                   sample_descriptors)

__all__ = ["SuperPoint", "NMS_RADIUS", "CELL", "DUSTBIN", "heatmap_from_logits", "heatmap_nms",
           "cell_candidates", "heatmap_points", "cell_labels"]

CELL = 8
DUSTBIN = CELL * CELL  # index of the "no point" class among the 65
NMS_RADIUS = 4  # px, the paper's NMS distance


def heatmap_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, 65, h, w) interest-point logits -> (B, 1, 8h, 8w) heatmap: softmax, dustbin dropped, depth-to-space."""
    probabilities = torch.softmax(logits.float(), dim=1)[:, :DUSTBIN]
    return F.pixel_shuffle(probabilities, CELL)


def heatmap_nms(heatmap: torch.Tensor, radius: int = NMS_RADIUS) -> torch.Tensor:
    """(B, 1, H, W) heatmap with every value that is not the maximum of its (2 radius + 1)^2 window set to 0.

    Equal maxima within a window are all kept.
    """
    if radius <= 0:
        return heatmap
    peak = F.max_pool2d(heatmap, kernel_size=2 * radius + 1, stride=1, padding=radius)
    return torch.where(heatmap == peak, heatmap, torch.zeros_like(heatmap))


def cell_candidates(heatmap: torch.Tensor, kept: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each cell's best pixel: (score (B, 1, h, w), position (B, 2, h, w) pixel (x, y)).

    heatmap (B, 1, H, W); kept: the same after NMS (None: the heatmap itself). The pixel is the cell's
    best of ``kept`` (ties: the first in row-major order), its score that value, its position the pixel
    refined by a parabola through log(heatmap) along each axis (at most half a pixel).
    """
    kept = heatmap if kept is None else kept
    score, index = F.pixel_unshuffle(kept, CELL).max(dim=1, keepdim=True)  # over channel 8 dy + dx
    return score, cell_peak_parabola(torch.log(heatmap.clamp(min=1e-12)), CELL, index)


def heatmap_points(heatmap: np.ndarray | torch.Tensor, radius: int = NMS_RADIUS, threshold: float = 0.015,
                   max_points: int | None = None, border: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Points of a full-resolution (H, W) heatmap: NMS, threshold, border, best first.

    Returns (points (N, 2) float32 pixel (x, y), scores (N,) float32), scores descending. ``border``
    drops points closer than that to the image edge. The paper's detection threshold is 0.015.
    """
    tensor = torch.as_tensor(heatmap, dtype=torch.float32)[None, None]
    kept = heatmap_nms(tensor, radius)[0, 0].numpy()
    height, width = kept.shape
    kept[:border], kept[height - border:], kept[:, :border], kept[:, width - border:] = 0, 0, 0, 0
    ys, xs = np.nonzero(kept >= max(threshold, np.finfo(np.float32).tiny))
    scores = kept[ys, xs]
    order = np.argsort(-scores, kind="stable")[:max_points]
    points = np.stack([xs[order], ys[order]], axis=1).astype(np.float32)
    return points, scores[order].astype(np.float32)


def cell_labels(points: torch.Tensor, size: tuple[int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """The 65-way class of every cell for points (N, 2) pixel (x, y) in an image of size (H, W): (H/8, W/8) int64.

    A cell holding a point gets the index ``8 dy + dx`` of the point's pixel (rounded) within the
    cell; a cell with several points takes one at random (as in the paper); a cell without points
    gets ``DUSTBIN`` (64). Points outside the image are ignored.
    """
    height, width = size
    labels = torch.full((height // CELL, width // CELL), DUSTBIN, dtype=torch.int64)
    pixels = torch.round(points.float()).long()
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
    pixels = pixels[inside]
    if len(pixels) == 0:
        return labels
    pixels = pixels[torch.randperm(len(pixels), generator=generator)]  # the last write to a cell wins
    cells_y, cells_x = pixels[:, 1] // CELL, pixels[:, 0] // CELL
    inner = (pixels[:, 1] % CELL) * CELL + pixels[:, 0] % CELL
    flat = labels.view(-1)
    flat[cells_y * labels.shape[1] + cells_x] = inner  # index_put with duplicates: one of them is kept
    return labels


class SuperPoint(nn.Module):
    """SuperPoint: backbone, 65-channel interest-point head and descriptor head.

    Input: images (B, C, H, W) float in [0, 1], H and W multiples of 8. ``forward`` -> DenseOutput
    (one candidate per cell, see the module docstring), traceable and exportable like UnsuperPoint;
    ``logits`` (or ``forward(images, raw=True)``) -> the raw maps training uses; ``heatmap`` -> the
    full-resolution heatmap.
    """

    cell = CELL

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ModelConfig(architecture="superpoint")
        slope = self.config.negative_slope
        self.backbone, channels = build_backbone(self.config)
        self.point_head = conv_head(channels, DUSTBIN + 1, slope)
        self.descriptor_head = conv_head(channels, self.config.descriptor_dim, slope)

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W) -> (point logits (B, 65, H/8, W/8), raw descriptor map (B, D, H/8, W/8))."""
        features = self.backbone(images)
        detection, description = features if isinstance(features, tuple) else (features, features)
        return self.point_head(detection), self.descriptor_head(description)

    def heatmap(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) -> heatmap (B, 1, H, W) of point probabilities (no NMS)."""
        return heatmap_from_logits(self.logits(images)[0])

    def forward(self, images: torch.Tensor, raw: bool = False) -> DenseOutput | tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W) -> DenseOutput: per cell the best pixel left by NMS, its score and descriptor.

        ``raw=True`` returns :meth:`logits` instead (what training needs, through DDP's forward).
        """
        if raw:
            return self.logits(images)
        logits, raw_descriptors = self.logits(images)
        heatmap = heatmap_from_logits(logits)
        score, position = cell_candidates(heatmap, heatmap_nms(heatmap))
        return DenseOutput(score, position, sample_descriptors(raw_descriptors, position, CELL))

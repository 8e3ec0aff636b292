"""The UnsuperPoint network (Christiansen et al. 2019, section 1): dense score, position and descriptor maps.

The module returns dense maps only, one entry per 8x8 cell; top-k selection and the mapping to input
pixels of a particular image live in :mod:`usp_core.inference`.

Pixel coordinates, everywhere in ``usp_core``, follow OpenCV: ``(x, y) = (column, row)`` and the
centre of the top-left pixel is ``(0, 0)``.

Design choices where the paper is silent:

- Each head is ``conv3x3(C, C) + BatchNorm + LeakyReLU`` followed by a ``conv1x1`` to its output,
  with ``C = widths[-1]`` (256 by default): the paper's intermediate 256 -> 256 layer per head. The
  1x1 output layer (rather than a second 3x3) keeps each head's last step local to its cell.
- Position: ``(cell index + sigmoid offset) * 8``, so cell ``j`` can place its point anywhere in
  ``[8 j, 8 j + 8]``. With pixel centres at integers that range is the cell's pixels shifted by half a
  pixel; the network learns its offsets through homography-consistent training, which absorbs that.
- Precision: positions, descriptor sampling and normalisation are computed in float32 even under
  autocast; in float16 (bfloat16) a coordinate near 500 px would be rounded to 0.5 px (2 px).
- Descriptor sampling: ``grid_sample(..., mode="bilinear", align_corners=False, padding_mode="border")``
  with normalised coordinate ``(x + 0.5) * 2 / W - 1``. With ``align_corners=False`` the centre of
  descriptor cell ``j`` sits at normalised ``(8 j + 4) * 2 / W - 1``, so a point at the centre of the
  cell's pixels, ``x = 8 j + 3.5``, reads exactly that cell's descriptor. ``border`` padding avoids
  blending with zeros for points in the outer half cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ModelConfig", "DenseOutput", "UnsuperPoint", "cell_grid", "sample_descriptors"]


@dataclass
class ModelConfig:
    """Architecture of :class:`UnsuperPoint`."""

    widths: tuple[int, ...] = (32, 32, 64, 64, 128, 128, 256, 256)  # 8 conv3x3 widths, a 2x2 max-pool after each of the first 3 pairs
    descriptor_dim: int = 256  # D, length of each descriptor
    in_channels: int = 1  # grey input; colour is converted by the inference wrapper
    negative_slope: float = 0.01  # LeakyReLU slope in backbone and heads

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if len(self.widths) != 8 or min(self.widths) < 1:
            raise ValueError(f"widths must be 8 positive ints (4 conv pairs), got {self.widths}")
        if self.descriptor_dim < 1 or self.in_channels < 1:
            raise ValueError("descriptor_dim and in_channels must be positive")


class DenseOutput(NamedTuple):
    """Dense per-cell predictions for a batch of images of size (H, W).

    score: (B, 1, H/8, W/8) in (0, 1).
    position: (B, 2, H/8, W/8) float32 absolute pixel (x, y) in the input image, ``(cell + offset) * 8``.
    descriptors: (B, D, H/8, W/8) float32, sampled at ``position`` and L2-normalised over D.
    """

    score: torch.Tensor
    position: torch.Tensor
    descriptors: torch.Tensor


def _conv_block(in_channels: int, out_channels: int, negative_slope: float) -> nn.Sequential:
    """conv3x3 (stride 1, same padding, no bias) + BatchNorm + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(negative_slope),
    )


def _head(channels: int, out_channels: int, negative_slope: float) -> nn.Sequential:
    """Head on the 1/8 map: conv3x3 block then a 1x1 conv to ``out_channels`` (with bias)."""
    return nn.Sequential(
        _conv_block(channels, channels, negative_slope),
        nn.Conv2d(channels, out_channels, kernel_size=1),
    )


def cell_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Cell indices (x, y) of a (height, width) map: (1, 2, height, width)."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y)).unsqueeze(0)


class UnsuperPoint(nn.Module):
    """UnsuperPoint: VGG-style backbone with stride 8 and score, position and descriptor heads.

    Input: images (B, C, H, W) float in [0, 1], H and W multiples of 8, C = ``config.in_channels``.
    Output: :class:`DenseOutput`. The forward has no data-dependent Python control flow, so it can be
    exported with ``torch.jit.trace`` and ``torch.onnx.export``.
    """

    cell = 8

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ModelConfig()
        slope = self.config.negative_slope
        layers: list[nn.Module] = []
        channels = self.config.in_channels
        for index, width in enumerate(self.config.widths):
            layers.append(_conv_block(channels, width, slope))
            channels = width
            if index in (1, 3, 5):
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.backbone = nn.Sequential(*layers)
        self.score_head = _head(channels, 1, slope)
        self.position_head = _head(channels, 2, slope)
        self.descriptor_head = _head(channels, self.config.descriptor_dim, slope)

    def forward(self, images: torch.Tensor) -> DenseOutput:
        """images (B, C, H, W) in [0, 1] -> DenseOutput with maps of size (H/8, W/8)."""
        features = self.backbone(images)
        score = torch.sigmoid(self.score_head(features))
        offset = torch.sigmoid(self.position_head(features).float())
        grid = cell_grid(offset.shape[-2], offset.shape[-1], offset.device, offset.dtype)
        position = (grid + offset) * self.cell
        raw = self.descriptor_head(features)
        descriptors = sample_descriptors(raw, position, self.cell)
        return DenseOutput(score, position, descriptors)


def sample_descriptors(descriptor_map: torch.Tensor, position: torch.Tensor, cell: int) -> torch.Tensor:
    """Bilinearly sample a (B, D, h, w) map at pixel positions (B, 2, h', w') of a (cell h, cell w) image.

    Returns (B, D, h', w') L2-normalised over D. See the module docstring for the coordinate
    convention. The image size is computed with tensor ops (not Python ints) so that traced and ONNX
    graphs stay valid for every input size.
    """
    map_grid = cell_grid(descriptor_map.shape[-2], descriptor_map.shape[-1], position.device, position.dtype)
    size = (map_grid.amax(dim=(2, 3)) + 1.0) * cell
    normalised = (position.permute(0, 2, 3, 1) + 0.5) * 2.0 / size - 1.0
    sampled = F.grid_sample(descriptor_map.float(), normalised.float(), mode="bilinear",
                            padding_mode="border", align_corners=False)
    return F.normalize(sampled, p=2.0, dim=1)

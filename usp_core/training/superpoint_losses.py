"""SuperPoint's losses (DeTone et al. 2018, section 3.4): cell-wise cross-entropy and the descriptor hinge loss.

- Interest points: cross-entropy of each cell's 65 logits against its label (the index of its
  point's pixel, or the dustbin, see usp_core.models.superpoint.cell_labels), averaged over valid cells.
- Descriptors: for every pair of cells (a in image A, b in image B) with s = 1 when the centre of a,
  warped by H_ab, lies within ``positive_radius`` pixels of the centre of b:
  ``lambda_d s max(0, m_p - d_a.d_b) + (1 - s) max(0, d_a.d_b - m_n)``, averaged over the pairs whose
  B cell is valid (inside the warped image), with d the L2-normalised semi-dense descriptors.
- SuperPoint: the point loss of both images plus ``lambda_descriptor`` times the descriptor loss.
  MagicPoint: the point loss alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from usp_core.geometry.homography import warp_points
from usp_core.models.layers import cell_grid

__all__ = ["SuperPointLossConfig", "point_loss", "descriptor_hinge_loss", "superpoint_loss"]


@dataclass
class SuperPointLossConfig:
    """Weights and margins of the SuperPoint loss; the paper's values by default."""

    lambda_descriptor: float = 1.0e-4  # lambda, weight of the descriptor term
    lambda_d: float = 250.0  # weight of the positive pairs in the hinge loss
    m_p: float = 1.0  # positive margin
    m_n: float = 0.2  # negative margin
    positive_radius: float = 8.0  # px, cell centres this close after warping form a positive pair

    def __post_init__(self) -> None:
        if min(self.lambda_descriptor, self.lambda_d, self.positive_radius) < 0:
            raise ValueError("lambda_descriptor, lambda_d and positive_radius must be >= 0")


def point_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over valid cells: logits (B, 65, h, w), labels (B, h, w) int64, valid (B, h, w) bool.

    Returns a scalar; 0 when no cell is valid.
    """
    per_cell = F.cross_entropy(logits.float(), labels, reduction="none")
    if valid is None:
        return per_cell.mean()
    weight = valid.to(per_cell.dtype)
    return (per_cell * weight).sum() / weight.sum().clamp(min=1.0)


def _cell_centres(height: int, width: int, cell: int, device: torch.device) -> torch.Tensor:
    """Pixel (x, y) of the centre of every cell of an (height, width) map, row-major: (height * width, 2)."""
    grid = cell_grid(height, width, device, torch.float32)[0].reshape(2, -1).T
    return grid * cell + (cell - 1) / 2.0


def descriptor_hinge_loss(desc_a: torch.Tensor, desc_b: torch.Tensor, homography_ab: torch.Tensor,
                          valid_b: torch.Tensor | None, config: SuperPointLossConfig, cell: int = 8) -> torch.Tensor:
    """The hinge loss over all pairs of cells (see the module docstring).

    desc_a, desc_b: (B, D, h, w) raw descriptor maps (normalised here); homography_ab (B, 3, 3) maps
    A pixels to B pixels; valid_b (B, h, w) bool, cells of B that show image content (None: all).
    Returns a scalar.
    """
    batch, _, height, width = desc_a.shape
    centres = _cell_centres(height, width, cell, desc_a.device)  # (hw, 2)
    warped = warp_points(centres.expand(batch, -1, -1), homography_ab.float())  # (B, hw, 2)
    positive = (torch.cdist(warped, centres.expand(batch, -1, -1)) <= config.positive_radius).float()  # (B, hw_a, hw_b)
    flat_a = F.normalize(desc_a.float().flatten(2), dim=1)  # (B, D, hw)
    flat_b = F.normalize(desc_b.float().flatten(2), dim=1)
    dot = flat_a.transpose(1, 2) @ flat_b  # (B, hw_a, hw_b)
    loss = (config.lambda_d * positive * F.relu(config.m_p - dot)
            + (1.0 - positive) * F.relu(dot - config.m_n))
    if valid_b is None:
        return loss.mean()
    weight = valid_b.flatten(1).to(loss.dtype)[:, None, :].expand_as(loss)
    return (loss * weight).sum() / weight.sum().clamp(min=1.0)


def superpoint_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, desc_a: torch.Tensor, desc_b: torch.Tensor,
                    labels_a: torch.Tensor, labels_b: torch.Tensor, valid_b: torch.Tensor,
                    homography_ab: torch.Tensor, config: SuperPointLossConfig) -> dict[str, torch.Tensor]:
    """SuperPoint's loss on a pair: logits (B, 65, h, w), raw descriptors (B, D, h, w), labels (B, h, w),
    valid_b (B, h, w) bool, homography_ab (B, 3, 3). Returns {"total", "points", "descriptor"} scalars."""
    points = point_loss(logits_a, labels_a) + point_loss(logits_b, labels_b, valid_b)
    descriptor = descriptor_hinge_loss(desc_a, desc_b, homography_ab, valid_b, config)
    return {"total": points + config.lambda_descriptor * descriptor, "points": points, "descriptor": descriptor}

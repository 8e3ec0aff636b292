"""The UnsuperPoint losses (Christiansen et al. 2019, section 3), each its own function.

Branch A is an image, branch B the same image warped by ``homography_ab`` (A pixels -> B pixels).

Normalisation: every term is a SUM over its elements within one image pair, as in the paper's
formulas (pairs for L_usp, cells for L_uni_xy, all point pairs for L_desc, off-diagonal matrix
entries for L_decorr), then a MEAN over the batch. The paper's default weights (``LossConfig``) were
set for sums; with sums the terms scale with the number of cells, so a change of training
resolution may call for re-weighting. Every term is returned separately for logging.

Masking: a point of A whose warp lands outside image B, or a point of B whose inverse warp lands
outside image A (:func:`usp_core.geometry.homography.inside_image`), takes no part in the pair losses
(L_usp, L_desc). L_uni_xy and L_decorr are per-branch statistics over all cells.

All geometry and reductions run in float32 with autocast disabled, so the losses are safe under AMP.
Shapes are fixed (masks instead of boolean indexing), so the losses vectorise over the batch.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import torch

from usp_core.geometry.homography import inside_image, warp_points
from usp_core.models.layers import DenseOutput, cell_grid, check_position_fit
from usp_core.models.unsuperpoint import UnsuperPoint

__all__ = [
    "LossConfig",
    "Correspondences",
    "point_correspondences",
    "usp_loss",
    "uniform_xy_loss",
    "descriptor_loss",
    "triplet_descriptor_loss",
    "decorrelation_loss",
    "unsuperpoint_loss",
    "DistillConfig",
    "distillation_loss",
]


@dataclass
class LossConfig:
    """Weights and margins of the UnsuperPoint loss (defaults: the paper's values)."""

    a_usp: float = 1.0  # weight of L_usp (position + score + repeatability)
    a_pos: float = 1.0  # weight of the position term inside L_usp
    a_score: float = 2.0  # weight of the score-consistency term inside L_usp
    score_standardise: bool = False  # L_usp's score terms read sigmoid of per-image standardised logits (trainer.loss_scores)
    a_uni_xy: float = 100.0  # weight of L_uni_xy; one reimplementation needed 0.25 to stop it swamping L_usp
    a_desc: float = 0.001  # weight of L_desc
    a_decorr: float = 0.03  # weight of L_decorr
    lambda_d: float = 250.0  # weight of positive pairs inside L_desc
    m_p: float = 1.0  # positive margin of L_desc (on the dot product)
    m_n: float = 0.2  # negative margin of L_desc (on the dot product)
    correspondence_radius: float = 4.0  # max distance (px) of a mutual-nearest-neighbour point pair
    descriptor_radius: float = 8.0  # max distance (px) at which two points count as a positive descriptor pair
    descriptor_loss: str = "hinge"  # "hinge": the paper's L_desc over all point pairs; "triplet": KP2D's hardest-negative triplet
    triplet_margin: float = 0.2  # margin of the triplet loss, on L2 distances between unit descriptors (in [0, 2])
    a_reprojection: float = 0.0  # weight of the dense reprojection term (softargmax head; usp_core.dense_losses)
    a_peakiness: float = 0.0  # weight of the peakiness term of the full-resolution logits (softargmax head)
    a_dense_desc: float = 0.0  # weight of the InfoNCE descriptor term over every correspondence
    reprojection_radius: int = 2  # px, half-size of the soft-argmax window of the reprojection term
    position_fit: str = "softargmax"  # softargmax head: how training places points, "softargmax" (v3-v6) or "parabola" (inference's peak fit)
    reprojection_fraction: float = 0.25  # share of each image's cells, best scores first, in reprojection and peakiness
    dense_temperature: float = 0.05  # temperature of the InfoNCE descriptor term (similarities are dot products)
    dense_exclusion_radius: float = 4.0  # px, B points this close to where an A point lands are not its negatives
    dense_desc_fraction: float = 1.0  # share of each image's cells, best scores first, as InfoNCE anchors and negatives

    def __post_init__(self) -> None:
        check_position_fit(self.position_fit)
        if self.descriptor_loss not in ("hinge", "triplet"):
            raise ValueError(f"descriptor_loss must be 'hinge' or 'triplet', got {self.descriptor_loss!r}")
        for name in ("reprojection_fraction", "dense_desc_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")


@dataclass
class DistillConfig:
    """Distillation: the model also learns to reproduce a trained teacher's dense maps (off by default).

    A new architecture (the fast backbone, say) reaches its teacher's quality in far fewer steps
    from these per-cell targets than from the self-supervised losses alone, which still apply.
    """

    teacher: str = ""  # checkpoint of the teacher: a path, "bundled" or a shipped model's name; "" = no distillation
    a_position: float = 1.0  # weight of sum |p - p_teacher| (px) over cells
    a_score: float = 10.0  # weight of sum (s - s_teacher)^2 over cells
    a_descriptor: float = 1.0  # weight of sum (1 - f . f_teacher) over cells


class Correspondences(NamedTuple):
    """Point pairs between branches, as fixed-shape masks over (B, N) points of A and (B, M) of B.

    distance: (B, N, M) float, g_ij = |T a_i - b_j| in B pixels.
    valid: (B, N, M) bool, both points inside the other image.
    nearest: (B, N) long, index in B of the nearest valid point to each warped A point.
    matched: (B, N) bool, A point i and B point ``nearest[i]`` are mutual nearest neighbours within the radius.
    pair_distance: (B, N) float, d_i = g_{i, nearest[i]} (meaningful where ``matched``).
    """

    distance: torch.Tensor
    valid: torch.Tensor
    nearest: torch.Tensor
    matched: torch.Tensor
    pair_distance: torch.Tensor


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    """Cast to float32 (losses never run in reduced precision)."""
    return tensor.to(torch.float32)


def point_correspondences(points_a: torch.Tensor, points_b: torch.Tensor, homography_ab: torch.Tensor,
                          image_size: tuple[int, int], radius: float = 4.0) -> Correspondences:
    """Mutual nearest neighbours within ``radius`` between warped A points and B points.

    points_a (B, N, 2), points_b (B, M, 2) pixel (x, y); homography_ab (B, 3, 3) maps A to B pixels;
    image_size (H, W) of both images. Points outside the other image are excluded (see module doc).
    """
    height, width = image_size
    points_a, points_b = _float32(points_a), _float32(points_b)
    homography_ab = homography_ab.to(device=points_a.device, dtype=torch.float64)
    warped_a = warp_points(points_a, homography_ab.to(torch.float32))
    back_b = warp_points(points_b, torch.linalg.inv(homography_ab).to(torch.float32))
    valid_a = inside_image(warped_a, height, width)
    valid_b = inside_image(back_b, height, width)
    valid = valid_a[:, :, None] & valid_b[:, None, :]
    delta_x = warped_a[:, :, None, 0] - points_b[:, None, :, 0]
    delta_y = warped_a[:, :, None, 1] - points_b[:, None, :, 1]
    squared = delta_x.square() + delta_y.square()
    distance = squared.clamp(min=1e-12).sqrt()
    search = distance.detach().masked_fill(~valid, float("inf"))
    nearest_ab = search.argmin(dim=2)
    nearest_ba = search.argmin(dim=1)
    indices = torch.arange(points_a.shape[1], device=points_a.device)
    mutual = nearest_ba.gather(1, nearest_ab) == indices
    pair_distance = distance.gather(2, nearest_ab[:, :, None]).squeeze(2)
    pair_valid = valid.gather(2, nearest_ab[:, :, None]).squeeze(2)
    matched = mutual & pair_valid & (pair_distance.detach() <= radius)
    return Correspondences(distance, valid, nearest_ab, matched, pair_distance)


def usp_loss(score_a: torch.Tensor, score_b: torch.Tensor, correspondences: Correspondences,
             a_pos: float = 1.0, a_score: float = 2.0) -> dict[str, torch.Tensor]:
    """L_usp = a_pos sum d_k + a_score sum (sA_k - sB_k)^2 + sum (sA_k + sB_k)/2 (d_k - mean d).

    score_a (B, N), score_b (B, M) flattened score maps. Sums over the K matched pairs of each image
    pair, mean over the batch; an image pair without matches contributes 0. Returns the scalar
    terms "position", "score", "repeatability" (unweighted) and "usp" (weighted sum), and two
    detached diagnostics: "matched" (pairs per image pair) and "matched_distance" (their mean d, px).
    """
    matched = correspondences.matched
    weight = matched.to(torch.float32)
    d = torch.where(matched, correspondences.pair_distance, torch.zeros_like(correspondences.pair_distance))
    s_a = _float32(score_a)
    s_b = _float32(score_b).gather(1, correspondences.nearest)
    count = weight.sum(1).clamp(min=1.0)
    mean_d = (d.sum(1) / count)[:, None]
    position = d.sum(1)
    score = ((s_a - s_b).square() * weight).sum(1)
    repeatability = ((s_a + s_b) / 2.0 * (d - mean_d) * weight).sum(1)
    terms = {"position": position.mean(), "score": score.mean(), "repeatability": repeatability.mean()}
    terms["usp"] = a_pos * terms["position"] + a_score * terms["score"] + terms["repeatability"]
    terms["matched"] = weight.sum(1).mean().detach()
    terms["matched_distance"] = (d.sum() / weight.sum().clamp(min=1.0)).detach()
    return terms


def uniform_xy_loss(offsets: torch.Tensor) -> torch.Tensor:
    """L_uni_xy of one branch: sum_i (v_(i) - (i-1)/(L-1))^2 over SORTED values, x and y separately.

    offsets (B, 2, h, w) relative positions in [0, 1] inside each cell. The L values of each
    coordinate are sorted ascending and compared with the uniform quantiles; summed over x and y,
    mean over the batch. About 1/6 per coordinate for uniform samples, about L/12 when all sit at 0.5.
    """
    values = _float32(offsets).flatten(2)
    length = values.shape[-1]
    ordered, _ = torch.sort(values, dim=-1)
    target = torch.linspace(0.0, 1.0, length, device=values.device, dtype=values.dtype)
    return (ordered - target).square().sum(dim=(1, 2)).mean()


def descriptor_loss(desc_a: torch.Tensor, desc_b: torch.Tensor, correspondences: Correspondences,
                    lambda_d: float = 250.0, m_p: float = 1.0, m_n: float = 0.2,
                    descriptor_radius: float = 8.0) -> torch.Tensor:
    """L_desc = sum_ij lambda_d c_ij max(0, m_p - fA_i.fB_j) + (1 - c_ij) max(0, fA_i.fB_j - m_n).

    desc_a (B, N, D), desc_b (B, M, D); c_ij = 1 where g_ij <= descriptor_radius. Sum over the valid
    pairs (both points inside the other image), mean over the batch.
    """
    dot = torch.bmm(_float32(desc_a), _float32(desc_b).transpose(1, 2))
    positive = correspondences.distance.detach() <= descriptor_radius
    hinge = torch.where(positive, lambda_d * (m_p - dot).clamp(min=0.0), (dot - m_n).clamp(min=0.0))
    return (hinge * correspondences.valid.to(torch.float32)).sum(dim=(1, 2)).mean()


def _directed_triplet(distance: torch.Tensor, geometric: torch.Tensor, valid: torch.Tensor, radius: float,
                      margin: float) -> torch.Tensor:
    """Triplet terms of anchors along dim 1 against candidates along dim 2, summed per image: (B,).

    distance (B, N, M) descriptor distances; geometric (B, N, M) pixel distances (detached); valid (B, N, M).
    The positive of anchor i is its geometrically nearest valid candidate, used when within ``radius``;
    the negative is the candidate with the smallest descriptor distance among those beyond ``radius``.
    """
    search = geometric.masked_fill(~valid, float("inf"))
    nearest = search.argmin(dim=2, keepdim=True)
    has_positive = search.gather(2, nearest).squeeze(2) <= radius
    positive = distance.gather(2, nearest).squeeze(2)
    negatives = distance.masked_fill(~valid | (geometric <= radius), float("inf"))
    negative = negatives.min(dim=2).values
    usable = has_positive & torch.isfinite(negative)
    terms = (margin + positive - torch.where(usable, negative, positive)).clamp(min=0.0)
    return (terms * usable.to(torch.float32)).sum(dim=1)


def triplet_descriptor_loss(desc_a: torch.Tensor, desc_b: torch.Tensor, correspondences: Correspondences,
                            margin: float = 0.2, descriptor_radius: float = 8.0) -> torch.Tensor:
    """Hardest-negative triplet loss (KP2D), both directions: sum_i max(0, m + |f_i - f_p(i)| - |f_i - f_n(i)|).

    desc_a (B, N, D), desc_b (B, M, D) unit descriptors. For a point of A, p(i) is the nearest point of B
    after warping (when within ``descriptor_radius`` px) and n(i) the point of B farther than
    ``descriptor_radius`` whose descriptor is closest to f_i; likewise from B to A. Only points inside
    the other image take part. Sum over anchors of both directions, mean over the batch.
    """
    dot = torch.bmm(_float32(desc_a), _float32(desc_b).transpose(1, 2))
    distance = (2.0 - 2.0 * dot).clamp(min=1e-6).sqrt()
    geometric = correspondences.distance.detach()
    valid = correspondences.valid
    a_to_b = _directed_triplet(distance, geometric, valid, descriptor_radius, margin)
    b_to_a = _directed_triplet(distance.transpose(1, 2), geometric.transpose(1, 2), valid.transpose(1, 2),
                               descriptor_radius, margin)
    return (a_to_b + b_to_a).mean()


def decorrelation_loss(descriptors: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """L_decorr of one branch: sum of squared off-diagonal entries of the Pearson correlation matrix.

    descriptors (B, L, D): L samples of D dimensions; the correlation is between dimensions (D, D)
    over the L samples of each image. Mean over the batch. ``eps`` guards constant dimensions.
    """
    values = _float32(descriptors)
    centred = values - values.mean(dim=1, keepdim=True)
    norm = centred.square().sum(dim=1).add(eps).sqrt()
    normalised = centred / norm[:, None, :]
    correlation = normalised.transpose(1, 2) @ normalised
    off_diagonal = correlation - torch.diag_embed(torch.diagonal(correlation, dim1=1, dim2=2))
    return off_diagonal.square().sum(dim=(1, 2)).mean()


def _flat_points(position: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w) -> (B, h w, 2)."""
    return position.flatten(2).transpose(1, 2)


def _relative_offsets(position: torch.Tensor) -> torch.Tensor:
    """Absolute positions (B, 2, h, w) -> offsets in [0, 1] inside their cells, (B, 2, h, w)."""
    grid = cell_grid(position.shape[-2], position.shape[-1], position.device, position.dtype)
    return position / UnsuperPoint.cell - grid


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that disables autocast on ``device``'s type."""
    return torch.autocast(device_type=device.type, enabled=False)


def unsuperpoint_loss(out_a: DenseOutput, out_b: DenseOutput, homography_ab: torch.Tensor,
                      image_size: tuple[int, int], config: LossConfig | None = None) -> dict[str, torch.Tensor]:
    """Total UnsuperPoint loss of a Siamese batch and every term separately.

    out_a, out_b: model outputs for A and B images of size image_size = (H, W); homography_ab (B, 3, 3)
    maps A pixels to B pixels. Returns scalar tensors "total", "usp", "position", "score",
    "repeatability", "uni_xy", "desc", "decorr" (terms unweighted, "usp" weighted inside by a_pos
    and a_score), total = a_usp usp + a_uni_xy uni_xy + a_desc desc + a_decorr decorr, and the
    diagnostics "matched" and "matched_distance" of :func:`usp_loss`. A term whose weight is 0 is
    not computed (reported as 0).
    """
    config = config if config is not None else LossConfig()
    with _autocast_off(out_a.position.device):
        position_a, position_b = _float32(out_a.position), _float32(out_b.position)
        matches = point_correspondences(_flat_points(position_a), _flat_points(position_b), homography_ab,
                                        image_size, config.correspondence_radius)
        terms = usp_loss(out_a.score.flatten(1), out_b.score.flatten(1), matches, config.a_pos, config.a_score)
        zero = position_a.new_zeros(())
        terms["uni_xy"] = zero if not config.a_uni_xy else (
            uniform_xy_loss(_relative_offsets(position_a)) + uniform_xy_loss(_relative_offsets(position_b)))
        desc_a, desc_b = _flat_points(out_a.descriptors), _flat_points(out_b.descriptors)
        if not config.a_desc:
            terms["desc"] = zero
        elif config.descriptor_loss == "triplet":
            terms["desc"] = triplet_descriptor_loss(desc_a, desc_b, matches, config.triplet_margin,
                                                    config.descriptor_radius)
        else:
            terms["desc"] = descriptor_loss(desc_a, desc_b, matches, config.lambda_d, config.m_p, config.m_n,
                                            config.descriptor_radius)
        terms["decorr"] = decorrelation_loss(desc_a) + decorrelation_loss(desc_b)
        terms["total"] = (config.a_usp * terms["usp"] + config.a_uni_xy * terms["uni_xy"]
                          + config.a_desc * terms["desc"] + config.a_decorr * terms["decorr"])
    return terms


def distillation_loss(student: DenseOutput, teacher: DenseOutput, config: DistillConfig) -> dict[str, torch.Tensor]:
    """Per-cell distance of the student's dense maps to the teacher's, each term a sum over cells, mean over the batch.

    student, teacher: outputs of the same images, maps (B, ., h, w); the teacher's are treated as
    constants. Returns "distill_position" (sum of L1 pixel distances), "distill_score" (sum of
    squared differences), "distill_descriptor" (sum of 1 - cosine) and "distill" (their weighted sum).
    """
    with _autocast_off(student.position.device):
        position = (_float32(student.position) - _float32(teacher.position).detach()).abs().sum(1)
        score = (_float32(student.score) - _float32(teacher.score).detach()).square().sum(1)
        cosine = (_float32(student.descriptors) * _float32(teacher.descriptors).detach()).sum(1)
        terms = {"distill_position": position.flatten(1).sum(1).mean(),
                 "distill_score": score.flatten(1).sum(1).mean(),
                 "distill_descriptor": (1.0 - cosine).flatten(1).sum(1).mean()}
        terms["distill"] = (config.a_position * terms["distill_position"] + config.a_score * terms["distill_score"]
                            + config.a_descriptor * terms["distill_descriptor"])
    return terms

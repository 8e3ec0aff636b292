"""Dense self-supervision of the v3 heads: every cell of a pair takes part, no point is sampled.

Branch A is an image, branch B the same image warped by ``homography_ab`` (A pixels -> B pixels), as
in :mod:`usp_core.losses`. Each term is computed from A to B and from B to A.

- Reprojection (ALIKE's reprojection loss, per cell): the point of an A cell, warped into B, should
  be where B's full-resolution logits put their soft-argmax in a small window around it (or, with
  ``position_fit: parabola``, their parabola peak fit, as inference places points). Only the
  best-scored fraction of A's cells take part (ALIKE uses its detected keypoints): forced onto flat
  cells, the term made arbitrary peaks there and rose while training (docs/training.md).
- Peakiness (ALIKE's dispersity peak loss): in those windows, the softmax mass's mean distance from
  its own soft-argmax, so the logits form a sharp peak rather than a plateau.
- Descriptors (InfoNCE over the correspondences): the descriptor of every A point against B's
  descriptor read where the point lands (the positive, by the network's own
  :class:`~usp_core.models.layers.PointDescriptors`) and the descriptors of all B points
  farther than ``exclusion_radius`` from there (the negatives), at a temperature. With a
  ``desc_fraction`` below 1 only the best-scored share of each image's cells take part, as anchors
  (A) and as negatives (B): the points that top-k selection keeps and nearest-neighbour matching
  compares, as in the evaluation protocol.

Normalisation follows :mod:`usp_core.losses`: a SUM over the cells of one image pair, then a MEAN over
the batch, so the weights in ``LossConfig`` compare with the paper's terms. All in float32, autocast off.
"""
from __future__ import annotations

from typing import Callable

import torch

from usp_core.geometry.homography import inside_image, warp_points
from usp_core.models.layers import TrainingMaps, check_position_fit, parabola_offset

Describe = Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]  # (sources, positions) -> unit descriptors

__all__ = ["window_softargmax", "window_peak_parabola", "top_cells", "reprojection_terms", "dense_descriptor_loss",
           "dense_losses"]


def _flat(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h w, C)."""
    return maps.flatten(2).transpose(1, 2)


def _window_offsets(radius: int, device: torch.device) -> torch.Tensor:
    """(K, 2) float32 pixel (dx, dy) of a square window of half-size ``radius``, K = (2 radius + 1)^2, row-major."""
    steps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    offset_y, offset_x = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([offset_x.flatten(), offset_y.flatten()], dim=-1)


def _logits_at(logits: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """logits (B, 1, H, W) at integer-valued pixels (B, N, ..., 2), clamped into the image -> (B, N, ...) float32."""
    height, width = logits.shape[-2:]
    x = pixels[..., 0].clamp(0, width - 1).long()
    y = pixels[..., 1].clamp(0, height - 1).long()
    return logits.float().flatten(1).gather(1, (y * width + x).flatten(1)).view(x.shape)


def window_softargmax(logits: torch.Tensor, centres: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-argmax of full-resolution logits in a square window around integer pixel centres.

    logits (B, 1, H, W); centres (B, N, 2) integer-valued pixel (x, y), at least ``radius`` from every
    border (callers mask the others; they are clamped here only to stay in bounds).
    Returns (points (B, N, 2) float32 soft-argmax in pixels, dispersion (B, N): the mean distance of
    the window's softmax mass from that point).
    """
    offsets = _window_offsets(radius, logits.device)  # (K, 2)
    pixels = centres[:, :, None, :] + offsets  # (B, N, K, 2)
    weights = torch.softmax(_logits_at(logits, pixels), dim=-1)
    points = centres + (weights[..., None] * offsets).sum(dim=2)
    spread = (pixels - points[:, :, None, :]).norm(dim=-1)
    return points, (weights * spread).sum(dim=-1)


def window_peak_parabola(logits: torch.Tensor, centres: torch.Tensor, radius: int) -> torch.Tensor:
    """The highest logit in a square window around integer pixel centres, refined by a parabola per axis.

    logits (B, 1, H, W); centres (B, N, 2) integer-valued pixel (x, y), at least ``radius`` + 1 from every
    border (callers mask the others; they are clamped here only to stay in bounds). Returns points (B, N, 2)
    float32 in pixels: what inference's :func:`~usp_core.models.layers.cell_peak_parabola` returns for a
    cell, with the window in place of the cell. Differentiable in the logits at the peak and its neighbours.
    """
    offsets = _window_offsets(radius, logits.device)
    peak = centres + offsets[_logits_at(logits, centres[:, :, None, :] + offsets).argmax(dim=-1)]  # (B, N, 2)
    centre = _logits_at(logits, peak)
    fitted = [parabola_offset(_logits_at(logits, peak - step), centre, _logits_at(logits, peak + step))
              for step in (offsets.new_tensor([1.0, 0.0]), offsets.new_tensor([0.0, 1.0]))]
    return peak + torch.stack(fitted, dim=-1)


def top_cells(score: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B, 1, h, w) scores -> (B, h w) bool: the ``fraction`` of each image's cells with the highest scores."""
    flat = score.detach().float().flatten(1)
    count = max(1, round(fraction * flat.shape[1]))
    threshold = flat.topk(count, dim=1).values[:, -1:]
    return flat >= threshold


def reprojection_terms(position_a: torch.Tensor, score_a: torch.Tensor, fine_b: torch.Tensor,
                       homography_ab: torch.Tensor, radius: int, fraction: float,
                       position_fit: str = "softargmax") -> tuple[torch.Tensor, torch.Tensor]:
    """Reprojection and peakiness of A's points in B's logits, both (B,): sums over A's best-scored cells.

    position_a (B, 2, h, w) pixels; score_a (B, 1, h, w) picks the ``fraction`` of cells that take part
    (the points selection would keep; in flat cells a peak is arbitrary); fine_b (B, 1, H, W) logits of
    B; homography_ab (B, 3, 3). A cell counts when its warped point lies at least ``radius`` + 1 px
    inside B. ``position_fit`` places B's point in the window around where A's lands: the soft-argmax or
    the parabola peak fit (as position_a was placed); peakiness is the soft-argmax's dispersion either way.
    """
    check_position_fit(position_fit)
    height, width = fine_b.shape[-2:]
    warped = warp_points(_flat(position_a.float()), homography_ab.float())
    centres = warped.detach().round()
    margin = radius + 1
    inside = ((centres[..., 0] >= margin) & (centres[..., 0] <= width - 1 - margin)
              & (centres[..., 1] >= margin) & (centres[..., 1] <= height - 1 - margin))
    weight = (top_cells(score_a, fraction) & inside).float()
    points, dispersion = window_softargmax(fine_b, centres, radius)
    if position_fit == "parabola":
        points = window_peak_parabola(fine_b, centres, radius)
    distance = (points - warped).square().sum(dim=-1).clamp(min=1e-12).sqrt()
    return (weight * distance).sum(dim=1), (weight * dispersion).sum(dim=1)


def dense_descriptor_loss(desc_a: torch.Tensor, position_a: torch.Tensor, sources_b: tuple[torch.Tensor, ...],
                          describe: Describe, desc_b: torch.Tensor, position_b: torch.Tensor,
                          homography_ab: torch.Tensor, temperature: float, exclusion_radius: float,
                          anchors: torch.Tensor | None = None, negatives: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE of A's points against B, (B,): a sum over the A anchors that land inside B.

    desc_a (B, D, h, w) unit descriptors at position_a (B, 2, h, w); sources_b B's descriptor sources
    (TrainingMaps.descriptor_sources, the first (B, D, h, w)), read at any points by ``describe`` (the
    network's PointDescriptors); desc_b (B, D, h, w) B's unit descriptors at position_b (B, 2, h, w).
    anchors (B, h w) / negatives (B, h w) bool: the A cells that are anchors and the B cells that may
    be negatives (None: every cell).
    For A point i landing at w_i in B: positive = B's map sampled at w_i (normalised), negatives =
    the B points farther than ``exclusion_radius`` px from w_i;
    loss_i = -log(exp(f_i . p_i / t) / (exp(f_i . p_i / t) + sum_j exp(f_i . n_j / t))).
    """
    height, width = (s * 8 for s in sources_b[0].shape[-2:])
    warped = warp_points(_flat(position_a.float()), homography_ab.float())  # (B, N, 2)
    inside = inside_image(warped.detach(), height, width)
    positive = describe(sources_b, warped.transpose(1, 2)[..., None])  # (B, D, N, 1)
    features = _flat(desc_a.float())
    positive_logit = (features * positive[..., 0].transpose(1, 2)).sum(-1) / temperature  # (B, N)
    negative_logits = torch.bmm(features, _flat(desc_b.float()).transpose(1, 2)) / temperature  # (B, N, M)
    excluded = torch.cdist(warped.detach(), _flat(position_b.float()).detach()) <= exclusion_radius
    if negatives is not None:
        excluded = excluded | ~negatives[:, None, :]
    negative_logits = negative_logits.masked_fill(excluded, float("-inf"))
    logits = torch.cat([positive_logit[..., None], negative_logits], dim=-1)
    loss = torch.logsumexp(logits, dim=-1) - positive_logit
    if anchors is not None:
        inside = inside & anchors
    return (loss * inside.float()).sum(dim=1)


def dense_losses(maps_a: TrainingMaps, maps_b: TrainingMaps, describe: Describe, homography_ab: torch.Tensor,
                 radius: int, fraction: float, temperature: float, exclusion_radius: float,
                 desc_fraction: float = 1.0, position_fit: str = "softargmax") -> dict[str, torch.Tensor]:
    """The dense terms of a Siamese batch, both directions, each a scalar (mean over the batch).

    maps_a, maps_b: TrainingMaps of A and B (``fine`` may be None: then no reprojection or peakiness);
    describe: the network's PointDescriptors, which read the descriptor sources at any points.
    fraction: share of cells in reprojection and peakiness; desc_fraction: in the descriptor term (1 = all);
    position_fit: how B's point is placed in the reprojection term (as the maps' positions were placed).
    Returns "reprojection", "peakiness" (only with fine maps) and "dense_desc", unweighted.
    """
    homography_ba = torch.linalg.inv(homography_ab.double()).float()
    terms: dict[str, torch.Tensor] = {}
    with torch.autocast(device_type=homography_ab.device.type, enabled=False):
        if maps_a.fine is not None and maps_b.fine is not None:
            ab = reprojection_terms(maps_a.dense.position, maps_a.dense.score, maps_b.fine, homography_ab, radius,
                                    fraction, position_fit)
            ba = reprojection_terms(maps_b.dense.position, maps_b.dense.score, maps_a.fine, homography_ba, radius,
                                    fraction, position_fit)
            terms["reprojection"] = (ab[0] + ba[0]).mean()
            terms["peakiness"] = (ab[1] + ba[1]).mean()
        a, b = maps_a.dense, maps_b.dense
        kept_a = top_cells(a.score, desc_fraction) if desc_fraction < 1.0 else None
        kept_b = top_cells(b.score, desc_fraction) if desc_fraction < 1.0 else None
        terms["dense_desc"] = (
            dense_descriptor_loss(a.descriptors, a.position, maps_b.descriptor_sources, describe, b.descriptors,
                                  b.position, homography_ab, temperature, exclusion_radius, kept_a, kept_b)
            + dense_descriptor_loss(b.descriptors, b.position, maps_a.descriptor_sources, describe, a.descriptors,
                                    a.position, homography_ba, temperature, exclusion_radius, kept_b, kept_a)).mean()
    return terms

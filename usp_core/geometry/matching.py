"""Descriptor matching and robust homography estimation, shared by evaluation and the ROS matcher."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

__all__ = ["mutual_nearest_neighbours", "HomographyEstimate", "estimate_homography"]

_METHODS = {"ransac": cv2.RANSAC, "magsac": cv2.USAC_MAGSAC}


def _distances(desc_a: torch.Tensor, desc_b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (N, M) from the similarity matrix desc_a @ desc_b.T (float32)."""
    a, b = desc_a.float(), desc_b.float()
    similarity = a @ b.T
    squared = a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2.0 * similarity
    return squared.clamp(min=0.0).sqrt()


def _passes_ratio(distances: torch.Tensor, ratio: float) -> torch.Tensor:
    """Lowe's test along dim 1: nearest < ratio * second nearest, (rows,) bool. One column always passes."""
    if distances.shape[1] < 2:
        return torch.ones(distances.shape[0], dtype=torch.bool, device=distances.device)
    two = distances.topk(2, dim=1, largest=False).values
    return two[:, 0] < ratio * two[:, 1]


def mutual_nearest_neighbours(desc_a: torch.Tensor, desc_b: torch.Tensor, ratio: float | None = None) -> torch.Tensor:
    """Index pairs (K, 2) long (i in a, j in b) of mutual nearest neighbours in descriptor distance.

    desc_a (N, D), desc_b (M, D) on any device; the result is on the same device. With ``ratio``,
    a pair is kept only when Lowe's ratio test (nearest distance < ratio * second nearest) passes
    in BOTH directions. Pairs are ordered by i.
    """
    if desc_a.shape[0] == 0 or desc_b.shape[0] == 0:
        return torch.zeros((0, 2), dtype=torch.long, device=desc_a.device)
    distances = _distances(desc_a, desc_b)
    nearest_ab = distances.argmin(dim=1)
    nearest_ba = distances.argmin(dim=0)
    indices = torch.arange(desc_a.shape[0], device=desc_a.device)
    keep = nearest_ba[nearest_ab] == indices
    if ratio is not None:
        keep &= _passes_ratio(distances, ratio) & _passes_ratio(distances.T, ratio)[nearest_ab]
    return torch.stack((indices[keep], nearest_ab[keep]), dim=1)


@dataclass
class HomographyEstimate:
    """Result of :func:`estimate_homography`.

    homography: (3, 3) float64 mapping points_a to points_b, or None when not ``valid``.
    inlier_mask: (K,) bool over the given correspondences (all False when not estimated).
    """

    homography: np.ndarray | None
    inlier_mask: np.ndarray
    num_matches: int
    num_inliers: int
    valid: bool


def estimate_homography(points_a: np.ndarray, points_b: np.ndarray, method: str = "ransac",
                        threshold: float = 3.0, min_inliers: int = 8) -> HomographyEstimate:
    """Robust homography from correspondences points_a (K, 2) -> points_b (K, 2) with cv2.findHomography.

    method: "ransac" (cv2.RANSAC) or "magsac" (cv2.USAC_MAGSAC); threshold: reprojection error in
    pixels. ``valid`` is False (and ``homography`` None) with fewer than 4 matches, when OpenCV finds
    no model, or with fewer than ``min_inliers`` inliers; the counts are reported in every case.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    points_a = np.asarray(points_a, dtype=np.float64).reshape(-1, 2)
    points_b = np.asarray(points_b, dtype=np.float64).reshape(-1, 2)
    if points_a.shape != points_b.shape:
        raise ValueError(f"points_a {points_a.shape} and points_b {points_b.shape} differ in shape")
    count = len(points_a)
    none = np.zeros(count, dtype=bool)
    if count < 4:
        return HomographyEstimate(None, none, count, 0, False)
    homography, mask = cv2.findHomography(points_a, points_b, _METHODS[method], threshold)
    if homography is None or mask is None:
        return HomographyEstimate(None, none, count, 0, False)
    inliers = mask.reshape(-1).astype(bool)
    num_inliers = int(inliers.sum())
    valid = num_inliers >= max(min_inliers, 4)
    return HomographyEstimate(homography if valid else None, inliers, count, num_inliers, valid)

"""Detector and descriptor metrics of the HPatches protocol (UnsuperPoint / KP2D), as pure numpy functions.

Points are (N, 2) arrays of (x, y) pixel coordinates; image sizes are (h, w); homographies are
(3, 3) and map pixels of image a to pixels of image b. A point is inside an image of size (h, w)
when 0 <= x <= w - 1 and 0 <= y <= h - 1 (OpenCV pixel centres).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CORRECT_DISTANCE = 3.0  # px: a point is repeated / a match correct within this distance (the protocol's 3 px)
HOMOGRAPHY_THRESHOLDS = (1, 3, 5)  # px: mean corner error thresholds of homography accuracy


def warp_points(points: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped by a (3, 3) homography -> (N, 2) float64."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    projected = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ np.asarray(homography, np.float64).T
    return projected[:, :2] / projected[:, 2:3]


def inside(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N,) bool: which of the (N, 2) points lie inside an image of size (h, w); non-finite points do not."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = points[:, 0], points[:, 1]
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & np.isfinite(y) & (x >= 0) & (y >= 0) & (x <= size[1] - 1) & (y <= size[0] - 1)


def _pairwise_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) Euclidean distances between (N, 2) and (M, 2) points."""
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)


@dataclass(frozen=True)
class Repeatability:
    """Repeatability of one pair: rate in [0, 1] and mean localization error (px) of the repeated points.

    Both are NaN when no point lies in the shared region (rate) or no point is repeated (error).
    """

    rate: float
    localization_error: float
    repeated: int
    shared: int


def repeatability(
    points_a: np.ndarray,
    points_b: np.ndarray,
    homography: np.ndarray,
    size_a: tuple[int, int],
    size_b: tuple[int, int],
    distance: float = CORRECT_DISTANCE,
) -> Repeatability:
    """Repeatability and localization error of detections (N, 2) in a and (M, 2) in b.

    Only points whose warp lands inside the other image count. A point is repeated when its
    warp is within `distance` px of a (counted) detection of the other image; the rate is
    (repeated_a + repeated_b) / (N_a + N_b) and the error the mean distance over repeated points.
    """
    homography = np.asarray(homography, dtype=np.float64)
    warped_a = warp_points(points_a, homography)
    warped_b = warp_points(points_b, np.linalg.inv(homography))
    keep_a = inside(warped_a, size_b)
    keep_b = inside(warped_b, size_a)
    shared = int(keep_a.sum() + keep_b.sum())
    if shared == 0:
        return Repeatability(float("nan"), float("nan"), 0, 0)
    if not keep_a.any() or not keep_b.any():
        return Repeatability(0.0, float("nan"), 0, shared)
    distances = _pairwise_distance(warped_a[keep_a], np.asarray(points_b, np.float64).reshape(-1, 2)[keep_b])
    nearest = np.concatenate([distances.min(axis=1), distances.min(axis=0)])
    correct = nearest <= distance
    repeated = int(correct.sum())
    error = float(nearest[correct].mean()) if repeated else float("nan")
    return Repeatability(repeated / shared, error, repeated, shared)


def corner_error(estimate: np.ndarray | None, truth: np.ndarray, size: tuple[int, int]) -> float:
    """Mean distance (px) between the 4 corners of an image of size (h, w) warped by estimate and by truth.

    Infinite when there is no estimate or it sends a corner to infinity.
    """
    if estimate is None:
        return float("inf")
    h, w = size
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        error = np.linalg.norm(warp_points(corners, estimate) - warp_points(corners, truth), axis=1).mean()
    return float(error) if np.isfinite(error) else float("inf")


def homography_accuracy(errors: np.ndarray, thresholds: tuple[float, ...] = HOMOGRAPHY_THRESHOLDS) -> dict[str, float]:
    """Fraction of pairs whose corner error is <= each threshold: {"1": .., "3": .., "5": ..}; NaN without pairs."""
    errors = np.asarray(errors, dtype=np.float64)
    return {
        f"{t:g}": float(np.mean(errors <= t)) if errors.size else float("nan") for t in thresholds
    }


def matching_score(points_a: np.ndarray, points_b: np.ndarray, matches_ab: np.ndarray, matches_ba: np.ndarray,
                   homography: np.ndarray, size_a: tuple[int, int], size_b: tuple[int, int],
                   distance: float = CORRECT_DISTANCE) -> float:
    """Matching score of the published protocol (SuperPoint's evaluation, as UnsuperPoint and KP2D report it).

    points_a (N, 2), points_b (M, 2); matches_ab (N, 2): every point i of a with its plain nearest
    neighbour j in b, matches_ba (M, 2): every point j of b with its nearest i in a, both as (i, j).
    Direction a->b: each matched point j is warped into a; among those landing inside a, the fraction
    strictly within `distance` px of its point i (KP2D's `norm < 3`). Direction b->a likewise, points i
    warped into b. Returns the mean of both directions; a direction with no matched point inside scores
    0 (KP2D divides by max(count, 1)).
    """
    homography, points_a, points_b = _as_float64(homography, points_a, points_b)
    i_ab, j_ab = np.asarray(matches_ab, dtype=np.int64).reshape(-1, 2).T
    i_ba, j_ba = np.asarray(matches_ba, dtype=np.int64).reshape(-1, 2).T
    score_ab = _fraction_correct(points_a[i_ab], points_b[j_ab], np.linalg.inv(homography), size_a, distance)
    score_ba = _fraction_correct(points_b[j_ba], points_a[i_ba], homography, size_b, distance)
    return (score_ab + score_ba) / 2


def _as_float64(homography: np.ndarray, points_a: np.ndarray, points_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """The (3, 3) homography and the (N, 2) and (M, 2) points as float64 arrays."""
    return (np.asarray(homography, np.float64), np.asarray(points_a, np.float64).reshape(-1, 2),
            np.asarray(points_b, np.float64).reshape(-1, 2))


def _fraction_correct(
    query: np.ndarray, matched: np.ndarray, homography: np.ndarray, size_query: tuple[int, int], distance: float
) -> float:
    """One direction of matching_score: (K, 2) matched points warped by homography into the query image.

    Among the warps inside the query image (size (h, w)), the fraction strictly within distance px
    of their (K, 2) query points; 0 when none is inside.
    """
    warped = warp_points(matched, homography)
    visible = inside(warped, size_query)
    with np.errstate(invalid="ignore"):
        correct = visible & (np.linalg.norm(warped - query, axis=1) < distance)
    return float(correct.sum() / max(int(visible.sum()), 1))


def mutual_matching_score(points_a: np.ndarray, points_b: np.ndarray, matches: np.ndarray, homography: np.ndarray,
                          size_a: tuple[int, int], size_b: tuple[int, int],
                          distance: float = CORRECT_DISTANCE) -> float:
    """Matching score of mutual nearest-neighbour matches: what the ROS matcher relies on.

    points_a (N, 2), points_b (M, 2); matches (K, 2): index pairs (i in a, j in b). Direction a->b:
    matches whose point i lies in the shared region and whose warp is within `distance` px of point j,
    over all points of a in the shared region; b->a likewise with the inverse homography. Returns the
    mean of both directions (NaN when no point is shared).
    """
    homography, points_a, points_b = _as_float64(homography, points_a, points_b)
    matches = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    scores = []
    for src, dst, h, size_dst, col_src, col_dst in (
        (points_a, points_b, homography, size_b, 0, 1),
        (points_b, points_a, np.linalg.inv(homography), size_a, 1, 0),
    ):
        warped = warp_points(src, h)
        visible = inside(warped, size_dst)
        if not visible.any():
            continue
        i, j = matches[:, col_src], matches[:, col_dst]
        close = np.linalg.norm(warped[i] - dst[j], axis=1) <= distance
        scores.append(float(np.sum(close & visible[i]) / visible.sum()))
    return float(np.mean(scores)) if scores else float("nan")

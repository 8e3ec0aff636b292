"""Detector precision, recall and mAP on Synthetic Shapes (SuperPoint, Table 2): MagicPoint, FAST, Harris, Shi-Tomasi.

Protocol (every method alike, on the same rendered images):

- Candidates: each method gives a dense (H, W) score map (MagicPoint's heatmap, or a classical
  detector's response, see :data:`CLASSICAL`), decoded by ``usp_core.models.superpoint.heatmap_points``
  with the same NMS radius and border for all, keeping every NMS maximum with a positive score
  (the lowest possible sweep threshold: the precision-recall curve reaches as far as each method can).
- Ground truth: the render's points whose nearest pixel lies in the evaluated region (``border``
  pixels from each edge, the region where detections are kept), so no method is charged for points
  none may report.
- Matching (:func:`match_detections`): per image, detections in descending score order; each takes
  the nearest still unmatched ground-truth point within ``distance`` (4 px) and is then correct;
  every ground-truth point is matched at most once, so a second detection on it is a false positive.
- Pooling: the candidates of all images are pooled (as in PASCAL VOC), so one threshold applies
  to the whole set, as a deployed detector's does.
- mAP (:func:`average_precision`): average precision as scikit-learn's ``average_precision_score``,
  the step-wise sum ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds in decreasing
  order (``R_0 = 0``; tied scores enter together), no interpolation. Recall stays below 1 when a
  method never finds some points; the missing area counts as 0.
- Operating point for precision / recall: MagicPoint at a fixed heatmap threshold (the paper's
  0.015); each classical detector at the threshold that maximises its F1 on the evaluated set
  (:func:`max_f1_threshold`). Classical responses have no calibrated scale (FAST's integer score,
  Harris' det - k trace^2), so no fixed threshold is comparable across them; the max-F1 threshold is
  each one's best balanced operating point, chosen with the ground truth, which favours the
  classical detectors: MagicPoint ahead of them is a conservative claim.

Classical responses are normalised per image to [0, 1] (divided by the image's largest response):
Harris and Shi-Tomasi grow with the 4th and 2nd power of the local contrast, which varies from render
to render, and the per-image scale measured higher mAP for all three (seeds 0-199, 120x160: FAST
0.375 vs 0.366, Harris 0.393 vs 0.306, Shi-Tomasi 0.340 vs 0.225 with 3x3 blocks) than one scale for
the whole set; again the choice that favours the baselines. Their block size and Sobel aperture were
chosen the same way: the best mAP on seeds 0-199 (disjoint from the held-out 1 000 000 onward) among
blockSize 2-7 and ksize 3, 5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch

from usp_core.models.superpoint import NMS_RADIUS, heatmap_points
from usp_core.training.synthetic_shapes import ShapesConfig, render_shapes

__all__ = ["MATCH_DISTANCE", "CLASSICAL", "Pooled", "render_set", "add_noise", "match_detections",
           "precision_recall_curve", "average_precision", "precision_recall_at", "max_f1_threshold",
           "truth_in_region", "evaluate_maps", "unit_max", "classical_maps", "fast_response", "harris_response",
           "shi_tomasi_response", "network_heatmaps", "summarize"]

MATCH_DISTANCE = 4.0  # px: a detection this close to a ground-truth point is correct (the paper's epsilon)
NOISE_BLUR_SIGMA = 1.0  # px, --noise: Gaussian blur of the render ...
NOISE_STD = 10.0  # grey levels, --noise: ... then additive Gaussian pixel noise (on top of the renderer's own)
NOISE_STREAM = 7  # second seed word of the --noise draws, so they differ from the render's own
FAST_THRESHOLD = 1  # grey levels: FAST's lowest useful threshold, so the sweep sees every FAST corner
HARRIS_BLOCK, HARRIS_APERTURE, HARRIS_K = 5, 5, 0.04  # cv2.cornerHarris(blockSize, ksize, k); see the module docstring
SHI_TOMASI_BLOCK, SHI_TOMASI_APERTURE = 3, 5  # cv2.cornerMinEigenVal(blockSize, ksize)


@dataclass
class Pooled:
    """Every candidate detection of one method over an image set, with its match outcome."""

    scores: np.ndarray  # (N,) float: candidate scores, images concatenated
    correct: np.ndarray  # (N,) bool: matched to a ground-truth point
    num_truth: int  # ground-truth points over the set (the recall denominator)
    num_images: int


def render_set(count: int, seed: int, size: tuple[int, int], noise: bool = False
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Renders of seeds ``seed .. seed + count - 1`` at size (H, W): (images [(H, W) uint8], points [(N, 2) (x, y)])."""
    config = ShapesConfig(image_size=size)
    images, points = [], []
    for index in range(seed, seed + count):
        image, truth = render_shapes(index, config)
        images.append(add_noise(image, index) if noise else image)
        points.append(truth)
    return images, points


def add_noise(image: np.ndarray, seed: int) -> np.ndarray:
    """(H, W) uint8 -> the same blurred (sigma ``NOISE_BLUR_SIGMA``) plus Gaussian noise (``NOISE_STD``), seeded."""
    rng = np.random.default_rng([seed, NOISE_STREAM])
    blurred = cv2.GaussianBlur(image.astype(np.float32), (0, 0), NOISE_BLUR_SIGMA)
    noisy = blurred + rng.normal(0.0, NOISE_STD, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def match_detections(points: np.ndarray, scores: np.ndarray, truth: np.ndarray,
                     distance: float = MATCH_DISTANCE) -> np.ndarray:
    """Which detections are correct: (correct (N,) bool) for points (N, 2), scores (N,), truth (M, 2), pixel (x, y).

    Greedy by score: detections in descending score order (ties: input order) each take the nearest
    unmatched ground-truth point within ``distance`` px (inclusive); each truth is matched at most once.
    """
    correct = np.zeros(len(points), dtype=bool)
    if len(points) == 0 or len(truth) == 0:
        return correct
    gaps = np.linalg.norm(points[:, None, :].astype(np.float64) - truth[None, :, :], axis=2)  # (N, M)
    gaps[gaps > distance] = np.inf
    for index in np.argsort(-scores, kind="stable"):
        nearest = int(np.argmin(gaps[index]))
        if np.isfinite(gaps[index, nearest]):
            correct[index] = True
            gaps[:, nearest] = np.inf
    return correct


def precision_recall_curve(scores: np.ndarray, correct: np.ndarray, num_truth: int
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds (T,) descending, precision (T,), recall (T,)): detections with score >= each distinct score kept."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], correct[order].astype(np.float64)
    last = np.r_[np.nonzero(np.diff(ranked))[0], len(ranked) - 1] if len(ranked) else np.zeros(0, int)
    true_positives = np.cumsum(hits)[last]
    precision = true_positives / (last + 1)
    recall = true_positives / num_truth if num_truth else np.full(len(last), np.nan)
    return ranked[last], precision, recall


def average_precision(scores: np.ndarray, correct: np.ndarray, num_truth: int) -> float:
    """Step-wise AP: sum_k (R_k - R_{k-1}) P_k over distinct thresholds (as scikit-learn); nan without truth."""
    if num_truth == 0:
        return float("nan")
    _, precision, recall = precision_recall_curve(scores, correct, num_truth)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_recall_at(scores: np.ndarray, correct: np.ndarray, num_truth: int, threshold: float
                        ) -> tuple[float, float, int]:
    """(precision, recall, detections) keeping scores >= threshold; precision nan without detections."""
    kept = scores >= threshold
    hits, count = int(correct[kept].sum()), int(kept.sum())
    precision = hits / count if count else float("nan")
    recall = hits / num_truth if num_truth else float("nan")
    return precision, recall, count


def max_f1_threshold(scores: np.ndarray, correct: np.ndarray, num_truth: int) -> float:
    """The score threshold whose kept detections have the highest F1 (the highest such threshold on ties)."""
    thresholds, precision, recall = precision_recall_curve(scores, correct, num_truth)
    if len(thresholds) == 0 or num_truth == 0:
        return float("inf")  # nothing to keep
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    return float(thresholds[int(np.argmax(f1))])


def truth_in_region(truth: np.ndarray, size: tuple[int, int], border: int) -> np.ndarray:
    """The ground-truth points (M, 2) (x, y) whose nearest pixel is at least ``border`` px from every edge of (H, W)."""
    height, width = size
    pixel = np.floor(truth + 0.5)
    inside = (pixel[:, 0] >= border) & (pixel[:, 0] <= width - 1 - border) & \
             (pixel[:, 1] >= border) & (pixel[:, 1] <= height - 1 - border)
    return truth[inside]


def evaluate_maps(maps: Iterable[np.ndarray], truths: list[np.ndarray], radius: int = NMS_RADIUS, border: int = 4,
                  distance: float = MATCH_DISTANCE) -> Pooled:
    """Pool the candidates of score maps [(H, W)] (one per image, in the order of ``truths`` [(M, 2) (x, y)]).

    Each map is decoded by heatmap_points (NMS ``radius``, ``border``, every positive maximum kept)
    and matched against the ground truth in the evaluated region.
    """
    scores, correct, num_truth, count = [], [], 0, 0
    for score_map, truth in zip(maps, truths, strict=True):
        points, point_scores = heatmap_points(score_map, radius=radius, threshold=0.0, border=border)
        kept_truth = truth_in_region(truth, score_map.shape, border)
        scores.append(point_scores)
        correct.append(match_detections(points, point_scores, kept_truth, distance))
        num_truth, count = num_truth + len(kept_truth), count + 1
    return Pooled(np.concatenate(scores) if scores else np.zeros(0, np.float32),
                  np.concatenate(correct) if correct else np.zeros(0, bool), num_truth, count)


def unit_max(response: np.ndarray) -> np.ndarray:
    """(H, W) response -> (H, W) float32 in [0, 1]: negatives 0, divided by the largest value (all 0 stays 0)."""
    response = np.maximum(response, 0.0).astype(np.float32)
    top = float(response.max()) if response.size else 0.0
    return response / top if top > 0 else response


def fast_response(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W) float32: FAST-9 score (``response``) at its corners (own 3x3 NMS on), 0 elsewhere.

    Raw scores; :func:`classical_maps` normalises every detector's map per image.
    """
    detector = cv2.FastFeatureDetector_create(threshold=FAST_THRESHOLD, nonmaxSuppression=True)
    keypoints = detector.detect(image)
    response = np.zeros(image.shape, np.float32)
    if keypoints:
        pixels = np.rint(cv2.KeyPoint_convert(keypoints)).astype(int)  # (N, 2) x, y; FAST's are whole pixels
        np.maximum.at(response, (pixels[:, 1], pixels[:, 0]), np.array([k.response for k in keypoints], np.float32))
    return response


def harris_response(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W) float32 Harris response det(M) - k trace(M)^2 of the image in [0, 1]."""
    return cv2.cornerHarris(image.astype(np.float32) / 255.0, HARRIS_BLOCK, HARRIS_APERTURE, HARRIS_K)


def shi_tomasi_response(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W) float32 Shi-Tomasi response: the smaller eigenvalue of the structure tensor."""
    return cv2.cornerMinEigenVal(image.astype(np.float32) / 255.0, SHI_TOMASI_BLOCK, ksize=SHI_TOMASI_APERTURE)


CLASSICAL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "FAST": fast_response,
    "Harris": harris_response,
    "Shi-Tomasi": shi_tomasi_response,
}


def classical_maps(detector: Callable[[np.ndarray], np.ndarray], images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Score maps (H, W) float32 in [0, 1] of a classical detector (one of :data:`CLASSICAL`), normalised per image."""
    for image in images:
        yield unit_max(detector(image))


def network_heatmaps(heatmap: Callable[[torch.Tensor], torch.Tensor], images: list[np.ndarray],
                     device: torch.device | str = "cpu", batch_size: int = 16) -> Iterator[np.ndarray]:
    """Heatmaps (H, W) float32 of (H, W) uint8 images, ``heatmap`` taking (B, 1, H, W) in [0, 1] -> (B, 1, H, W).

    Runs ``batch_size`` images per call under torch.no_grad; yields one map per image, in order.
    """
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.stack(images[start:start + batch_size])).to(device)
        with torch.no_grad():
            maps = heatmap(batch[:, None].float() / 255.0)
        yield from maps[:, 0].float().cpu().numpy()


def summarize(pooled: Pooled, threshold: float | None = None) -> dict:
    """Precision, recall, mAP and points per image at ``threshold``, or at the max-F1 threshold when None.

    Also reports the max-F1 point and the candidates per image (the sweep's extent). JSON-ready (nan -> None).
    """
    args = (pooled.scores, pooled.correct, pooled.num_truth)
    best = max_f1_threshold(*args)
    operating = best if threshold is None else threshold
    precision, recall, count = precision_recall_at(*args, operating)
    best_precision, best_recall, _ = precision_recall_at(*args, best)
    summary = {
        "precision": precision, "recall": recall, "map": average_precision(*args),
        "points_per_image": count / max(pooled.num_images, 1),
        "threshold": operating, "operating_point": "max F1" if threshold is None else "fixed threshold",
        "max_f1": {"threshold": best, "precision": best_precision, "recall": best_recall,
                   "f1": _f1(best_precision, best_recall)},
        "candidates_per_image": len(pooled.scores) / max(pooled.num_images, 1),
        "max_recall": precision_recall_at(*args, -np.inf)[1],  # every candidate kept: the sweep's reach
        "ground_truth_points": pooled.num_truth,
    }
    return _finite(summary)


def _f1(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall; 0 when both are 0, nan when either is nan."""
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0 * precision * recall


def _finite(value):
    """A nested dict with every non-finite float replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return float(value) if isinstance(value, (float, np.floating)) else value

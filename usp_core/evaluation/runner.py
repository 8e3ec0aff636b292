"""Run one method over every pair and aggregate the protocol's metrics, per sequence and overall."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Collection

import cv2
import numpy as np

from usp_core.evaluation.dataset import EvalPair
from usp_core.evaluation.match import mutual_matches, nearest_neighbour_matches
from usp_core.evaluation.methods import Method
from usp_core.evaluation.metrics import (
    corner_error,
    homography_accuracy,
    matching_score,
    mutual_matching_score,
    repeatability,
)
from usp_core.geometry.matching import estimate_homography
from usp_core.inference.features import Features

logger = logging.getLogger(__name__)

RANSAC_THRESHOLD = 3.0  # px: cv2.findHomography RANSAC reprojection threshold of the protocol
RANSAC_SEED = 0  # OpenCV RNG seed set before each RANSAC, so a run is reproducible


@dataclass(frozen=True)
class PairResult:
    """Metrics of one pair (image 1, image k) of a sequence; NaN where undefined (see metrics.py).

    matching_score: the published protocol (plain nearest neighbours); matching_score_mutual: over
    the mutual matches, which num_matches counts and the homography is estimated from.
    """

    sequence: str
    index: int
    repeatability: float
    localization_error: float
    corner_error: float
    matching_score: float
    matching_score_mutual: float
    num_matches: int
    num_inliers: int


@dataclass(frozen=True)
class ImageRecord:
    """Keypoint count and extraction time (ms) of one image."""

    sequence: str
    keypoints: int
    milliseconds: float


@dataclass(frozen=True)
class MatchExample:
    """What a match picture needs: the pair, both images' features, (K, 2) matches and (K,) RANSAC inliers."""

    pair: EvalPair
    features_a: Features
    features_b: Features
    matches: np.ndarray
    inliers: np.ndarray
    corner_error: float


@dataclass
class MethodResult:
    """Everything measured for one method in one run."""

    name: str
    pairs: list[PairResult] = field(default_factory=list)
    images: list[ImageRecord] = field(default_factory=list)
    examples: list[MatchExample] = field(default_factory=list)


def evaluate_pair(
    pair: EvalPair, features_a: Features, features_b: Features, binary: bool
) -> tuple[PairResult, MatchExample]:
    """All metrics of one pair from both images' features (binary: Hamming matching)."""
    size_a, size_b = pair.image_a.shape[:2], pair.image_b.shape[:2]
    points_a, points_b = features_a.keypoints, features_b.keypoints
    rep = repeatability(points_a, points_b, pair.homography, size_a, size_b)
    matches_ab, matches_ba = nearest_neighbour_matches(features_a.descriptors, features_b.descriptors, binary)
    matches = mutual_matches(matches_ab, matches_ba)
    estimate_h, inliers = None, np.zeros(len(matches), dtype=bool)
    if len(matches) >= 4:
        cv2.setRNGSeed(RANSAC_SEED)
        estimate = estimate_homography(points_a[matches[:, 0]], points_b[matches[:, 1]], method="ransac",
                                       threshold=RANSAC_THRESHOLD, min_inliers=4)
        estimate_h, inliers = estimate.homography, np.asarray(estimate.inlier_mask, dtype=bool).reshape(-1)
    error = corner_error(estimate_h, pair.homography, size_a)
    score = matching_score(points_a, points_b, matches_ab, matches_ba, pair.homography, size_a, size_b)
    score_mutual = mutual_matching_score(points_a, points_b, matches, pair.homography, size_a, size_b)
    result = PairResult(pair.sequence, pair.index, rep.rate, rep.localization_error, error, score, score_mutual,
                        len(matches), int(inliers.sum()))
    return result, MatchExample(pair, features_a, features_b, matches, inliers, error)


def _timed_extract(method: Method, image: np.ndarray, sequence: str, images: list[ImageRecord]) -> Features:
    """method.extract(image), recording its keypoint count and wall time in images."""
    start = time.perf_counter()
    features = method.extract(image)
    images.append(ImageRecord(sequence, len(features), 1000.0 * (time.perf_counter() - start)))
    return features


def evaluate_method(
    method: Method, sequences: list[list[EvalPair]], examples: Collection[tuple[str, int]] = ()
) -> MethodResult:
    """Evaluate method on every pair of every sequence (a list of pairs sharing image 1).

    Each image is extracted once and timed; one untimed extraction first warms the method up.
    examples: (sequence, k) of the pairs whose MatchExample is kept for pictures.
    """
    result = MethodResult(method.name)
    non_empty = [pairs for pairs in sequences if pairs]
    if non_empty:
        method.extract(non_empty[0][0].image_a)
    for pairs in non_empty:
        features_a = _timed_extract(method, pairs[0].image_a, pairs[0].sequence, result.images)
        for pair in pairs:
            features_b = _timed_extract(method, pair.image_b, pair.sequence, result.images)
            pair_result, example = evaluate_pair(pair, features_a, features_b, method.binary)
            result.pairs.append(pair_result)
            if (pair.sequence, pair.index) in examples:
                result.examples.append(example)
        logger.info("%s: %s done (%d pairs)", method.name, pairs[0].sequence, len(pairs))
    return result


def _mean(values) -> float:
    """Mean of the finite values (NaN when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarize(pairs: list[PairResult], images: list[ImageRecord]) -> dict:
    """Metrics averaged over pairs (and images): the JSON shape of one method or one sequence.

    Repeatability, localization error and both matching scores are means over the pairs where they
    are defined; homography accuracy counts a failed estimate as wrong.
    """
    return {
        "repeatability": _mean(p.repeatability for p in pairs),
        "localization_error": _mean(p.localization_error for p in pairs),
        "homography_accuracy": homography_accuracy(np.array([p.corner_error for p in pairs], dtype=np.float64)),
        "matching_score": _mean(p.matching_score for p in pairs),
        "matching_score_mutual": _mean(p.matching_score_mutual for p in pairs),
        "keypoints_per_image": _mean(i.keypoints for i in images),
        "ms_per_image": _mean(i.milliseconds for i in images),
    }


def method_summary(result: MethodResult) -> dict:
    """Overall summary of a method with a "sequences" entry holding each sequence's summary."""
    names = list(dict.fromkeys(p.sequence for p in result.pairs))
    sequences = {
        name: summarize([p for p in result.pairs if p.sequence == name],
                        [i for i in result.images if i.sequence == name])
        for name in names
    }
    return {**summarize(result.pairs, result.images), "sequences": sequences}

"""Protocol metrics on constructed cases whose answer is known."""
import math

import cv2
import numpy as np
import pytest

from usp_core.evaluation.dataset import EvalPair
from usp_core.evaluation.metrics import (
    corner_error,
    homography_accuracy,
    inside,
    matching_score,
    mutual_matching_score,
    repeatability,
    warp_points,
)
from usp_core.evaluation.runner import evaluate_pair
from usp_core.inference.features import Features

SIZE = (240, 320)  # (h, w) of both images


def perspective() -> np.ndarray:
    """A mild viewpoint change that keeps most of the image in view."""
    return np.array([[0.9, 0.08, 12.0], [-0.05, 0.95, 8.0], [1e-4, -5e-5, 1.0]])


def rigid(angle_deg: float = 10.0, tx: float = 7.0, ty: float = -4.0) -> np.ndarray:
    """Rotation + translation: preserves distances, so errors are the same in both images."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def grid(step: float = 20.0, size=SIZE) -> np.ndarray:
    """(N, 2) points on a regular grid covering the image, 10 px from its border."""
    xs, ys = np.meshgrid(np.arange(10, size[1] - 10, step), np.arange(10, size[0] - 10, step))
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


def perfect_pair(homography: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of a, their exact warps that land in b, and matches (i in a, j in b) between them."""
    points_a = grid()
    warped = warp_points(points_a, homography)
    keep = inside(warped, SIZE)
    points_b = warped[keep]
    matches = np.stack([np.flatnonzero(keep), np.arange(keep.sum())], axis=1)
    return points_a, points_b, matches


def test_warp_points_identity_and_translation():
    points = grid()
    np.testing.assert_allclose(warp_points(points, np.eye(3)), points)
    np.testing.assert_allclose(warp_points(points, rigid(0.0, 3.0, -2.0)), points + [3.0, -2.0])


def test_inside_uses_pixel_centre_hull_and_rejects_nan():
    points = np.array([[0, 0], [319, 239], [319.01, 5], [-0.01, 5], [5, 239.5], [np.nan, 3]])
    assert inside(points, SIZE).tolist() == [True, True, False, False, False, False]


def test_perfect_detector_under_exact_homography():
    points_a, points_b, _ = perfect_pair(perspective())
    result = repeatability(points_a, points_b, perspective(), SIZE, SIZE)
    assert result.rate == pytest.approx(1.0)
    assert result.localization_error == pytest.approx(0.0, abs=1e-9)
    assert result.shared == result.repeated > 100


def test_every_point_shifted_by_2px_gives_localization_error_2():
    points_a = grid(step=25.0)
    warped = warp_points(points_a, rigid())
    points_a = points_a[inside(warped - 5, (SIZE[0] - 10, SIZE[1] - 10))]  # warps at least 5 px inside b
    angles = np.linspace(0, 2 * np.pi, len(points_a), endpoint=False)
    shift = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    points_b = warp_points(points_a, rigid()) + shift
    result = repeatability(points_a, points_b, rigid(), SIZE, SIZE)
    assert result.localization_error == pytest.approx(2.0)
    assert result.rate == pytest.approx(1.0)
    assert repeatability(points_a, warp_points(points_a, rigid()) + 2 * shift, rigid(), SIZE, SIZE).rate == 0.0


def test_points_outside_the_shared_region_are_excluded():
    homography = rigid(0.0, 100.0, 0.0)
    points_a, points_b, _ = perfect_pair(homography)
    reference = repeatability(points_a, points_b, homography, SIZE, SIZE)
    outside_a = np.array([[300.0, 50.0], [310.0, 200.0]])  # warp to x > 400: outside b
    outside_b = np.array([[20.0, 30.0], [60.0, 100.0]])  # come from x < 0: outside a
    all_a, all_b = np.vstack([points_a, outside_a]), np.vstack([points_b, outside_b])
    with_outside = repeatability(all_a, all_b, homography, SIZE, SIZE)
    assert with_outside == reference
    assert reference.rate == pytest.approx(1.0)
    assert reference.shared == 2 * np.sum(inside(warp_points(points_a, homography), SIZE))


def test_unrepeated_points_inside_lower_the_rate_exactly():
    homography = np.eye(3)
    points = grid(step=40.0)
    extra = points[:5] + [15.0, 15.0]  # inside, more than 3 px from every other point
    result = repeatability(np.vstack([points, extra]), points, homography, SIZE, SIZE)
    assert result.rate == pytest.approx(2 * len(points) / (2 * len(points) + 5))


def test_repeatability_without_shared_points_is_undefined():
    result = repeatability(grid(), grid(), rigid(0.0, 1000.0, 0.0), SIZE, SIZE)
    assert math.isnan(result.rate) and result.shared == 0


def test_exact_homography_has_zero_corner_error_and_full_accuracy():
    points_a, points_b, matches = perfect_pair(perspective())
    estimate, _ = cv2.findHomography(points_a[matches[:, 0]], points_b[matches[:, 1]], cv2.RANSAC, 3.0)
    error = corner_error(estimate, perspective(), SIZE)
    assert error < 1e-3
    assert homography_accuracy(np.array([error])) == {"1": 1.0, "3": 1.0, "5": 1.0}


def test_corner_error_of_a_translated_estimate_is_the_translation():
    truth = perspective()
    estimate = rigid(0.0, 3.0, 4.0) @ truth
    assert corner_error(estimate, truth, SIZE) == pytest.approx(5.0)
    assert corner_error(None, truth, SIZE) == math.inf


def test_homography_accuracy_counts_failures_as_wrong():
    accuracy = homography_accuracy(np.array([0.5, 2.0, 4.0, math.inf]))
    assert accuracy == {"1": 0.25, "3": 0.5, "5": 0.75}


def test_mutual_matching_score_of_correct_and_random_matches():
    points_a, points_b, matches = perfect_pair(perspective())
    assert mutual_matching_score(points_a, points_b, matches, perspective(), SIZE, SIZE) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    shuffled = np.stack([matches[:, 0], rng.permutation(matches[:, 1])], axis=1)
    assert mutual_matching_score(points_a, points_b, shuffled, perspective(), SIZE, SIZE) < 0.05


def test_mutual_matching_score_counts_only_the_shared_region():
    homography = rigid(0.0, 100.0, 0.0)
    points_a, points_b, matches = perfect_pair(homography)
    visible_a = inside(warp_points(points_a, homography), SIZE)
    assert not visible_a.all() and len(matches) == visible_a.sum()
    assert mutual_matching_score(points_a, points_b, matches, homography, SIZE, SIZE) == pytest.approx(1.0)
    half = matches[: len(matches) // 2]
    expected = len(half) / len(matches)
    assert mutual_matching_score(points_a, points_b, half, homography, SIZE, SIZE) == pytest.approx(expected)


# A pair where plain and mutual nearest neighbours differ. Image b is image a shifted 20 px right
# (both 100x100). a1 is a near-duplicate of a0 (1 px away) with b0's exact descriptor, so b0's
# nearest in a is a1: a0 -> b0 is a correct plain match that is not mutual. b2 lies outside a.
SHIFT = np.array([[1.0, 0.0, 20.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
POINTS_A = np.array([[30, 30], [31, 30], [60, 60], [50, 40], [40, 80]], dtype=np.float64)
#   in b: a0 (50, 30), a1 (51, 30), a2 (80, 60), a3 (70, 40), a4 (60, 80): all inside b
POINTS_B = np.array([[50, 30], [80, 62], [10, 70], [70, 20]], dtype=np.float64)
#   in a: b0 (30, 30), b1 (60, 62), b2 (-10, 70): outside a, b3 (50, 20)
E = np.eye(6)
DESCRIPTORS_A = np.stack([E[0] + 0.3 * E[5], E[0], E[1], E[2], E[3]])  # a0 near b0; a1, a2, a3, a4 = b0, b1, b2, b3
DESCRIPTORS_B = np.stack([E[0], E[1], E[2], E[3]])
# Plain nearest neighbours: a -> b: a0-b0, a1-b0, a2-b1, a3-b2, a4-b3; b -> a: b0-a1, b1-a2, b2-a3, b3-a4.
# Mutual nearest neighbours: a1-b0, a2-b1, a3-b2, a4-b3.


def constructed_pair_result():
    """evaluate_pair on the constructed pair (float descriptors)."""
    image = np.zeros((100, 100), dtype=np.uint8)
    pair = EvalPair("constructed", 2, image, image, SHIFT)

    def features(points, descriptors):
        return Features(points, np.ones(len(points)), descriptors.astype(np.float32), (100, 100))

    return evaluate_pair(pair, features(POINTS_A, DESCRIPTORS_A), features(POINTS_B, DESCRIPTORS_B), False)[0]


def test_published_matching_score_uses_plain_nearest_neighbours_both_ways():
    # a -> b: each point of a, its nearest in b warped into a; a3's match b2 lands outside a, so 4 count:
    #   a0 (b0 at 0 px) right, a1 (b0 at 1 px) right, a2 (b1 at 2 px) right, a4 (b3 far) wrong: 3/4.
    # b -> a: each point of b, its nearest in a warped into b; all 4 land inside b (b2's match a3 too):
    #   b0 (a1 at 1 px) right, b1 (a2 at 2 px) right, b2 (a3 far) wrong, b3 (a4 far) wrong: 2/4.
    assert constructed_pair_result().matching_score == pytest.approx((3 / 4 + 2 / 4) / 2)


def test_mutual_matching_score_of_the_same_pair_is_lower():
    # a -> b over the 5 points of a whose warp lands in b: a1-b0 (1 px) and a2-b1 (2 px) right: 2/5.
    # b -> a over the 3 points of b whose warp lands in a: the same two right: 2/3. a0 has no mutual match.
    result = constructed_pair_result()
    assert result.matching_score_mutual == pytest.approx((2 / 5 + 2 / 3) / 2)
    assert result.num_matches == 4


def test_published_matching_score_counts_3px_as_wrong_and_mutual_as_right():
    """KP2D counts a match correct when strictly closer than 3 px; the mutual score keeps <= 3 px."""
    points_a, points_b = np.array([[40.0, 50.0]]), np.array([[63.0, 50.0]])  # a0 warps to (60, 50): 3 px off
    one = np.array([[0, 0]])
    assert matching_score(points_a, points_b, one, one, SHIFT, (100, 100), (100, 100)) == 0.0
    assert mutual_matching_score(points_a, points_b, one, SHIFT, (100, 100), (100, 100)) == 1.0
    nearer = points_b - [0.5, 0.0]
    assert matching_score(points_a, nearer, one, one, SHIFT, (100, 100), (100, 100)) == 1.0


def test_published_matching_score_is_zero_without_points_in_one_image():
    no_matches = np.zeros((0, 2), dtype=np.int64)
    assert matching_score(POINTS_A, np.zeros((0, 2)), no_matches, no_matches, SHIFT, (100, 100), (100, 100)) == 0.0

"""Tests of usp_core.geometry.matching: mutual nearest neighbours, ratio test, robust homography estimation."""
import numpy as np
import pytest
import torch

from usp_core.geometry.matching import estimate_homography, mutual_nearest_neighbours


def _unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_permutation_is_recovered():
    generator = torch.Generator().manual_seed(0)
    desc_a = torch.nn.functional.normalize(torch.randn(40, 16, generator=generator), dim=1)
    permutation = torch.randperm(40, generator=generator)
    desc_b = torch.nn.functional.normalize(desc_a[permutation] + 0.01 * torch.randn(40, 16, generator=generator), dim=1)
    pairs = mutual_nearest_neighbours(desc_a, desc_b)
    assert pairs.dtype == torch.long and pairs.shape == (40, 2)
    assert torch.equal(pairs[:, 0], torch.arange(40))
    assert torch.equal(permutation[pairs[:, 1]], pairs[:, 0])


def test_non_mutual_pairs_are_rejected():
    desc_a = _unit([1.0, 0.0], [0.9, 0.436])
    desc_b = _unit([1.0, 0.0], [0.0, 1.0])
    # a0 and a1 both prefer b0, b0 prefers a0; b1 prefers a1 but a1 does not prefer b1
    assert mutual_nearest_neighbours(desc_a, desc_b).tolist() == [[0, 0]]


def test_ratio_test_rejects_ambiguous_matches():
    desc_a = _unit([1.0, 0.0], [0.0, 1.0])
    desc_b = _unit([1.0, 0.05], [0.0, 1.0], [1.0, -0.06])  # b0 and b2 are near-equal candidates for a0
    assert mutual_nearest_neighbours(desc_a, desc_b).tolist() == [[0, 0], [1, 1]]
    assert mutual_nearest_neighbours(desc_a, desc_b, ratio=0.8).tolist() == [[1, 1]]
    assert mutual_nearest_neighbours(desc_a, desc_b, ratio=0.99).tolist() == [[0, 0], [1, 1]]


def test_ratio_test_applies_in_both_directions():
    desc_a = _unit([1.0, 0.05], [0.0, 1.0], [1.0, -0.06])  # a0 and a2 are near-equal candidates for b0
    desc_b = _unit([1.0, 0.0], [0.0, 1.0])
    assert mutual_nearest_neighbours(desc_a, desc_b, ratio=0.8).tolist() == [[1, 1]]


def test_empty_and_single_candidate_inputs():
    assert mutual_nearest_neighbours(torch.zeros(0, 8), torch.rand(5, 8)).shape == (0, 2)
    assert mutual_nearest_neighbours(torch.rand(5, 8), torch.zeros(0, 8)).shape == (0, 2)
    pairs = mutual_nearest_neighbours(_unit([1.0, 0.0]), _unit([0.0, 1.0]), ratio=0.8)
    assert pairs.tolist() == [[0, 0]]


def test_half_precision_descriptors():
    desc = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    pairs = mutual_nearest_neighbours(desc.half(), desc.half())
    assert torch.equal(pairs, torch.stack((torch.arange(10), torch.arange(10)), 1))


TRUE_H = np.array([[0.9, 0.12, 15.0], [-0.08, 1.05, -7.0], [2e-4, -1e-4, 1.0]])


def _correspondences(count: int, outliers: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    points_a = rng.uniform(0, 320, (count + outliers, 2))
    projected = np.c_[points_a, np.ones(len(points_a))] @ TRUE_H.T
    points_b = projected[:, :2] / projected[:, 2:]
    points_b[count:] = rng.uniform(0, 320, (outliers, 2))
    return points_a, points_b


@pytest.mark.parametrize("method", ["ransac", "magsac"])
def test_known_homography_recovered_despite_outliers(method):
    points_a, points_b = _correspondences(60, 25)
    estimate = estimate_homography(points_a, points_b, method=method, threshold=2.0)
    assert estimate.valid and estimate.num_matches == 85
    assert estimate.homography.dtype == np.float64 and estimate.homography.shape == (3, 3)
    corners = np.array([[0.0, 0.0, 1.0], [319.0, 0.0, 1.0], [319.0, 239.0, 1.0], [0.0, 239.0, 1.0]])
    estimated, expected = corners @ estimate.homography.T, corners @ TRUE_H.T
    corner_error = np.linalg.norm(estimated[:, :2] / estimated[:, 2:] - expected[:, :2] / expected[:, 2:], axis=1)
    assert corner_error.max() < 0.01
    assert estimate.inlier_mask.dtype == bool and estimate.inlier_mask[:60].all()
    assert estimate.num_inliers == int(estimate.inlier_mask.sum()) and estimate.inlier_mask[60:].sum() <= 2


def test_too_few_matches_is_invalid_with_counts():
    points_a, points_b = _correspondences(3, 0)
    estimate = estimate_homography(points_a, points_b)
    assert not estimate.valid and estimate.homography is None
    assert estimate.num_matches == 3 and estimate.num_inliers == 0 and estimate.inlier_mask.shape == (3,)


def test_too_few_inliers_is_invalid_with_counts():
    points_a, points_b = _correspondences(6, 0)
    estimate = estimate_homography(points_a, points_b, min_inliers=8)
    assert not estimate.valid and estimate.homography is None
    assert estimate.num_matches == 6 and estimate.num_inliers == 6
    assert estimate_homography(points_a, points_b, min_inliers=6).valid


def test_bad_arguments_are_rejected():
    points_a, points_b = _correspondences(10, 0)
    with pytest.raises(ValueError):
        estimate_homography(points_a, points_b, method="lmeds")
    with pytest.raises(ValueError):
        estimate_homography(points_a, points_b[:5])

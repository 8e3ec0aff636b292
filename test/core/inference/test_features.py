"""usp_core.inference.features.Features: shape checks, finite rows, row selection and the pixel-centre resize."""
import numpy as np
import pytest

from usp_core.inference.features import Features


def features(count: int = 4, dim: int = 3, size=(200, 150)) -> Features:
    rng = np.random.default_rng(0)
    return Features(rng.uniform(0, 100, (count, 2)), rng.random(count), rng.standard_normal((count, dim)), size)


def test_arrays_are_float32_and_the_size_a_pair_of_ints():
    found = Features(np.zeros((2, 2), np.float64), [0.5, 0.25], np.zeros((2, 5), np.float32), (np.int64(8), 6.0))
    assert found.keypoints.dtype == found.scores.dtype == np.float32 and found.descriptors.dtype == np.float32
    assert found.image_size == (8, 6) and all(type(side) is int for side in found.image_size) and len(found) == 2
    binary = Features(np.zeros((2, 2)), np.zeros(2), np.zeros((2, 32), np.uint8), (8, 6))
    assert binary.descriptors.dtype == np.uint8, "packed bits keep their dtype"
    float32 = np.zeros((2, 2), np.float32)
    assert Features(float32, np.zeros(2), np.zeros((2, 1)), (8, 6)).keypoints is float32, "no copy when float32"
    empty = Features(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 7)), (8, 6))
    assert len(empty) == 0 and empty.descriptors.shape == (0, 7)


@pytest.mark.parametrize("keypoints,scores,descriptors", [
    (np.zeros((3, 2)), np.zeros(2), np.zeros((3, 4))),
    (np.zeros((3, 3)), np.zeros(3), np.zeros((3, 4))),
    (np.zeros((3, 2)), np.zeros(3), np.zeros((2, 4))),
    (np.zeros((3, 2)), np.zeros(3), np.zeros(3)),
    (np.zeros((3, 2)), np.zeros((3, 1)), np.zeros((3, 4))),
])
def test_disagreeing_shapes_are_refused_with_the_shapes(keypoints, scores, descriptors):
    with pytest.raises(ValueError, match=r"keypoints \(3, .\).*descriptors"):
        Features(keypoints, scores, descriptors, (10, 10))


def test_finite_rows_check_keypoints_descriptors_and_optionally_scores():
    keypoints, scores, descriptors = np.zeros((4, 2)), np.ones(4), np.zeros((4, 3))
    keypoints[1, 0], scores[2], descriptors[3, 2] = np.nan, np.inf, -np.inf
    found = Features(keypoints, scores, descriptors, (10, 10))
    np.testing.assert_array_equal(found.finite_rows(), [True, False, False, False])
    np.testing.assert_array_equal(found.finite_rows(scores=False), [True, False, True, False])
    binary = Features(np.zeros((2, 2)), np.zeros(2), np.full((2, 4), 255, np.uint8), (10, 10))
    assert binary.finite_rows().all()


def test_take_selects_rows_by_index_or_mask_and_keeps_the_size():
    found = features(5)
    picked = found.take(np.array([3, 0]))
    np.testing.assert_array_equal(picked.keypoints, found.keypoints[[3, 0]])
    np.testing.assert_array_equal(picked.scores, found.scores[[3, 0]])
    np.testing.assert_array_equal(picked.descriptors, found.descriptors[[3, 0]])
    assert picked.image_size == found.image_size
    masked = found.take(np.array([True, False, True, False, False]))
    np.testing.assert_array_equal(masked.keypoints, found.keypoints[[0, 2]])
    assert len(found.take(np.zeros(0, np.int64))) == 0


def test_resized_follows_the_pixel_centre_convention():
    corners = np.array([[-0.5, -0.5], [0.0, 0.0], [199.5, 149.5]], np.float32)  # image edges and the first centre
    small = Features(corners, np.ones(3), np.zeros((3, 2)), (200, 150))
    large = small.resized((800, 600))
    np.testing.assert_allclose(large.keypoints, [[-0.5, -0.5], [1.5, 1.5], [799.5, 599.5]])
    assert large.image_size == (800, 600) and large.keypoints.dtype == np.float32
    assert large.scores is small.scores and large.descriptors is small.descriptors
    assert small.resized((200, 150)) is small


def test_resized_round_trips_and_scales_each_axis_on_its_own():
    found = features(20)
    there = found.resized((333, 77))
    np.testing.assert_allclose(there.resized(found.image_size).keypoints, found.keypoints, atol=1e-4)
    np.testing.assert_allclose((there.keypoints[:, 0] + 0.5) / 333, (found.keypoints[:, 0] + 0.5) / 200, rtol=1e-5)
    np.testing.assert_allclose((there.keypoints[:, 1] + 0.5) / 77, (found.keypoints[:, 1] + 0.5) / 150, rtol=1e-5)

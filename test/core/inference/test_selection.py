"""Tests of usp_core.inference.selection: border, threshold, top-k and greedy radius NMS on dense maps."""
import numpy as np
import pytest
import torch

from usp_core.inference.detector import MAX_NMS_RADIUS, DetectorConfig, KeypointDetector
from usp_core.inference.selection import radius_nms, select_points
from usp_core.models.layers import ModelConfig
from usp_core.models.unsuperpoint import UnsuperPoint

CELL = 8


def _maps(points: dict[tuple[int, int], tuple[float, float, float]], rows: int, cols: int):
    """Dense maps with the given cells' (x, y, score); other cells hold their centre at score 0.01."""
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    position = (np.stack([xs, ys]) + 0.5) * CELL
    score = np.full((rows, cols), 0.01, np.float32)
    for (row, col), (x, y, value) in points.items():
        position[:, row, col] = (x, y)
        score[row, col] = value
    descriptors = np.arange(rows * cols, dtype=np.float32).reshape(1, rows, cols)  # the cell's index
    return score, position, descriptors


def _select(score, position, descriptors, nms_radius=0, max_keypoints=None, border=0, score_threshold=0.0):
    rows, cols = score.shape
    return select_points(score, position, descriptors, (rows * CELL, cols * CELL), cell=CELL, border=border,
                         score_threshold=score_threshold, nms_radius=nms_radius, max_keypoints=max_keypoints)


def test_greedy_nms_on_a_constructed_chain():
    # A chain along one row: a (0.9) at x=15, b (0.8) at x=19 (4 px from a), c (0.7) at x=24 (5 px from b,
    # 9 px from a), d (0.6) at x=40. Greedy NMS with radius 5 keeps a, drops b (a is within 5 px), keeps c
    # (b was dropped, a is 9 px away) and keeps d; NMS by "any higher point near" would also drop c.
    points = {(1, 1): (15.0, 12.0, 0.9), (1, 2): (19.0, 12.0, 0.8), (1, 3): (24.0, 12.0, 0.7),
              (1, 5): (40.0, 12.0, 0.6)}
    score, position, descriptors = _maps(points, 3, 7)
    selected = _select(score, position, descriptors, nms_radius=5, score_threshold=0.5)
    assert selected.keypoints.tolist() == [[15.0, 12.0], [24.0, 12.0], [40.0, 12.0]]
    assert selected.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert selected.descriptors[:, 0].tolist() == [8.0, 10.0, 12.0]  # cells (1,1), (1,3), (1,5)
    without = _select(score, position, descriptors, nms_radius=0, score_threshold=0.5)
    assert without.keypoints.tolist() == [[15.0, 12.0], [19.0, 12.0], [24.0, 12.0], [40.0, 12.0]]


def test_nms_distance_is_inclusive_and_works_across_rows():
    points = {(0, 0): (7.0, 7.0, 0.9), (1, 1): (10.0, 11.0, 0.8), (2, 2): (20.0, 20.0, 0.7)}
    score, position, descriptors = _maps(points, 3, 3)
    at_five = _select(score, position, descriptors, nms_radius=5, score_threshold=0.5)  # (7,7)-(10,11) is 5 px
    assert at_five.keypoints.tolist() == [[7.0, 7.0], [20.0, 20.0]]
    at_four = _select(score, position, descriptors, nms_radius=4, score_threshold=0.5)
    assert len(at_four.keypoints) == 3


def test_nms_reaches_points_far_from_their_cells():
    # A model whose points may leave their cell: the neighbour search widens accordingly.
    points = {(0, 0): (30.0, 4.0, 0.9), (0, 4): (33.0, 4.0, 0.8)}
    score, position, descriptors = _maps(points, 1, 5)
    selected = _select(score, position, descriptors, nms_radius=3, score_threshold=0.5)
    assert selected.keypoints.tolist() == [[30.0, 4.0]]


def _greedy_reference(score, position, candidate, radius):
    """Sequential greedy NMS: best score first (ties: lower index), keep when no kept point within radius."""
    flat_score, points = score.reshape(-1), position.reshape(2, -1).T
    kept = []
    for index in np.argsort(-flat_score, kind="stable"):
        if candidate.reshape(-1)[index] and all(np.hypot(*(points[index] - points[k])) > radius for k in kept):
            kept.append(index)
    mask = np.zeros(score.size, bool)
    mask[kept] = True
    return mask.reshape(score.shape)


@pytest.mark.parametrize("radius", [3, 6, 11, 20])
def test_nms_equals_sequential_greedy_on_random_maps(radius):
    rng = np.random.default_rng(radius)
    rows, cols = 9, 12
    ys, xs = np.mgrid[0:rows, 0:cols]
    position = (np.stack([xs, ys]) + rng.random((2, rows, cols))) * CELL
    score = rng.random((rows, cols)).round(2)  # rounded: ties happen
    candidate = rng.random((rows, cols)) < 0.8
    expected = _greedy_reference(score, position, candidate, radius)
    assert np.array_equal(radius_nms(score, position, candidate, radius, CELL), expected)


def test_top_k_keeps_best_scores_in_order_and_border_counts_from_valid_size():
    points = {(0, 0): (2.0, 2.0, 0.99), (3, 3): (29.0, 27.0, 0.95), (1, 1): (12.0, 12.0, 0.5),
              (1, 2): (20.0, 12.0, 0.7), (2, 1): (12.0, 20.0, 0.6)}
    score, position, descriptors = _maps(points, 4, 4)  # 32x32 px: border 4 keeps x, y in [4, 27]
    selected = _select(score, position, descriptors, max_keypoints=2, border=4)
    assert selected.keypoints.tolist() == [[20.0, 12.0], [12.0, 20.0]]
    assert selected.keypoints.dtype == np.float32 and selected.descriptors.shape == (2, 1)


def test_equal_scores_at_the_top_k_cut_come_in_cell_order():
    # 30 cells tie at 0.5 below two better ones; top-12 keeps the two, then the first 10 tied cells by index.
    rng = np.random.default_rng(0)
    rows, cols = 5, 8
    tied = np.sort(rng.choice(rows * cols, 30, replace=False))
    points = {(int(i) // cols, int(i) % cols): ((i % cols + 0.5) * CELL, (i // cols + 0.5) * CELL, 0.5) for i in tied}
    points.update({(4, 7): (60.0, 36.0, 0.9), (0, 0): (4.0, 4.0, 0.8)})
    score, position, descriptors = _maps(points, rows, cols)
    selected = _select(score, position, descriptors, max_keypoints=12)
    expected = [39, 0] + [int(i) for i in tied if i not in (0, 39)][:10]
    assert selected.descriptors[:, 0].astype(int).tolist() == expected
    assert selected.scores.tolist() == pytest.approx([0.9, 0.8] + [0.5] * 10)


def test_nms_radius_is_capped_where_its_cost_is_bounded():
    assert DetectorConfig(nms_radius=MAX_NMS_RADIUS).nms_radius == MAX_NMS_RADIUS
    with pytest.raises(ValueError, match=rf"nms_radius must be in \[0, {MAX_NMS_RADIUS}\], got {MAX_NMS_RADIUS + 1}"):
        DetectorConfig(nms_radius=MAX_NMS_RADIUS + 1)


def test_detector_nms_leaves_no_two_points_within_the_radius():
    torch.manual_seed(0)
    model = UnsuperPoint(ModelConfig(widths=(4, 4, 8, 8, 8, 8, 16, 16), descriptor_dim=8))
    rng = np.random.default_rng(0)
    image = (rng.random((96, 128)) * 255).astype(np.uint8)
    plain = KeypointDetector(model, DetectorConfig(max_keypoints=None), backend="torch").detect(image)[0]
    config = DetectorConfig(max_keypoints=None, nms_radius=10)
    thinned = KeypointDetector(model, config, backend="torch").detect(image)[0]
    gaps = np.linalg.norm(thinned.keypoints[:, None] - thinned.keypoints[None], axis=2) + np.eye(len(thinned)) * 1e9
    assert gaps.min() > 10 and 0 < len(thinned) < len(plain)
    np.testing.assert_array_equal(thinned.keypoints[0], plain.keypoints[0])  # the best point always survives
    with pytest.raises(ValueError, match="nms_radius"):
        DetectorConfig(nms_radius=-1)

"""SuperPoint/MagicPoint: the 65-channel decoding, cell labels, the losses against hand-computed values, loading."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from usp_core.inference.weights import model_from_checkpoint
from usp_core.models.build import build_model
from usp_core.models.layers import ModelConfig
from usp_core.models.superpoint import (DUSTBIN, SuperPoint, cell_candidates, cell_labels, heatmap_from_logits,
                                        heatmap_nms, heatmap_points)
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_core.support.checkpoint import load_checkpoint, save_checkpoint
from usp_core.training.superpoint_losses import SuperPointLossConfig, descriptor_hinge_loss, point_loss, superpoint_loss

TINY = ModelConfig(architecture="superpoint", widths=(4, 4, 8, 8, 8, 8, 16, 16), descriptor_dim=8)


def _logits_with_points(cells: dict[tuple[int, int], int], rows: int = 2, cols: int = 3) -> torch.Tensor:
    """(1, 65, rows, cols) logits: the dustbin wins everywhere except at ``cells`` {(row, col): pixel index}."""
    logits = torch.zeros(1, DUSTBIN + 1, rows, cols)
    logits[0, DUSTBIN] = 10.0
    for (row, col), index in cells.items():
        logits[0, index, row, col] = 20.0
    return logits


def test_known_logits_give_known_points():
    # cell (0, 1): pixel index 8*2 + 5 -> (x, y) = (8 + 5, 2); cell (1, 2): index 63 -> (16 + 7, 8 + 7)
    heatmap = heatmap_from_logits(_logits_with_points({(0, 1): 21, (1, 2): 63}))
    assert heatmap.shape == (1, 1, 16, 24)
    peak = math.exp(20) / (math.exp(20) + math.exp(10) + 63)
    assert heatmap[0, 0, 2, 13].item() == pytest.approx(peak) and heatmap[0, 0, 15, 23].item() == pytest.approx(peak)
    points, scores = heatmap_points(heatmap[0, 0], border=0)
    assert points.tolist() == [[13.0, 2.0], [23.0, 15.0]] and scores == pytest.approx([peak, peak])
    score, position = cell_candidates(heatmap)
    assert position[0, :, 0, 1].tolist() == [13.0, 2.0] and position[0, :, 1, 2].tolist() == [23.0, 15.0]
    assert score[0, 0, 0, 1].item() == pytest.approx(peak) and score[0, 0, 0, 0].item() < 1e-3


def test_cell_candidates_place_a_gaussian_peak_at_its_sub_pixel_centre():
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(24.0), indexing="ij")
    centre = (13.3, 5.6)
    heatmap = (0.9 * torch.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / 2.0))[None, None]
    score, position = cell_candidates(heatmap, heatmap_nms(heatmap))
    assert position[0, :, 0, 1].tolist() == pytest.approx(list(centre), abs=1e-3)  # log of a Gaussian: a parabola
    assert score[0, 0, 0, 1].item() == pytest.approx(heatmap[0, 0, 6, 13].item())  # the value of the peak pixel


def test_nms_keeps_the_better_of_two_close_points_and_both_far_apart():
    heatmap = torch.zeros(1, 1, 24, 24)
    heatmap[0, 0, 10, 10], heatmap[0, 0, 12, 13] = 0.9, 0.5  # 3.6 px apart: inside the 9x9 window
    heatmap[0, 0, 10, 20] = 0.4  # 10 px away: kept
    kept = heatmap_nms(heatmap, radius=4)[0, 0]
    assert kept[10, 10] == 0.9 and kept[12, 13] == 0 and kept[10, 20] == 0.4
    points, scores = heatmap_points(heatmap[0, 0], radius=4, threshold=0.45, border=0)
    assert points.tolist() == [[10.0, 10.0], [13.0, 12.0]][:1] and scores.tolist() == pytest.approx([0.9])
    points, _ = heatmap_points(heatmap[0, 0], radius=4, threshold=0.1, border=5)
    assert points.tolist() == [[10.0, 10.0]]  # (20, 10) is 3 px from the right edge


def test_forward_gives_one_candidate_per_cell_at_the_suppressed_maximum():
    model = SuperPoint(TINY).eval()
    images = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        dense = model(images)
        heatmap = heatmap_nms(model.heatmap(images))
    assert dense.score.shape == (2, 1, 4, 5) and dense.position.shape == (2, 2, 4, 5)
    assert dense.descriptors.shape == (2, 8, 4, 5)
    assert torch.allclose(dense.descriptors.norm(dim=1), torch.ones(2, 4, 5), atol=1e-5)
    best, index = F.pixel_unshuffle(heatmap, 8).max(dim=1)  # each cell's best pixel left by NMS
    cells = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij"))
    pixel_x, pixel_y = cells[1] * 8 + index % 8, cells[0] * 8 + index // 8
    assert torch.equal(best, dense.score[:, 0])
    assert ((dense.position[:, 0] - pixel_x).abs() <= 0.5).all()
    assert ((dense.position[:, 1] - pixel_y).abs() <= 0.5).all()


def test_cell_labels_index_the_pixel_within_its_cell():
    points = torch.tensor([[3.0, 5.0], [10.2, 0.8], [100.0, 50.0], [-1.0, 3.0], [200.0, 3.0]])
    labels = cell_labels(points, (64, 128))
    assert labels.shape == (8, 16) and labels.dtype == torch.int64
    assert labels[0, 0] == 5 * 8 + 3 and labels[0, 1] == 1 * 8 + 2 and labels[6, 12] == 2 * 8 + 4
    assert (labels != DUSTBIN).sum() == 3  # the two points outside the image are dropped


def test_a_cell_with_two_points_takes_one_of_them():
    points = torch.tensor([[1.0, 1.0], [6.0, 6.0]])
    seen = {int(cell_labels(points, (8, 8), torch.Generator().manual_seed(seed))[0, 0]) for seed in range(20)}
    assert seen == {9, 54}


def test_point_loss_is_the_mean_cross_entropy_over_valid_cells():
    logits = torch.zeros(1, DUSTBIN + 1, 1, 2)
    logits[0, 3, 0, 0] = 2.0
    labels = torch.tensor([[[3, DUSTBIN]]])
    first = -math.log(math.exp(2) / (math.exp(2) + 64))
    second = math.log(65)  # all 65 logits equal
    assert point_loss(logits, labels).item() == pytest.approx((first + second) / 2, rel=1e-6)
    assert point_loss(logits, labels, torch.tensor([[[True, False]]])).item() == pytest.approx(first, rel=1e-6)


def test_descriptor_hinge_loss_matches_a_hand_computation():
    """Two cells side by side, identity warp: pairs (0,0), (1,1) positive, (0,1), (1,0) negative."""
    desc_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # cell 0 -> (1, 0), cell 1 -> (0, 1)
    desc_b = torch.tensor([[0.6, 0.8], [0.6, 0.8]]).T.reshape(1, 2, 1, 2)
    config = SuperPointLossConfig(lambda_d=250.0, m_p=1.0, m_n=0.2, positive_radius=4.0)
    # dots: a0.b0 0.6 (pos: 250 * 0.4), a0.b1 0.6 (neg: 0.4), a1.b0 0.8 (neg: 0.6), a1.b1 0.8 (pos: 250 * 0.2)
    expected = (250 * 0.4 + 0.4 + 0.6 + 250 * 0.2) / 4
    loss = descriptor_hinge_loss(desc_a, desc_b, torch.eye(3)[None], None, config)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    only_b0 = descriptor_hinge_loss(desc_a, desc_b, torch.eye(3)[None], torch.tensor([[[True, False]]]), config)
    assert only_b0.item() == pytest.approx((250 * 0.4 + 0.6) / 2, rel=1e-5)
    shifted = torch.tensor([[[1.0, 0.0, 8.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # a0 lands on b1; a1 off the map
    # positives: (a0, b1) only: 250 * 0.4; negatives a0.b0 0.4, a1.b0 0.6, a1.b1 0.6
    assert descriptor_hinge_loss(desc_a, desc_b, shifted, None, config).item() == pytest.approx(
        (250 * 0.4 + 0.4 + 0.6 + 0.6) / 4, rel=1e-5)


def test_superpoint_loss_sums_both_point_losses_and_the_weighted_descriptor_loss():
    torch.manual_seed(0)
    logits_a, logits_b = torch.randn(2, 1, DUSTBIN + 1, 2, 3)
    desc_a, desc_b = torch.randn(2, 1, 4, 2, 3)
    labels_a, labels_b = torch.randint(0, DUSTBIN + 1, (2, 1, 2, 3))
    valid = torch.rand(1, 2, 3) > 0.3
    config = SuperPointLossConfig(lambda_descriptor=0.5)
    identity = torch.eye(3)[None]
    terms = superpoint_loss(logits_a, logits_b, desc_a, desc_b, labels_a, labels_b, valid, identity, config)
    points = point_loss(logits_a, labels_a) + point_loss(logits_b, labels_b, valid)
    descriptor = descriptor_hinge_loss(desc_a, desc_b, identity, valid, config)
    assert terms["total"].item() == pytest.approx((points + 0.5 * descriptor).item(), rel=1e-6)


def test_a_checkpoint_knows_its_architecture(tmp_path):
    superpoint, unsuperpoint = build_model(TINY), build_model(dataclasses.replace(TINY, architecture="unsuperpoint"))
    assert isinstance(superpoint, SuperPoint) and isinstance(unsuperpoint, UnsuperPoint)
    path = save_checkpoint(tmp_path / "sp.pt", {"model": superpoint.state_dict(),
                                                 "config": {"model": dataclasses.asdict(TINY)}})
    loaded = model_from_checkpoint(load_checkpoint(path), path)
    assert isinstance(loaded, SuperPoint)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), superpoint.state_dict().values()))
    with pytest.raises(ValueError, match="architecture must be one of"):
        ModelConfig(architecture="sift")


def test_heatmap_points_on_numpy_and_tensor_agree():
    heatmap = np.zeros((20, 20), np.float32)
    heatmap[7, 9] = 0.3
    assert heatmap_points(heatmap)[0].tolist() == heatmap_points(torch.from_numpy(heatmap))[0].tolist() == [[9.0, 7.0]]

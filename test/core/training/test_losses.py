"""Tests of usp_core.training.losses against hand-computed values on small constructed cases."""
import math

import numpy as np
import pytest
import torch

from usp_core.geometry.homography import HomographyConfig, sample_homography, warp_image
from usp_core.models.layers import DenseOutput, ModelConfig
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_core.training.losses import (DistillConfig, LossConfig, distillation_loss, decorrelation_loss, descriptor_loss,
                                      point_correspondences, triplet_descriptor_loss, uniform_xy_loss,
                                      unsuperpoint_loss, usp_loss)

SIZE = (32, 32)
SHIFT = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # A -> B: x + 2

# A points and where T sends them: a0 (7, 5); a1 (12, 10); a2 (32, 5) outside B; a3 (22, 20); a4 (14, 11); a5 (2, 1).
POINTS_A = torch.tensor([[[5.0, 5.0], [10.0, 10.0], [30.0, 5.0], [20.0, 20.0], [12.0, 11.0], [0.0, 1.0]]])
# b0 1 px from T a0; b1 2 px from T a1 and 2.24 px from T a4; b2 nearest to T a4 but a4 prefers b1 (not mutual);
# b3 6 px from T a3 (beyond 4 px); b4 (1, 1) maps back outside A; b5 1 px from T a2, which is outside B.
POINTS_B = torch.tensor([[[7.0, 6.0], [12.0, 12.0], [12.0, 13.0], [22.0, 26.0], [1.0, 1.0], [31.0, 5.0]]])


def _matches():
    return point_correspondences(POINTS_A, POINTS_B, SHIFT, SIZE, radius=4.0)


def test_correspondences_are_mutual_nearest_within_radius_and_inside():
    matches = _matches()
    assert matches.matched[0].tolist() == [True, True, False, False, False, False]
    assert matches.nearest[0, :2].tolist() == [0, 1]
    assert torch.allclose(matches.pair_distance[0, :2], torch.tensor([1.0, 2.0]))
    assert matches.valid[0, 2].any().item() is False  # a2 leaves image B
    assert matches.valid[0, :, 4].any().item() is False  # b4 comes from outside image A
    assert matches.distance.shape == (1, 6, 6)
    assert math.isclose(matches.distance[0, 3, 3].item(), 6.0, rel_tol=1e-6)


def test_correspondence_radius_is_inclusive_and_configurable():
    assert point_correspondences(POINTS_A, POINTS_B, SHIFT, SIZE, radius=2.0).matched[0, :2].tolist() == [True, True]
    assert point_correspondences(POINTS_A, POINTS_B, SHIFT, SIZE, radius=1.5).matched[0, :2].tolist() == [True, False]


def test_usp_loss_hand_computed():
    score_a = torch.tensor([[0.8, 0.4, 0.9, 0.9, 0.9, 0.9]])
    score_b = torch.tensor([[0.6, 0.2, 0.1, 0.1, 0.1, 0.1]])
    terms = usp_loss(score_a, score_b, _matches(), a_pos=1.0, a_score=2.0)
    # pairs (a0, b0) d = 1 and (a1, b1) d = 2, mean d = 1.5
    assert math.isclose(terms["position"].item(), 3.0, rel_tol=1e-6)
    assert math.isclose(terms["score"].item(), 0.2 ** 2 + 0.2 ** 2, rel_tol=1e-5)
    assert math.isclose(terms["repeatability"].item(), 0.7 * (1 - 1.5) + 0.3 * (2 - 1.5), rel_tol=1e-5)
    assert math.isclose(terms["usp"].item(), 3.0 + 2 * 0.08 - 0.2, rel_tol=1e-5)
    assert terms["matched"].item() == 2 and math.isclose(terms["matched_distance"].item(), 1.5, rel_tol=1e-6)


def test_usp_loss_is_zero_without_matches_and_averages_the_batch():
    far = torch.tensor([[[30.0, 30.0], [30.0, 31.0], [31.0, 30.0], [31.0, 31.0], [29.0, 30.0], [30.0, 29.0]]])
    points_b = torch.cat((POINTS_B, far))
    matches = point_correspondences(POINTS_A.expand(2, -1, -1), points_b, SHIFT.expand(2, -1, -1), SIZE)
    assert not matches.matched[1].any()
    score = torch.full((2, 6), 0.5)
    terms = usp_loss(score, score, matches)
    assert math.isclose(terms["position"].item(), 3.0 / 2, rel_tol=1e-6)


def test_uniform_loss_hand_computed_on_sorted_values():
    offsets = torch.tensor([[[[0.9, 0.1, 0.5]], [[0.0, 0.0, 0.0]]]])  # (1, 2, 1, 3)
    # x sorted (0.1, 0.5, 0.9) vs (0, 0.5, 1): 0.02; y (0, 0, 0) vs (0, 0.5, 1): 1.25
    assert math.isclose(uniform_xy_loss(offsets).item(), 1.27, rel_tol=1e-5)


def test_uniform_loss_uses_sorted_values_not_indices():
    length = 64
    generator = torch.Generator().manual_seed(0)
    shuffled = torch.linspace(0, 1, length)[torch.randperm(length, generator=generator)]
    offsets = torch.stack((shuffled, shuffled.flip(0))).view(1, 2, 8, 8)
    assert uniform_xy_loss(offsets).item() < 1e-10


def test_uniform_loss_small_on_uniform_large_on_clustered():
    generator = torch.Generator().manual_seed(1)
    uniform = torch.rand(4, 2, 30, 40, generator=generator)
    clustered = 0.5 + 0.02 * torch.randn(4, 2, 30, 40, generator=generator)
    length = 30 * 40
    assert uniform_xy_loss(uniform).item() < 1.0  # expected about 2 x 1/6
    assert uniform_xy_loss(clustered).item() > 100.0
    # all at 0.5: sum_i (0.5 - i / (L - 1))^2 = L (L + 1) / (12 (L - 1)) per coordinate
    exact = 2 * length * (length + 1) / (12 * (length - 1))
    assert uniform_xy_loss(torch.full((1, 2, 30, 40), 0.5)).item() == pytest.approx(exact, rel=1e-4)


def test_descriptor_loss_hand_computed():
    points_a = torch.tensor([[[5.0, 5.0], [20.0, 20.0]]])
    points_b = torch.tensor([[[6.0, 5.0], [25.0, 20.0]]])
    matches = point_correspondences(points_a, points_b, torch.eye(3)[None], SIZE)
    desc_a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    desc_b = torch.tensor([[[0.6, 0.8], [0.8, 0.6]]])
    # positive (g <= 8): (a0, b0) g = 1 and (a1, b1) g = 5 -> 250 * (1 - 0.6) each; negatives: 0.8 - 0.2 each
    loss = descriptor_loss(desc_a, desc_b, matches, lambda_d=250.0, m_p=1.0, m_n=0.2, descriptor_radius=8.0)
    assert math.isclose(loss.item(), 2 * 100.0 + 2 * 0.6, rel_tol=1e-5)


@pytest.mark.parametrize("loss", [descriptor_loss, triplet_descriptor_loss])
def test_descriptor_losses_ignore_points_leaving_the_image(loss):
    matches = _matches()
    generator = torch.Generator().manual_seed(2)
    desc_a = torch.nn.functional.normalize(torch.randn(1, 6, 4, generator=generator), dim=-1)
    desc_b = torch.nn.functional.normalize(torch.randn(1, 6, 4, generator=generator), dim=-1)
    base = loss(desc_a, desc_b, matches)
    changed_a, changed_b = desc_a.clone(), desc_b.clone()
    changed_a[0, 2] = -changed_a[0, 2]  # a2 is outside B
    changed_b[0, 4] = -changed_b[0, 4]  # b4 is outside A
    assert torch.allclose(loss(changed_a, changed_b, matches), base)
    changed_a[0, 0] = -changed_a[0, 0]
    assert not torch.allclose(loss(changed_a, desc_b, matches), base)


def _unit_distance(u, v) -> float:
    """L2 distance between two unit vectors given as tuples."""
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))


def test_triplet_loss_hand_computed():
    # a0 (5, 5) with b0 1 px away; a1 (20, 20) with b1 2 px away; b2 (5, 12) 7 px from a0: a negative only.
    points_a = torch.tensor([[[5.0, 5.0], [20.0, 20.0]]])
    points_b = torch.tensor([[[6.0, 5.0], [20.0, 22.0], [5.0, 12.0]]])
    matches = point_correspondences(points_a, points_b, torch.eye(3)[None], SIZE)
    fa = [(1.0, 0.0), (0.0, 1.0)]
    fb = [(0.6, 0.8), (0.8, 0.6), (0.96, -0.28)]
    loss = triplet_descriptor_loss(torch.tensor([fa]), torch.tensor([fb]), matches, margin=0.2,
                                   descriptor_radius=4.0)
    hinge = lambda anchor, positive, negatives: max(  # noqa: E731
        0.0, 0.2 + _unit_distance(anchor, positive) - min(_unit_distance(anchor, n) for n in negatives))
    expected = (hinge(fa[0], fb[0], [fb[1], fb[2]]) + hinge(fa[1], fb[1], [fb[0], fb[2]])  # A -> B
                + hinge(fb[0], fa[0], [fa[1]]) + hinge(fb[1], fa[1], [fa[0]]))  # B -> A; b2 has no positive
    assert expected > 0.5
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


def test_triplet_loss_zero_when_negatives_are_a_margin_farther():
    points = torch.tensor([[[5.0, 5.0], [20.0, 20.0]]])
    matches = point_correspondences(points, points, torch.eye(3)[None], SIZE)
    desc = torch.eye(2)[None]  # positives identical (distance 0), negatives sqrt(2) apart
    assert triplet_descriptor_loss(desc, desc, matches, margin=1.0).item() == 0.0
    assert triplet_descriptor_loss(desc, desc, matches, margin=2.0).item() > 0.0


def test_loss_config_switches_the_descriptor_term():
    model, images_a, images_b, homography = _siamese_batch(1)
    out_a, out_b = model(images_a), model(images_b)
    hinge = unsuperpoint_loss(out_a, out_b, homography, (32, 48), LossConfig())["desc"]
    triplet = unsuperpoint_loss(out_a, out_b, homography, (32, 48), LossConfig(descriptor_loss="triplet"))["desc"]
    matches = point_correspondences(out_a.position.flatten(2).transpose(1, 2),
                                    out_b.position.flatten(2).transpose(1, 2), homography, (32, 48))
    direct = triplet_descriptor_loss(out_a.descriptors.flatten(2).transpose(1, 2),
                                     out_b.descriptors.flatten(2).transpose(1, 2), matches, 0.2, 8.0)
    assert torch.allclose(triplet, direct) and not torch.allclose(hinge, triplet)
    with pytest.raises(ValueError):
        LossConfig(descriptor_loss="contrastive")


def test_decorrelation_loss_hand_computed():
    descriptors = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [3.0, 1.0], [4.0, 0.0]]])  # (1, L=4, D=2)
    # centred (-1.5, -0.5, 0.5, 1.5) and (0.5, -0.5, 0.5, -0.5): r = -1 / sqrt(5), two off-diagonal entries
    assert math.isclose(decorrelation_loss(descriptors).item(), 2 * 0.2, rel_tol=1e-5)
    reference = np.corrcoef(descriptors[0].numpy().T)[0, 1]
    assert math.isclose(decorrelation_loss(descriptors).item(), 2 * reference ** 2, rel_tol=1e-5)


def test_decorrelation_loss_zero_for_uncorrelated_and_handles_constant_dims():
    orthogonal = torch.tensor([[[1.0, 1.0, 5.0], [1.0, -1.0, 5.0], [-1.0, 1.0, 5.0], [-1.0, -1.0, 5.0]]])
    value = decorrelation_loss(orthogonal)
    assert torch.isfinite(value) and value.item() < 1e-10


SMALL = ModelConfig(widths=(4, 4, 8, 8, 8, 8, 16, 16), descriptor_dim=8)


def _siamese_batch(seed: int = 0):
    torch.manual_seed(seed)
    model = UnsuperPoint(SMALL)
    images = torch.rand(2, 1, 32, 48)
    config = HomographyConfig(max_rotation_deg=5.0, scale_range=(0.95, 1.05), max_translation=0.05)
    generator = torch.Generator().manual_seed(seed)
    homography = torch.stack([sample_homography(32, 48, config, generator) for _ in range(2)])
    return model, images, warp_image(images, homography), homography


def test_unsuperpoint_loss_combines_weighted_terms():
    model, images_a, images_b, homography = _siamese_batch()
    config = LossConfig(a_usp=0.5, a_uni_xy=3.0, a_desc=0.01, a_decorr=0.2)
    terms = unsuperpoint_loss(model(images_a), model(images_b), homography, (32, 48), config)
    assert set(terms) == {"total", "usp", "position", "score", "repeatability", "uni_xy", "desc", "decorr",
                          "matched", "matched_distance"}
    assert all(value.dim() == 0 and torch.isfinite(value) for value in terms.values())
    expected = 0.5 * terms["usp"] + 3.0 * terms["uni_xy"] + 0.01 * terms["desc"] + 0.2 * terms["decorr"]
    assert torch.allclose(terms["total"], expected)
    assert torch.allclose(terms["usp"], terms["position"] + 2.0 * terms["score"] + terms["repeatability"])


def test_unsuperpoint_loss_recovers_offsets_for_uniform_term():
    offsets = torch.rand(1, 2, 4, 6)
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(6.0), indexing="ij")
    position = (torch.stack((cols, rows))[None] + offsets) * 8
    output = DenseOutput(torch.rand(1, 1, 4, 6), position, torch.nn.functional.normalize(torch.randn(1, 8, 4, 6), dim=1))
    terms = unsuperpoint_loss(output, output, torch.eye(3)[None], (32, 48))
    assert torch.allclose(terms["uni_xy"], 2 * uniform_xy_loss(offsets), atol=1e-5)


def test_gradients_reach_every_head_and_the_backbone():
    model, images_a, images_b, homography = _siamese_batch()
    terms = unsuperpoint_loss(model(images_a), model(images_b), homography, (32, 48))
    terms["total"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for name in ("position", "score", "repeatability", "uni_xy", "desc", "decorr"):
        model.zero_grad()
        out_a, out_b = model(images_a), model(images_b)
        unsuperpoint_loss(out_a, out_b, homography, (32, 48))[name].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters()), name


def test_score_head_learns_from_usp_and_descriptor_head_from_desc():
    model, images_a, images_b, homography = _siamese_batch(1)
    for term, head in (("score", model.score_head), ("desc", model.descriptor_head),
                       ("position", model.position_head)):
        model.zero_grad()
        unsuperpoint_loss(model(images_a), model(images_b), homography, (32, 48))[term].backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters()), term


def test_loss_runs_under_autocast_without_nans():
    model, images_a, images_b, homography = _siamese_batch(2)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out_a, out_b = model(images_a), model(images_b)
        terms = unsuperpoint_loss(out_a, out_b, homography, (32, 48))
    assert all(torch.isfinite(value) and value.dtype == torch.float32 for value in terms.values())
    terms["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_distillation_loss_hand_computed():
    position = torch.tensor([[[[4.0, 12.0]], [[3.0, 3.0]]]])  # (1, 2, 1, 2): two cells
    teacher = DenseOutput(torch.tensor([[[[0.5, 0.9]]]]), position,
                          torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]]))
    student = DenseOutput(torch.tensor([[[[0.7, 0.9]]]]), position + torch.tensor([[[[1.0, 0.0]], [[0.0, -2.0]]]]),
                          torch.tensor([[[[0.6, 0.0]], [[0.8, 1.0]]]]))
    terms = distillation_loss(student, teacher, DistillConfig(a_position=1.0, a_score=10.0, a_descriptor=2.0))
    assert math.isclose(terms["distill_position"].item(), 1.0 + 2.0, rel_tol=1e-6)
    assert math.isclose(terms["distill_score"].item(), 0.2 ** 2, rel_tol=1e-5)
    assert math.isclose(terms["distill_descriptor"].item(), (1 - 0.6) + (1 - 1.0), abs_tol=1e-6)
    assert math.isclose(terms["distill"].item(), 3.0 + 10 * 0.04 + 2 * 0.4, rel_tol=1e-5)
    assert distillation_loss(teacher, teacher, DistillConfig())["distill"].item() == 0.0

"""Tests of usp_core.dense_losses: window soft-argmax, reprojection and peakiness, dense InfoNCE descriptors."""
import pytest
import torch
import torch.nn.functional as F

from usp_core.training.dense_losses import (dense_descriptor_loss, dense_losses, reprojection_terms,
                                            window_peak_parabola, window_softargmax)
from usp_core.models.layers import ModelConfig, PointDescriptors, cell_grid
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_core.training.trainer import _split_branches

READ = PointDescriptors((), 0, 16, 0.01)  # reads the 1/8 map alone, as weights v3 do


def _peaks(points: list[tuple[int, int]], size=(32, 48), height: float = 20.0) -> torch.Tensor:
    """Logits (1, 1, H, W) with a sharp peak at each integer (x, y)."""
    logits = torch.zeros(1, 1, *size)
    for x, y in points:
        logits[0, 0, y, x] = height
    return logits


def _translation(tx: float, ty: float) -> torch.Tensor:
    return torch.tensor([[[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]]])


def test_window_softargmax_lands_on_a_peak_with_no_spread():
    points, spread = window_softargmax(_peaks([(10, 12)]), torch.tensor([[[11.0, 13.0]]]), radius=2)
    assert points[0, 0].tolist() == pytest.approx([10.0, 12.0], abs=1e-3)
    assert spread.item() == pytest.approx(0.0, abs=1e-3)


def test_window_softargmax_of_a_flat_window_is_its_centre_with_the_mean_spread():
    points, spread = window_softargmax(torch.zeros(1, 1, 32, 48), torch.tensor([[[20.0, 9.0]]]), radius=1)
    assert points[0, 0].tolist() == pytest.approx([20.0, 9.0], abs=1e-5)
    expected = (4 * 1.0 + 4 * 2 ** 0.5) / 9  # 3x3 window: 4 edge neighbours at 1 px, 4 corners at sqrt 2
    assert spread.item() == pytest.approx(expected, abs=1e-5)


def _paraboloid(x0: float, y0: float, size=(32, 48)) -> torch.Tensor:
    """Logits (1, 1, H, W) = -((x - x0)^2 + (y - y0)^2): one peak at the sub-pixel (x0, y0)."""
    ys, xs = torch.meshgrid(torch.arange(size[0], dtype=torch.float32), torch.arange(size[1], dtype=torch.float32),
                            indexing="ij")
    return (-((xs - x0) ** 2 + (ys - y0) ** 2))[None, None]


def test_window_peak_parabola_finds_the_sub_pixel_peak_anywhere_in_the_window():
    centres = torch.tensor([[[17.0, 13.0], [19.0, 11.0], [16.0, 15.0]]])  # the peak pixel (17, 13) 0-2 px away
    points = window_peak_parabola(_paraboloid(17.3, 12.8), centres, radius=2)
    assert points[0].flatten().tolist() == pytest.approx([17.3, 12.8] * 3, abs=1e-4)
    soft, _ = window_softargmax(_paraboloid(17.3, 12.8), centres, radius=2)
    assert (soft[0, 1] - torch.tensor([17.3, 12.8])).norm() > 0.1  # the soft-argmax is pulled by the window


def test_window_peak_parabola_differentiates_only_the_peak_and_its_four_neighbours():
    logits = _paraboloid(20.4, 9.7).requires_grad_(True)
    window_peak_parabola(logits, torch.tensor([[[21.0, 10.0]]]), radius=2).sum().backward()
    touched = logits.grad[0, 0].nonzero().tolist()
    assert sorted(touched) == [[9, 20], [10, 19], [10, 20], [10, 21], [11, 20]]  # (row, column) around (20, 10)


def test_reprojection_with_the_parabola_fit_measures_sub_pixel_shifts():
    score = torch.ones(1, 1, 4, 6)
    position = torch.zeros(1, 2, 4, 6)
    position[0, :, 1, 2] = torch.tensor([17.3, 12.8])  # the one cell away from the border
    fraction = 1.0  # every cell takes part
    moved = _paraboloid(17.3 + 0.2, 12.8)  # B's peak 0.2 px right of where A's point lands
    exact, _ = reprojection_terms(position, score, _paraboloid(17.3, 12.8), torch.eye(3)[None], 2, fraction,
                                  position_fit="parabola")
    shifted, _ = reprojection_terms(position, score, moved, torch.eye(3)[None], 2, fraction, position_fit="parabola")
    assert exact.item() < 1e-3 and shifted.item() == pytest.approx(0.2, abs=1e-3)
    with pytest.raises(ValueError, match="position_fit"):
        reprojection_terms(position, score, moved, torch.eye(3)[None], 2, fraction, position_fit="centroid")


def _cell_positions(points: list[tuple[int, int]], size=(32, 48)) -> torch.Tensor:
    """(1, 2, H/8, W/8): each cell at its centre, except cells holding one of ``points`` (placed there)."""
    position = cell_grid(size[0] // 8, size[1] // 8, torch.device("cpu"), torch.float32) * 8 + 3.5
    for x, y in points:
        position[0, :, y // 8, x // 8] = torch.tensor([float(x), float(y)])
    return position


def test_reprojection_is_zero_for_peaks_that_move_with_the_image_and_the_shift_otherwise():
    points = [(12, 10), (29, 20), (36, 13)]
    score = torch.zeros(1, 1, 4, 6)
    for x, y in points:
        score[0, 0, y // 8, x // 8] = 1.0  # the best 3 of 24 cells (fraction 0.125): those with peaks
    moved = _peaks([(x + 3, y + 2) for x, y in points])
    distance, spread = reprojection_terms(_cell_positions(points), score, moved, _translation(3, 2), radius=2, fraction=0.125)
    assert distance.item() == pytest.approx(0.0, abs=1e-3) and spread.item() == pytest.approx(0.0, abs=1e-3)
    off_by_one = _peaks([(x + 4, y + 2) for x, y in points])  # B's peaks 1 px right of the true motion
    distance, _ = reprojection_terms(_cell_positions(points), score, off_by_one, _translation(3, 2), radius=2, fraction=0.125)
    assert distance.item() == pytest.approx(3.0, abs=1e-2)  # 1 px for each of the three scored cells


def test_reprojection_ignores_points_that_land_near_or_outside_the_border():
    score = torch.ones(1, 1, 4, 6)
    distance, _ = reprojection_terms(_cell_positions([]), score, torch.zeros(1, 1, 32, 48),
                                     _translation(100, 0), radius=2, fraction=1.0)
    assert distance.item() == 0.0


def _descriptor_maps(seed: int, dim: int = 16, size=(4, 6)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, dim, *size, generator=generator)


def test_dense_descriptor_loss_is_low_for_matching_descriptors_and_high_for_others():
    raw = _descriptor_maps(0)
    position = _cell_positions([])  # cell centres: sampling there reads each cell's own descriptor
    unit = F.normalize(raw, dim=1)
    identity = torch.eye(3)[None]
    same = dense_descriptor_loss(unit, position, (raw,), READ, unit, position, identity, 0.05, 4.0)
    other_raw = _descriptor_maps(1)
    other = dense_descriptor_loss(unit, position, (other_raw,), READ, F.normalize(other_raw, dim=1), position,
                                  identity, 0.05, 4.0)
    cells = 4 * 6
    assert same.item() < 0.05 * cells
    assert other.item() > 2.0 * cells


def test_dense_losses_backpropagate_into_every_head_of_a_softargmax_model():
    torch.manual_seed(0)
    model = UnsuperPoint(ModelConfig(backbone="fast", widths=(4, 8, 8, 16, 16), descriptor_dim=8,
                                     position_head="softargmax"))
    images = torch.rand(2, 1, 32, 48)
    maps = model(images, training=True)
    a, b = _split_branches(maps, 1)
    terms = dense_losses(a, b, model.point_descriptors, _translation(1.0, 2.0), radius=2, fraction=0.5,
                         temperature=0.05, exclusion_radius=4.0)
    assert set(terms) == {"reprojection", "peakiness", "dense_desc"}
    for name, term in terms.items():
        model.zero_grad()
        term.backward(retain_graph=True)
        assert model.fine_head.out.weight.grad.abs().sum() > 0 or name == "dense_desc", name
        if name == "dense_desc":
            assert model.descriptor_head[1].weight.grad.abs().sum() > 0


def test_dense_descriptor_loss_counts_only_the_given_anchors_and_negatives():
    raw = _descriptor_maps(0)
    position = _cell_positions([])
    unit = F.normalize(raw, dim=1)
    identity = torch.eye(3)[None]
    every = torch.ones(1, 24, dtype=torch.bool)

    def loss(*masks: torch.Tensor) -> float:
        """The loss of the map against itself at temperature 0.5, with (anchors, negatives) masks if given."""
        return dense_descriptor_loss(unit, position, (raw,), READ, unit, position, identity, 0.5, 4.0, *masks).item()

    assert loss(every, every) == pytest.approx(loss())
    anchors = torch.zeros(1, 24, dtype=torch.bool)
    anchors[0, :5] = True
    only_five = loss(anchors, every)
    per_anchor = loss(every, every)
    assert 0 < only_five < per_anchor
    # with no negative left, each anchor's softmax holds its positive alone: no loss
    none = torch.zeros(1, 24, dtype=torch.bool)
    assert loss(every, none) == pytest.approx(0.0, abs=1e-5)


def test_dense_losses_with_a_descriptor_fraction_use_fewer_cells():
    torch.manual_seed(0)
    model = UnsuperPoint(ModelConfig(backbone="fast", widths=(4, 8, 8, 16, 16), descriptor_dim=8,
                                     position_head="softargmax"))
    maps = model(torch.rand(2, 1, 32, 48), training=True)
    a, b = _split_branches(maps, 1)
    settings = dict(radius=2, fraction=0.5, temperature=0.05, exclusion_radius=4.0)
    every = dense_losses(a, b, model.point_descriptors, torch.eye(3)[None], **settings)["dense_desc"]
    quarter = dense_losses(a, b, model.point_descriptors, torch.eye(3)[None], desc_fraction=0.25,
                           **settings)["dense_desc"]
    assert 0 < quarter.item() < every.item()

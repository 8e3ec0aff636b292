"""Tests of usp_core.models.layers: shapes, position mapping, descriptor sampling, export by tracing."""
import math
import warnings

import pytest
import torch

from usp_core.models.layers import (BACKBONE_WIDTHS, PATCH_OFFSETS, DenseOutput, ModelConfig, PointDescriptors,
                                   cell_grid, cell_peak_parabola, cell_softargmax, sample_descriptors)
from usp_core.models.unsuperpoint import UnsuperPoint

SMALL = ModelConfig(widths=(4, 4, 8, 8, 8, 8, 16, 16), descriptor_dim=8)


def _model(config: ModelConfig = SMALL) -> UnsuperPoint:
    torch.manual_seed(0)
    return UnsuperPoint(config).eval()


def test_default_config_is_the_papers():
    config = ModelConfig()
    assert config.widths == (32, 32, 64, 64, 128, 128, 256, 256)
    assert config.descriptor_dim == 256 and config.in_channels == 1
    assert UnsuperPoint.cell == 8


@pytest.mark.parametrize("config", [SMALL, ModelConfig(in_channels=3)])
def test_output_shapes_and_ranges(config):
    model = _model(config)
    images = torch.rand(2, config.in_channels, 48, 64)
    out = model(images)
    assert isinstance(out, DenseOutput)
    assert out.score.shape == (2, 1, 6, 8)
    assert out.position.shape == (2, 2, 6, 8)
    assert out.descriptors.shape == (2, config.descriptor_dim, 6, 8)
    assert ((out.score > 0) & (out.score < 1)).all()
    norms = out.descriptors.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_positions_stay_in_their_cells():
    out = _model()(torch.rand(1, 1, 32, 40))
    cols = torch.arange(5).view(1, 1, 5).float()
    rows = torch.arange(4).view(1, 4, 1).float()
    x, y = out.position[0, 0], out.position[0, 1]
    assert ((x >= 8 * cols) & (x <= 8 * cols + 8)).all()
    assert ((y >= 8 * rows) & (y <= 8 * rows + 8)).all()


def test_position_head_maps_to_known_pixels():
    model = _model()
    final = model.position_head[-1]
    with torch.no_grad():
        final.weight.zero_()
        final.bias.copy_(torch.tensor([math.log(0.25 / 0.75), math.log(0.75 / 0.25)]))  # sigmoid -> 0.25, 0.75
    position = model(torch.rand(1, 1, 24, 32)).position[0]
    expected_x = (torch.arange(4).float() + 0.25) * 8
    expected_y = (torch.arange(3).float() + 0.75) * 8
    assert torch.allclose(position[0], expected_x.expand(3, 4), atol=1e-5)
    assert torch.allclose(position[1], expected_y[:, None].expand(3, 4), atol=1e-5)


def _column_index_map(height: int, width: int) -> torch.Tensor:
    """(1, 2, h, w) map whose descriptor at cell (i, j) is (j, 1)."""
    cols = torch.arange(width).float().expand(height, width)
    return torch.stack((cols, torch.ones(height, width))).unsqueeze(0)


def test_descriptor_sampling_reads_cell_at_its_pixel_centre():
    descriptor_map = _column_index_map(2, 4)
    # x = 8 j + 3.5 is the centre of the pixels of cell j; x = 8 j + 7.5 is halfway between cells j and j + 1.
    xs = torch.tensor([3.5, 11.5, 27.5, 7.5, 19.5])
    position = torch.stack((xs, torch.full_like(xs, 3.5))).view(1, 2, 1, 5)
    sampled = sample_descriptors(descriptor_map, position, cell=8)[0, :, 0]
    expected_col = torch.tensor([0.0, 1.0, 3.0, 0.5, 2.0])
    expected = torch.stack((expected_col, torch.ones(5)))
    expected = expected / expected.norm(dim=0)
    assert torch.allclose(sampled, expected, atol=1e-5)


def test_descriptor_sampling_clamps_outside_to_border():
    descriptor_map = _column_index_map(1, 2)
    position = torch.tensor([[[[15.9]], [[4.0]]]])
    sampled = sample_descriptors(descriptor_map, position, cell=8)[0, :, 0, 0]
    expected = torch.tensor([1.0, 1.0]) / math.sqrt(2.0)
    assert torch.allclose(sampled, expected, atol=1e-5)


def test_model_descriptors_are_sampled_at_predicted_positions():
    model = _model()
    images = torch.rand(1, 1, 32, 32)
    out = model(images)
    raw = model.descriptor_head(model.backbone(images))
    assert torch.allclose(out.descriptors, sample_descriptors(raw, out.position, 8), atol=1e-6)


def test_positions_keep_float32_precision_under_autocast():
    model = _model()
    images = torch.rand(1, 1, 16, 512)
    reference = model(images)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        reduced = model(images)
    assert reduced.position.dtype == torch.float32 and reduced.descriptors.dtype == torch.float32
    # bfloat16 spaces representable values 2 px apart above 256 px; float32 positions stay within bf16 logit noise
    assert (reduced.position - reference.position).abs().max() < 0.05


def test_invalid_widths_rejected():
    with pytest.raises(ValueError):
        ModelConfig(widths=(32, 32, 64))
    with pytest.raises(ValueError, match="fast backbone takes 5"):
        ModelConfig(backbone="fast", widths=(8, 8, 16, 16, 32, 32, 64, 64))
    with pytest.raises(ValueError, match="backbone must be"):
        ModelConfig(backbone="resnet")


def test_each_backbone_has_default_widths():
    assert ModelConfig(backbone="fast").widths == BACKBONE_WIDTHS["fast"]
    assert ModelConfig(widths=()).widths == BACKBONE_WIDTHS["vgg"]


FAST = ModelConfig(backbone="fast", widths=(4, 8, 8, 16, 16), descriptor_dim=8)


@pytest.mark.parametrize("size", [(48, 64), (40, 56)])  # 1/8 maps of even and odd size (1/16 rounds up)
def test_fast_backbone_shapes(size):
    model = _model(FAST)
    out = model(torch.rand(2, 1, *size))
    cells = (size[0] // 8, size[1] // 8)
    assert out.score.shape == (2, 1, *cells) and out.position.shape == (2, 2, *cells)
    assert out.descriptors.shape == (2, 8, *cells)
    assert torch.allclose(out.descriptors.norm(dim=1), torch.ones(2, *cells), atol=1e-5)


def test_fast_backbone_context_feeds_the_descriptors_only():
    model = _model(FAST)
    images = torch.rand(1, 1, 48, 64)
    before = model(images)
    with torch.no_grad():
        model.backbone.context.bias.add_(1.0)
    after = model(images)
    assert torch.equal(before.score, after.score) and torch.equal(before.position, after.position)
    assert not torch.allclose(before.descriptors, after.descriptors)


def test_fast_backbone_costs_under_60_percent_of_the_light_vgg():
    vgg = ModelConfig(widths=(16, 16, 32, 32, 64, 64, 128, 128), descriptor_dim=128)
    fast = ModelConfig(backbone="fast", widths=(8, 24, 48, 96, 128), descriptor_dim=128)
    assert _multiply_adds(UnsuperPoint(fast), (240, 320)) < 0.6 * _multiply_adds(UnsuperPoint(vgg), (240, 320))


def _multiply_adds(model: UnsuperPoint, size: tuple[int, int]) -> int:
    """Multiply-adds of every convolution of one forward pass on a (1, 1, *size) image."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        total += output.numel() * module.weight[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.rand(1, 1, *size))
    for hook in hooks:
        hook.remove()
    return total


def test_widths_from_yaml_lists_become_tuples():
    assert ModelConfig(widths=[4, 4, 8, 8, 8, 8, 16, 16]).widths == SMALL.widths


def test_lighter_variant_has_fewer_parameters():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(UnsuperPoint(SMALL)) < count(UnsuperPoint()) / 50


@pytest.mark.parametrize("config", [SMALL, FAST])
def test_traced_model_matches_eager_at_another_size(config):
    model = _model(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.rand(1, 1, 32, 48))
    images = torch.rand(2, 1, 56, 40)
    for eager, exported in zip(model(images), traced(images)):
        assert eager.shape == exported.shape
        assert torch.allclose(eager, exported, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("config", [SMALL, FAST])
def test_onnx_export_matches_eager(tmp_path, config):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _model(config)
    path = tmp_path / "usp.onnx"
    torch.onnx.export(model, (torch.rand(1, 1, 32, 48),), str(path), input_names=["image"],
                      output_names=["score", "position", "descriptors"],
                      dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}}, dynamo=False)
    images = torch.rand(2, 1, 40, 56)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"image": images.numpy()})
    for eager, exported in zip(model(images), outputs):
        assert torch.allclose(eager, torch.from_numpy(exported), atol=1e-4)


FINE = ModelConfig(backbone="fast", widths=(4, 8, 8, 16, 16), descriptor_dim=8, position_head="softargmax")  # v3
# v3 lite: one block at 1/2 scale, nearest 2x steps in the full-resolution head
LITE = ModelConfig(backbone="fast", widths=(4, 8, 8, 16, 16), descriptor_dim=8, position_head="softargmax",
                   blocks=(1, 1, 2, 2, 2), fine_upsample="nearest")
# v3 with fine descriptors: the 1/2 and 1/4 features read at each point through a small MLP
FINE_DESC = ModelConfig(backbone="fast", widths=(4, 8, 8, 16, 16), descriptor_dim=8, position_head="softargmax",
                        fine_descriptor_width=6)
# v4 with fine scores: the same features through a second MLP to a term of each cell's score logit
FINE_SCORE = ModelConfig(backbone="fast", widths=(4, 8, 8, 16, 16), descriptor_dim=8, position_head="softargmax",
                         fine_descriptor_width=6, fine_score_width=4)
# v5 with patch descriptors: the same features read on a 3x3 grid around each point through a third MLP
PATCH = ModelConfig(**{**FINE_SCORE.__dict__, "patch_descriptor_width": 5})


def _one_peak_logits(points: list[tuple[float, float]], size: tuple[int, int] = (16, 24)) -> torch.Tensor:
    """Logits (1, 1, H, W): 0 everywhere, a sharp bump of 10 on each integer (x, y) in ``points``."""
    logits = torch.zeros(1, 1, *size)
    for x, y in points:
        logits[0, 0, int(y), int(x)] = 10.0
    return logits


def test_cell_softargmax_finds_a_peak_anywhere_in_its_cell():
    logits = _one_peak_logits([(0, 0), (13, 5), (23, 15), (7, 8)])
    position = cell_softargmax(logits, radius=2)  # (1, 2, 2, 3)
    expected = {(0, 0): (0, 0), (0, 1): (13, 5), (1, 2): (23, 15), (1, 0): (7, 8)}
    for (row, col), (x, y) in expected.items():
        assert position[0, :, row, col].tolist() == pytest.approx([x, y], abs=0.01)


def test_cell_softargmax_is_sub_pixel_between_two_equal_pixels():
    logits = torch.zeros(1, 1, 8, 8)
    logits[0, 0, 3, 4] = logits[0, 0, 3, 5] = 10.0  # two neighbours in row 3: the point lies between them
    assert cell_softargmax(logits, radius=2)[0, :, 0, 0].tolist() == pytest.approx([4.5, 3.0], abs=0.01)


def test_cell_softargmax_window_ignores_mass_outside_it():
    logits = torch.zeros(1, 1, 8, 8)
    logits[0, 0, 1, 1] = 10.0  # the peak
    logits[0, 0, 7, 7] = 9.0  # a second bump 6 px away: outside a radius-2 window, inside a radius-7 one
    assert cell_softargmax(logits, radius=2)[0, :, 0, 0].tolist() == pytest.approx([1.0, 1.0], abs=0.01)
    assert cell_softargmax(logits, radius=7)[0, 0, 0, 0].item() > 2.0


def _parabola_logits(peaks: list[tuple[float, float]], size: tuple[int, int] = (16, 24)) -> torch.Tensor:
    """Logits (1, 1, H, W): the sum of paraboloids -(x - px)^2 - (y - py)^2 + 10, each within 2 px of its peak."""
    ys, xs = torch.meshgrid(torch.arange(size[0], dtype=torch.float32), torch.arange(size[1], dtype=torch.float32),
                            indexing="ij")
    logits = torch.zeros(size)
    for px, py in peaks:
        near = ((xs - px).abs() <= 2) & ((ys - py).abs() <= 2)
        logits = torch.where(near, 10.0 - (xs - px) ** 2 - (ys - py) ** 2, logits)
    return logits[None, None]


def test_cell_peak_parabola_recovers_sub_pixel_peaks():
    peaks = [(3.3, 4.8), (13.6, 2.2), (19.5, 11.0), (5.0, 12.4)]  # one in each of four cells
    position = cell_peak_parabola(_parabola_logits(peaks))  # (1, 2, 2, 3)
    for x, y in peaks:
        row, col = int(y // 8), int(x // 8)
        assert position[0, :, row, col].tolist() == pytest.approx([x, y], abs=1e-4)


def test_cell_peak_parabola_moves_at_most_half_a_pixel_from_the_peak_pixel():
    logits = _one_peak_logits([(0, 0), (13, 5), (23, 15), (7, 8)])  # single bright pixels: no offset
    position = cell_peak_parabola(logits)
    assert position[0, :, 0, 1].tolist() == pytest.approx([13.0, 5.0]) and position[0, :, 1, 0].tolist() == [7.0, 8.0]
    rising = torch.arange(16 * 24, dtype=torch.float32).view(1, 1, 16, 24) % 24  # logits grow to the right
    offsets = cell_peak_parabola(rising)[0, 0] - (cell_grid(2, 3, torch.device("cpu"), torch.float32)[0, 0] * 8 + 7)
    assert torch.allclose(offsets[:, :2], torch.tensor(0.5))  # no maximum inside: half a pixel towards the rise
    assert torch.allclose(offsets[:, 2], torch.tensor(0.0))  # the image's last column: no move across the edge


def test_softargmax_head_keeps_points_near_their_cells_and_exposes_training_maps():
    model = _model(FINE)
    images = torch.rand(2, 1, 32, 40)
    out = model(images)
    grid = cell_grid(4, 5, out.position.device, out.position.dtype) * 8
    offsets = out.position - grid
    assert ((offsets >= -0.5) & (offsets <= 7.5)).all()
    maps = model(images, training=True)
    assert maps.fine.shape == (2, 1, 32, 40) and [t.shape for t in maps.descriptor_sources] == [(2, 8, 4, 5)]
    trained = maps.dense.position - grid
    assert ((trained >= 0) & (trained <= 7)).all()
    assert (out.position - maps.dense.position).abs().max() <= 2.5  # the same peak pixel, two sub-pixel estimates
    assert not hasattr(model, "position_head") and hasattr(model, "fine_head")


def test_parabola_fit_in_training_returns_the_inference_positions_with_gradients():
    model = _model(FINE)
    images = torch.rand(2, 1, 32, 40)
    maps = model(images, training=True, position_fit="parabola")
    assert torch.equal(maps.dense.position, model(images).position)
    maps.dense.position.sum().backward()
    assert model.fine_head.out.weight.grad.abs().sum() > 0  # the fit is differentiable in the logits it reads
    with pytest.raises(ValueError, match="position_fit"):
        model(images, training=True, position_fit="centroid")


def test_softargmax_head_needs_the_fast_backbone():
    with pytest.raises(ValueError, match="fast backbone"):
        ModelConfig(position_head="softargmax")
    with pytest.raises(ValueError, match="position_head"):
        ModelConfig(backbone="fast", position_head="argmax")


@pytest.mark.parametrize("config", [FINE, LITE, FINE_DESC, FINE_SCORE, PATCH],
                         ids=["v3", "lite", "fine-descriptors", "fine-scores", "patch-descriptors"])
def test_traced_softargmax_model_matches_eager_at_another_size(config):
    test_traced_model_matches_eager_at_another_size(config)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("config", [FINE, LITE, FINE_DESC, FINE_SCORE, PATCH],
                         ids=["v3", "lite", "fine-descriptors", "fine-scores", "patch-descriptors"])
def test_onnx_export_of_the_softargmax_head_matches_eager(tmp_path, config):
    test_onnx_export_matches_eager(tmp_path, config)


def test_lite_options_drop_the_layers_they_name_and_keep_every_other_weight_name():
    full, lite = _model(FINE).state_dict(), _model(LITE).state_dict()
    dropped = set(full) - set(lite)
    assert dropped and all(key.startswith("backbone.to_eighth.1.2.") for key in dropped)
    assert set(lite) < set(full)
    deeper = UnsuperPoint(ModelConfig(**{**LITE.__dict__, "blocks": (2, 1, 2, 2, 3)})).state_dict()
    assert {"backbone.to_eighth.0.1.0.weight", "backbone.to_sixteenth.3.0.weight"} <= set(deeper)


def test_nearest_upsampling_repeats_each_coarse_value_over_its_fine_pixels():
    head = _model(LITE).fine_head
    coarse = torch.arange(6.0).view(1, 1, 2, 3)
    fine = head._upsampled(coarse, torch.zeros(1, 1, 4, 6))
    assert torch.equal(fine[0, 0], coarse[0, 0].repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_lite_options_are_validated():
    with pytest.raises(ValueError, match="fine_upsample"):
        ModelConfig(backbone="fast", fine_upsample="bicubic")
    with pytest.raises(ValueError, match="blocks"):
        ModelConfig(backbone="fast", blocks=(1, 0, 2, 2, 2))
    with pytest.raises(ValueError, match="blocks"):
        ModelConfig(blocks=(1, 1, 2, 2, 2))  # the VGG has no per-scale depths
    assert ModelConfig(backbone="fast", blocks=[1, 1, 2, 2, 2]).blocks == (1, 1, 2, 2, 2)


def _randomised(model: UnsuperPoint) -> UnsuperPoint:
    """The model with its fine-descriptor MLP's zero output layer given random weights."""
    torch.nn.init.normal_(model.point_descriptors.fine[-1].weight, std=0.5)
    return model


def _starts_as(plain: UnsuperPoint, extended: UnsuperPoint, mlp: str) -> torch.Tensor:
    """Assert that ``extended`` adds only the MLP named ``mlp`` to ``plain``'s weights and, loaded with them,
    computes what ``plain`` does (the MLP's last layer starts at zero); returns the images (2, 1, 32, 48) used."""
    added = set(extended.state_dict()) - set(plain.state_dict())
    assert added == {f"{mlp}.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    extended.load_state_dict(plain.state_dict(), strict=False)
    images = torch.rand(2, 1, 32, 48)
    for mine, theirs in zip(extended(images), plain(images)):
        assert torch.equal(mine, theirs)
    return images


def test_fine_descriptors_start_as_the_network_without_them_and_add_only_their_mlp():
    plain, fine = _model(FINE), _model(FINE_DESC)
    images = _starts_as(plain, fine, "point_descriptors.fine")
    assert not torch.allclose(_randomised(fine)(images).descriptors, plain(images).descriptors, atol=1e-3)


def test_fine_descriptors_tell_apart_points_within_one_cell():
    model = _randomised(_model(FINE_DESC))
    maps = model(torch.rand(1, 1, 32, 48), training=True)
    points = torch.tensor([[[[10.0, 13.0]], [[12.0, 12.0]]]])  # (1, 2, 1, 2): x 10 and 13, y 12, one 1/8 cell
    coarse = sample_descriptors(maps.descriptor_sources[0], points, cell=8)[0, :, 0]
    read = model.point_descriptors(maps.descriptor_sources, points)[0, :, 0]  # (D, 2)
    plain = PointDescriptors((), 0, 8, 0.01)(maps.descriptor_sources[:1], points)[0, :, 0]
    assert torch.allclose(plain, coarse, atol=1e-6)  # without the MLP: the 1/8 map read bilinearly
    assert (read[:, 0] - read[:, 1]).norm() > (plain[:, 0] - plain[:, 1]).norm()


def test_patch_descriptors_start_as_the_network_without_them_and_read_around_each_point():
    plain, patched = _model(FINE_SCORE), _model(PATCH)
    images = _starts_as(plain, patched, "point_descriptors.patch")
    levels = patched.backbone.pyramid(images)
    raw = patched.descriptor_head(patched.backbone.describe(levels[3]))
    points = torch.tensor([[[[12.0, 30.0]], [[13.0, 9.0]]]])  # (1, 2, 1, 2) pixels (x, y)
    reads = patched.point_descriptors.read((raw[:1], *(level[:1] for level in levels[1:3])), points)
    channels = levels[1].shape[1] + levels[2].shape[1]
    assert reads.patch.shape == (1, 9 * channels, 1, 2)
    for k, (dx, dy) in enumerate(PATCH_OFFSETS):  # channel c * 9 + k: level channel c read at offset k
        moved = patched.point_descriptors.read((raw[:1], *(level[:1] for level in levels[1:3])),
                                               points + torch.tensor([dx, dy]).view(1, 2, 1, 1))
        assert torch.allclose(reads.patch[:, k::9], moved.fine, atol=1e-6), (dx, dy)
    torch.nn.init.normal_(patched.point_descriptors.patch[-1].weight, std=0.5)
    assert not torch.allclose(patched(images).descriptors, plain(images).descriptors, atol=1e-3)
    assert len(patched(images, training=True).descriptor_sources) == 3


@pytest.mark.parametrize("name", ["fine_descriptor_width", "fine_score_width", "patch_descriptor_width"])
def test_fine_reads_need_the_softargmax_head(name):
    with pytest.raises(ValueError, match=name):
        ModelConfig(backbone="fast", **{name: 16})
    with pytest.raises(ValueError, match=name):
        ModelConfig(backbone="fast", position_head="softargmax", **{name: -1})


def test_fine_scores_start_as_the_network_without_them_and_add_the_points_term_to_the_logit():
    plain, scored = _model(FINE_DESC), _model(FINE_SCORE)
    images = _starts_as(plain, scored, "point_scores.mlp")
    torch.nn.init.normal_(scored.point_scores.mlp[-1].weight, std=0.5)
    out, base = scored(images), plain(images)
    levels = scored.backbone.pyramid(images)
    raw = scored.descriptor_head(scored.backbone.describe(levels[3]))
    reads = scored.point_descriptors.read((raw, *levels[1:3]), out.position)  # the features at each cell's point
    term = torch.logit(out.score.double()) - torch.logit(base.score.double())
    assert term.abs().max() > 1e-2
    assert torch.allclose(term.float(), scored.point_scores(reads.fine), atol=1e-4)
    assert torch.equal(out.position, base.position) and torch.equal(out.descriptors, base.descriptors)
    assert len(scored(images, training=True).descriptor_sources) == 3  # the descriptors' sources, as in v4

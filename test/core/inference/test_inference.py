"""Tests of usp_core.inference.detector: input handling, point selection, resizing, checkpoints (torch backend;
the other backends are compared with it in test_backends.py)."""
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from usp_core.inference.detector import DetectorConfig, KeypointDetector, inference_size
from usp_core.inference.features import Features
from usp_core.inference.weights import BUNDLED_WEIGHTS, resolve_weights, shipped_models
from usp_core.models.layers import DenseOutput, ModelConfig, cell_grid
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_core.support.checkpoint import CheckpointError, save_checkpoint

SMALL = ModelConfig(widths=(4, 4, 8, 8, 8, 8, 16, 16), descriptor_dim=8)


def _detector(**config) -> KeypointDetector:
    torch.manual_seed(0)
    return KeypointDetector(UnsuperPoint(SMALL), DetectorConfig(**config), backend="torch")


def _image(height: int = 50, width: int = 70, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (cv2.GaussianBlur(rng.random((height, width)), (0, 0), 1.5) * 255).astype(np.uint8)


class CentroidModel(nn.Module):
    """Hand-made stand-in: the cell holding the image's intensity centroid scores 1 and reports it exactly."""

    cell = 8

    def __init__(self) -> None:
        super().__init__()
        self.config = ModelConfig(in_channels=1, descriptor_dim=2)

    def forward(self, images: torch.Tensor) -> DenseOutput:
        batch, _, height, width = images.shape
        ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
        weight = images[:, 0]
        centroid = torch.stack(((weight * xs).sum((1, 2)), (weight * ys).sum((1, 2))), -1) / weight.sum((1, 2))[:, None]
        grid = cell_grid(height // 8, width // 8, images.device, images.dtype)
        owner = (grid == (centroid // 8)[:, :, None, None]).all(dim=1, keepdim=True)
        score = owner.float() * 0.98 + 0.01
        position = torch.where(owner, centroid[:, :, None, None], grid * 8 + 4)
        descriptors = torch.nn.functional.normalize(torch.ones(batch, 2, height // 8, width // 8), dim=1)
        return DenseOutput(score, position, descriptors)


def test_features_are_numpy_with_the_input_size():
    features = _detector(max_keypoints=20).detect(_image(50, 70))
    assert isinstance(features, list) and len(features) == 1
    found = features[0]
    assert isinstance(found, Features) and found.image_size == (70, 50)
    assert found.keypoints.shape == (len(found), 2) and found.scores.shape == (len(found),)
    assert found.descriptors.shape == (len(found), 8)
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32
               for a in (found.keypoints, found.scores, found.descriptors))
    assert np.all(found.scores[:-1] >= found.scores[1:])


def test_keypoints_inside_image_and_max_keypoints_respected():
    image = _image(50, 70)
    all_points = _detector(max_keypoints=None, border=0).detect(image)[0]
    assert len(all_points) > 30
    keypoints = all_points.keypoints
    assert ((keypoints >= 0) & (keypoints <= [69.0, 49.0])).all()
    top = _detector(max_keypoints=10, border=0).detect(image)[0]
    assert len(top) == 10
    np.testing.assert_allclose(top.scores, all_points.scores[:10])


def test_border_and_score_threshold():
    image = _image(64, 80)
    found = _detector(max_keypoints=None, border=12).detect(image)[0]
    assert ((found.keypoints >= 12) & (found.keypoints <= [79.0 - 12, 63.0 - 12])).all()
    everything = _detector(max_keypoints=None, border=0).detect(image)[0]
    assert len(found) < len(everything)
    threshold = float(np.median(everything.scores))
    kept = _detector(max_keypoints=None, border=0, score_threshold=threshold).detect(image)[0]
    assert (kept.scores >= threshold).all()
    assert len(kept) == int((everything.scores >= threshold).sum())
    nothing = _detector(score_threshold=1.0).detect(image)[0]
    assert len(nothing) == 0 and nothing.descriptors.shape == (0, 8) and nothing.keypoints.shape == (0, 2)


def test_pad_keeps_the_whole_image_and_crop_drops_the_remainder():
    image = _image(50, 70)
    padded = _detector(max_keypoints=None, border=0, size_policy="pad").detect(image)[0]
    cropped = _detector(max_keypoints=None, border=0, size_policy="crop").detect(image)[0]
    assert len(cropped) <= 6 * 8 < len(padded) <= 7 * 9
    assert (cropped.keypoints <= [63.0, 47.0]).all()
    assert (padded.keypoints[:, 0] > 63.0).any() or (padded.keypoints[:, 1] > 47.0).any()


def test_crop_of_tiny_image_is_an_error():
    with pytest.raises(ValueError, match="smaller than one"):
        _detector(size_policy="crop").detect(np.zeros((5, 30), np.uint8))


def test_uint8_float_grey_and_colour_inputs_agree():
    detector = _detector(max_keypoints=15)
    grey = _image()
    reference = detector.detect(grey)[0]
    as_float = detector.detect(grey.astype(np.float32) / 255.0)[0]
    colour = detector.detect(np.repeat(grey[:, :, None], 3, axis=2))[0]
    as_tensor = detector.detect(torch.from_numpy(grey)[None, None])[0]
    for other in (as_float, colour, as_tensor):
        np.testing.assert_allclose(other.keypoints, reference.keypoints, atol=1e-4)
        np.testing.assert_allclose(other.descriptors, reference.descriptors, atol=1e-4)


def test_channel_order_selects_grey_weights():
    rng = np.random.default_rng(3)
    colour = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    grey_rgb = cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    grey_bgr = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    rgb_detector, bgr_detector = _detector(max_keypoints=10), _detector(max_keypoints=10, channel_order="bgr")
    np.testing.assert_allclose(rgb_detector.detect(colour)[0].descriptors, rgb_detector.detect(grey_rgb)[0].descriptors,
                               atol=1e-2)
    np.testing.assert_allclose(bgr_detector.detect(colour)[0].descriptors, bgr_detector.detect(grey_bgr)[0].descriptors,
                               atol=1e-2)


def test_unsupported_inputs_are_rejected():
    detector = _detector()
    with pytest.raises(ValueError):
        detector.detect(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((16, 16, 2), np.uint8))
    with pytest.raises(TypeError):
        detector.detect(np.zeros((16, 16), np.int64))
    with pytest.raises(ValueError):
        DetectorConfig(size_policy="stretch")


def test_batches_return_lists_matching_single_images():
    detector = _detector(max_keypoints=12)
    images = [_image(48, 64, seed) for seed in range(3)] + [_image(40, 56, 9)]
    singles = [detector.detect(image)[0] for image in images]
    from_list = detector.detect(images)
    stacked = detector.detect(torch.from_numpy(np.stack(images[:3]))[:, None])
    assert len(from_list) == 4 and len(stacked) == 3
    for single, listed in zip(singles, from_list):
        np.testing.assert_allclose(single.keypoints, listed.keypoints, atol=1e-4)
        assert single.image_size == listed.image_size
    for single, batched in zip(singles, stacked):
        np.testing.assert_allclose(single.keypoints, batched.keypoints, atol=1e-4)


def test_inference_is_eval_mode():
    model = UnsuperPoint(SMALL).train()
    KeypointDetector(model, backend="torch")
    assert not model.training


def _blob(height: int, width: int, centre: tuple[float, float], sigma: float = 4.0) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def test_hand_made_model_finds_blob_centre():
    detector = KeypointDetector(CentroidModel(), DetectorConfig(max_keypoints=1, border=0), backend="torch")
    found = detector.detect(_blob(64, 96, (37.3, 21.6)))[0]
    np.testing.assert_allclose(found.keypoints[0], [37.3, 21.6], atol=0.05)


def test_inference_size():
    def size(height, width, inference_width=0, inference_height=0, max_side=0):
        config = DetectorConfig(inference_width=inference_width, inference_height=inference_height,
                                max_inference_side=max_side)
        return inference_size(height, width, config)

    assert size(480, 640) is None
    assert size(480, 640, 640, 480) is None
    assert size(480, 640, 320, 240) == (240, 320)
    assert size(480, 640, 320) == (240, 320)
    assert size(720, 1280, 0, 360) == (360, 640)
    assert size(100, 1000, 80) == (8, 80)
    assert size(3000, 4000, max_side=1280) == (960, 1280)
    assert size(6000, 8000, max_side=1280) == (960, 1280)
    assert size(720, 1280, max_side=1280) is None
    assert size(1080, 1920, 1920, 1080, max_side=1280) == (720, 1280)
    assert size(1000, 30, max_side=64) == (64, 8)


@pytest.mark.parametrize("name", ["inference_width", "inference_height", "max_inference_side"])
def test_inference_sizes_must_be_multiples_of_eight(name):
    assert getattr(DetectorConfig(**{name: 320}), name) == 320
    for value in (-8, 100):
        with pytest.raises(ValueError, match=f"{name} must be a multiple of 8"):
            DetectorConfig(**{name: value})


@pytest.mark.parametrize("width,height", [(48, 32), (40, 48), (192, 128)])
def test_a_smaller_or_larger_inference_size_keeps_points_in_input_pixels(width, height):
    config = DetectorConfig(max_keypoints=1, border=0, inference_width=width, inference_height=height)
    detector = KeypointDetector(CentroidModel(), config, backend="torch")
    centre = (41.3, 29.6)
    image = _blob(64, 96, centre)
    found = detector.detect(image)[0]
    assert found.image_size == (96, 64)
    np.testing.assert_allclose(found.keypoints[0], centre, atol=0.15)
    from_tensor = detector.detect(torch.from_numpy(image)[None])[0]
    np.testing.assert_allclose(from_tensor.keypoints[0], centre, atol=0.15)
    listed = detector.detect([image, _blob(32, 48, (20.2, 11.7))])  # each image at its own inference size
    assert [f.image_size for f in listed] == [(96, 64), (48, 32)]
    np.testing.assert_allclose(listed[1].keypoints[0], (20.2, 11.7), atol=0.15)


def test_border_applies_in_network_pixels():
    image = _image(64, 128)
    config = DetectorConfig(max_keypoints=None, border=8, max_inference_side=64)  # runs at 32 x 64: half size
    found = KeypointDetector(UnsuperPoint(SMALL), config, backend="torch").detect(image)[0]
    assert found.image_size == (128, 64) and len(found) > 0
    # 8 network pixels from the edge are (8 + 0.5) * 2 - 0.5 = 16.5 input pixels
    assert (found.keypoints >= 16.5 - 1e-3).all() and (found.keypoints <= [127 - 16.5, 63 - 16.5]).all()


def _checkpoint(model: UnsuperPoint) -> dict:
    return {"model": model.state_dict(), "config": {"model": dataclasses.asdict(model.config)}, "step": 3}


def test_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(4)
    model = UnsuperPoint(SMALL).eval()
    with torch.no_grad():
        for buffer_name, buffer in model.named_buffers():
            if buffer_name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    path = tmp_path / "run.pt"
    torch.save(_checkpoint(model), path)
    config = DetectorConfig(max_keypoints=25)
    loaded = KeypointDetector.from_pretrained(path, device="cpu", config=config, backend="torch")
    assert loaded.device.type == "cpu" and loaded.model.config == model.config
    expected = KeypointDetector(model, config, backend="torch").detect(_image())[0]
    actual = loaded.detect(_image())[0]
    np.testing.assert_array_equal(expected.keypoints, actual.keypoints)
    np.testing.assert_array_equal(expected.descriptors, actual.descriptors)


def test_from_pretrained_reads_trainer_checkpoints_with_ddp_prefixes(tmp_path):
    model = UnsuperPoint(SMALL)
    state = _checkpoint(model)
    state["model"] = {f"module.{key}": value for key, value in state["model"].items()}
    state["config"]["model"]["widths"] = list(SMALL.widths)  # as a YAML-derived config holds it
    save_checkpoint(tmp_path / "ddp.pt", state)
    assert KeypointDetector.from_pretrained(str(tmp_path / "ddp.pt")).model.config == SMALL


def test_missing_and_corrupt_checkpoints_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        KeypointDetector.from_pretrained(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as error:
        KeypointDetector.from_pretrained(corrupt)
    assert "\n" not in str(error.value) and str(corrupt) in str(error.value)


def test_checkpoints_that_do_not_fit_raise_checkpoint_error(tmp_path):
    torch.save({"optimizer": {}}, tmp_path / "no_model.pt")
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        KeypointDetector.from_pretrained(tmp_path / "no_model.pt")
    state = _checkpoint(UnsuperPoint(SMALL))
    state["config"]["model"]["descriptor_dim"] = 16
    torch.save(state, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError):
        KeypointDetector.from_pretrained(tmp_path / "mismatch.pt")
    state["config"]["model"]["colour"] = True
    torch.save(state, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError):
        KeypointDetector.from_pretrained(tmp_path / "unknown.pt")


def test_missing_bundled_weights_raise_checkpoint_error(tmp_path, monkeypatch):
    monkeypatch.setattr("usp_core.inference.weights.BUNDLED_WEIGHTS", tmp_path / "unsuperpoint.pt")
    with pytest.raises(CheckpointError, match="no bundled weights"):
        KeypointDetector.from_pretrained(None)
    with pytest.raises(CheckpointError, match="no such file"):
        KeypointDetector.from_pretrained("no_such_bundled_name")


def test_weights_resolve_by_name_path_or_bundled(tmp_path, monkeypatch):
    assert resolve_weights(None) == resolve_weights("bundled") == BUNDLED_WEIGHTS
    assert resolve_weights("unsuperpoint_vgg") == BUNDLED_WEIGHTS.parent / "unsuperpoint_vgg.pt"
    assert resolve_weights(tmp_path / "mine.pt") == tmp_path / "mine.pt"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "unsuperpoint_vgg").write_bytes(b"")
    assert resolve_weights("unsuperpoint_vgg") == Path("unsuperpoint_vgg")  # an existing file wins over a name


def test_shipped_models_are_the_weights_folder_default_first(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in ("superpoint", "unsuperpoint_v2", "unsuperpoint", "aardvark"):
        (folder / f"{name}.pt").write_bytes(b"")
    (folder / "unsuperpoint.yaml").write_text("provenance")  # not a model
    monkeypatch.setattr("usp_core.inference.weights.BUNDLED_WEIGHTS", folder / "unsuperpoint.pt")
    assert shipped_models() == ["unsuperpoint", "aardvark", "superpoint", "unsuperpoint_v2"]


def test_cpu_input_steps_give_torchs_values():
    # On the CPU the input steps run in numpy (one thread); they must give what the torch ops give.
    from usp_core.inference.detector import _fit_to_cells, _to_channels, _to_unit_float

    rng = np.random.default_rng(5)
    colour = torch.from_numpy(rng.integers(0, 256, (2, 3, 50, 70), dtype=np.uint8))
    unit = _to_unit_float(colour)
    assert unit.dtype == torch.float32 and torch.equal(unit, colour.float() / 255.0)
    deep = torch.from_numpy(rng.integers(0, 65536, (1, 1, 9, 9), dtype=np.uint16))
    assert torch.equal(_to_unit_float(deep), deep.float() / 65535.0)
    grey = _to_channels(unit, 1, "bgr")
    assert torch.equal(grey, (unit * torch.tensor([0.114, 0.587, 0.299]).view(1, 3, 1, 1)).sum(1, keepdim=True))
    padded, valid = _fit_to_cells(grey, 8, "pad")
    assert valid == (50, 70) and torch.equal(padded, torch.nn.functional.pad(grey, (0, 2, 0, 6), mode="replicate"))

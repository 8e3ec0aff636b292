"""MagicPoint and SuperPoint through the trainer: their datasets' labels, the loss falling, resume, one-line errors."""
import dataclasses
import shutil

import cv2
import numpy as np
import pytest
import torch

from usp_core.geometry.homography import HomographyConfig, warp_points
from usp_core.inference.detector import KeypointDetector
from usp_core.inference.weights import model_from_checkpoint
from usp_core.models.superpoint import DUSTBIN, SuperPoint
from usp_core.support.checkpoint import load_checkpoint
from usp_core.training.config import ConfigError, from_dict
from usp_core.training.data import CropConfig, ImageFolder, PhotometricConfig
from usp_core.training.superpoint_data import (LabelError, LabelledPairDataset, SyntheticConfig, SyntheticShapesDataset,
                                               label_path, read_labels)
from usp_core.training.trainer import Trainer

MODEL = {"architecture": "superpoint", "widths": [8, 8, 16, 16, 16, 16, 32, 32], "descriptor_dim": 16}
QUIET = PhotometricConfig(brightness=0.0, contrast=0.0, noise_std=0.0, blur_probability=0.0)
COMMON = {"batch_size": 4, "val_batches": 1, "checkpoint_interval": 100, "log_interval": 4, "num_workers": 0,
          "model": MODEL, "optimizer": {"lr": 3e-3}, "schedule": {"warmup_steps": 2}}


def _corner_photo(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 72x96 photo of filled rectangles and its rectangle corners (N, 2) pixel (x, y)."""
    rng = np.random.default_rng(seed)
    photo = np.full((72, 96), 30, np.uint8)
    corners = []
    for _ in range(4):
        x, y = (int(v) for v in rng.integers(4, 60, 2))
        w, h = (int(v) for v in rng.integers(8, 30, 2))
        cv2.rectangle(photo, (x, y), (x + w, y + h), int(rng.integers(120, 250)), -1)
        corners += [(x, y), (x + w, y), (x, y + h), (x + w, y + h)]
    return photo, np.asarray(corners, np.float32)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """(photo folder, labels folder): four photos and their corners written as usp-label's files."""
    photos, labels = tmp_path_factory.mktemp("photos"), tmp_path_factory.mktemp("labels")
    for index in range(4):
        photo, corners = _corner_photo(index)
        cv2.imwrite(str(photos / f"{index}.png"), photo)
        target = label_path(labels, photos, photos / f"{index}.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, points=corners)
    return photos, labels


def _labelled_points(labels: torch.Tensor) -> torch.Tensor:
    """(h, w) cell labels -> the labelled pixels (N, 2) (x, y)."""
    rows, cols = torch.nonzero(labels != DUSTBIN, as_tuple=True)
    inner = labels[rows, cols]
    return torch.stack([cols * 8 + inner % 8, rows * 8 + inner // 8], dim=1).float()


def test_synthetic_samples_label_the_rendered_corners_through_the_warp():
    config = SyntheticConfig(warp_probability=1.0)
    dataset = SyntheticShapesDataset(config, (64, 80), HomographyConfig(), QUIET, seed=1, length=10)
    image, labels, valid = dataset[3]
    assert image.shape == (1, 64, 80) and labels.shape == valid.shape == (8, 10)
    assert torch.equal(dataset[3][0], image)  # a pure function of the index
    points = _labelled_points(labels)
    assert len(points) > 0
    response = cv2.cornerMinEigenVal((image[0].numpy() * 255).astype(np.float32), 3)
    inside = np.kron(valid.numpy(), np.ones((8, 8), bool))  # the warp's black border has corners of its own
    strong = response > 0.05 * response[inside].max()
    near = [strong[max(0, y - 2): y + 3, max(0, x - 2): x + 3].any() for x, y in points.long().tolist()]
    assert np.mean(near) >= 0.8


def test_labelled_pairs_carry_the_photo_points_into_both_views(labelled):
    photos, labels = labelled
    folder = ImageFolder(photos)
    dataset = LabelledPairDataset(folder, labels, (48, 64), HomographyConfig(), QUIET, seed=0,
                                  crop=CropConfig("cover", (1.0, 1.5)))
    image_a, image_b, h_ab, labels_a, labels_b, valid_b = dataset[2]
    _, corners = _corner_photo(2)
    _, _, _, photo_to_a, _ = dataset.pairs.views(2)
    expected_a = warp_points(torch.from_numpy(corners), photo_to_a)
    for found, expected in ((_labelled_points(labels_a), expected_a),
                            (_labelled_points(labels_b), warp_points(expected_a, h_ab))):
        assert len(found) > 0
        distance = torch.cdist(found, expected).min(dim=1).values
        assert (distance <= 0.75).all()  # each labelled pixel is a warped corner, rounded
    assert valid_b.dtype == torch.bool and valid_b.any()


def test_a_photo_without_labels_is_refused_at_once(labelled, tmp_path):
    photos, labels = labelled
    with pytest.raises(LabelError, match="have no labels.*run usp-label"):
        LabelledPairDataset(ImageFolder(photos), tmp_path, (48, 64), HomographyConfig(), QUIET, 0, CropConfig())
    cut = tmp_path / "cut"  # a partial copy: one label file truncated
    shutil.copytree(labels, cut)
    damaged = label_path(cut, photos, photos / "2.png")
    damaged.write_bytes(damaged.read_bytes()[:40])
    with pytest.raises(LabelError, match=f"cannot read labels {damaged}"):
        LabelledPairDataset(ImageFolder(photos), cut, (48, 64), HomographyConfig(), QUIET, 0, CropConfig())


def test_magicpoint_loss_falls_and_its_checkpoint_is_a_superpoint(tmp_path):
    config = from_dict({**COMMON, "task": "magicpoint", "image_size": [96, 128], "steps": 40, "val_interval": 20})
    trainer = Trainer(config, tmp_path, device="cpu", progress=False)
    trainer.train()
    totals = [h["points"] for h in trainer.history]
    assert np.mean(totals[-8:]) < 0.6 * np.mean(totals[:4])
    model = model_from_checkpoint(load_checkpoint(tmp_path / "last.pt"), tmp_path / "last.pt")
    assert isinstance(model, SuperPoint)
    detector = KeypointDetector.from_pretrained(tmp_path / "last.pt", backend="torch")
    assert len(detector.detect(np.zeros((48, 64), np.uint8))[0]) > 0


def test_superpoint_trains_on_labelled_pairs_and_resumes_exactly(labelled, tmp_path):
    photos, labels = labelled
    settings = {**COMMON, "task": "superpoint", "data_dir": str(photos), "labels_dir": str(labels),
                "image_size": [48, 64], "val_fraction": 0.25, "steps": 6, "val_interval": 3,
                "superpoint": {"lambda_descriptor": 0.01}}
    config = from_dict(settings)
    whole = Trainer(config, tmp_path / "whole", device="cpu", progress=False)
    whole.train()
    assert {"points", "descriptor", "total"} <= set(whole.history[0])
    first = Trainer(config, tmp_path / "chunks", device="cpu", progress=False)
    first.train(max_steps=3)
    second = Trainer(config, tmp_path / "chunks", device="cpu", progress=False)
    second.resume(tmp_path / "chunks" / "last.pt")
    second.train()
    assert [h["total"] for h in second.history] == [h["total"] for h in whole.history[3:]]


@pytest.mark.parametrize("change, message", [
    ({"task": "magicpoint", "model": {"architecture": "unsuperpoint"}}, "task magicpoint trains model.architecture"),
    ({"task": "unsuperpoint", "model": MODEL}, "task unsuperpoint trains model.architecture unsuperpoint"),
    ({"task": "sift"}, "task must be one of"),
    ({"task": "superpoint", "model": MODEL, "distill": {"teacher": "bundled"}}, "distill.teacher is for task"),
])
def test_task_and_architecture_must_agree(change, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(change)


def test_synthetic_config_round_trips_through_a_checkpoint_dict():
    config = from_dict({"task": "magicpoint", "model": MODEL, "synthetic": {"warp_probability": 0.25}})
    assert from_dict(dataclasses.asdict(config)).synthetic.warp_probability == 0.25


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", None])
def test_a_damaged_label_file_is_a_one_line_label_error(tmp_path, content):
    path = tmp_path / "photo.png.npz"
    if content is None:
        np.savez(path, other=np.zeros(3))  # a valid archive without points
    else:
        path.write_bytes(content)
    with pytest.raises(LabelError, match="cannot read labels") as error:
        read_labels(path)
    assert "\n" not in str(error.value)

"""Image folder listing, photometric noise, siamese homography pairs and the training sampler."""
import itertools
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from usp_core.geometry.homography import HomographyConfig, inside_image, warp_image, warp_points
from usp_core.training.config import ConfigError, from_dict
from usp_core.training.data import (CropConfig, HomographyPairDataset, ImageFolder, InfiniteSampler, PhotometricConfig,
                                    apply_photometric)

NO_NOISE = PhotometricConfig(brightness=0.0, contrast=0.0, noise_std=0.0, blur_sigma=0.0, blur_probability=0.0)


def _texture(height: int, width: int, seed: int, sigma: float = 2.0) -> np.ndarray:
    """Smooth random texture, (H, W) uint8 using the full range."""
    noise = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture()
def photo_folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    _write(root / "a.png", _texture(80, 120, 0))
    _write(root / "sub" / "b.JPG", _texture(90, 110, 1))
    _write(root / "sub" / "deeper" / "c.jpeg", _texture(100, 100, 2))
    _write(root / "small.png", _texture(40, 50, 3))
    (root / "notes.txt").write_text("not an image")
    return root


def test_listing_is_recursive_sorted_and_ignores_other_files(photo_folder: Path):
    folder = ImageFolder(photo_folder)
    names = [p.relative_to(photo_folder).as_posix() for p in folder.paths]
    assert names == ["a.png", "small.png", "sub/b.JPG", "sub/deeper/c.jpeg"]
    image = folder[0]
    assert image.dtype == np.uint8 and image.shape == (80, 120)


def test_unreadable_files_are_skipped_with_one_warning_each(photo_folder: Path, caplog):
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (photo_folder / "sub" / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="usp_core.training.data"):
        folder = ImageFolder(photo_folder)
    assert len(folder) == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert any("broken.jpg" in w for w in warnings) and any("empty.png" in w for w in warnings)


def test_a_photo_damaged_during_a_run_is_skipped_for_the_next_sample(photo_folder: Path, caplog):
    pairs = HomographyPairDataset(ImageFolder(photo_folder), (32, 48), seed=0)
    (photo_folder / "small.png").write_bytes(b"cut short")  # sample 1
    with caplog.at_level(logging.WARNING, logger="usp_core.training.data"):
        sample = pairs[1]
    assert all(torch.equal(got, want) for got, want in zip(sample, pairs[2]))
    assert [r.getMessage() for r in caplog.records if "small.png" in r.getMessage()]
    for path in pairs.images.paths:
        path.write_bytes(b"")
    with pytest.raises(OSError, match="photos in a row are unreadable"):
        pairs[0]


def test_empty_folder_is_a_clear_error(tmp_path: Path):
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no readable images under .*empty"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")


def test_split_is_disjoint_complete_and_seeded(tmp_path: Path):
    for i in range(10):
        _write(tmp_path / f"{i}.png", _texture(16, 16, i))
    folder = ImageFolder(tmp_path)
    train, val = folder.split(0.2, seed=3)
    assert len(val) == 2 and len(train) == 8
    assert set(train.paths).isdisjoint(val.paths)
    assert set(train.paths) | set(val.paths) == set(folder.paths)
    assert folder.split(0.2, seed=3)[1].paths == val.paths
    assert any(folder.split(0.2, seed=s)[1].paths != val.paths for s in range(4, 10))
    assert len(folder.split(0.01, seed=0)[1]) == 1
    assert len(folder.split(0.0, seed=0)[1]) == 0


def test_photometric_noise_is_seeded_bounded_and_off_when_zero():
    image = torch.from_numpy(_texture(32, 48, 5)).float()[None] / 255
    config = PhotometricConfig(blur_probability=1.0)
    first = apply_photometric(image, config, torch.Generator().manual_seed(1))
    again = apply_photometric(image, config, torch.Generator().manual_seed(1))
    other = apply_photometric(image, config, torch.Generator().manual_seed(2))
    assert first.shape == image.shape and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 1e-3
    assert (first - image).abs().mean() > 1e-3
    unchanged = apply_photometric(image, NO_NOISE, torch.Generator().manual_seed(1))
    assert torch.allclose(unchanged, image, atol=1e-6)


def _bilinear(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Sample (1, H, W) at pixel points (N, 2) -> (N,)."""
    height, width = image.shape[-2:]
    grid = (points + 0.5) * 2 / torch.tensor([width, height]) - 1
    return F.grid_sample(image[None], grid[None, None], align_corners=False)[0, 0, 0]


@pytest.mark.parametrize("crop", [CropConfig(), CropConfig("cover", (1.0, 2.0))], ids=["native", "cover"])
def test_pair_geometry_point_in_a_lands_on_same_content_in_b(photo_folder: Path, crop: CropConfig):
    dataset = HomographyPairDataset(ImageFolder(photo_folder), image_size=(48, 64),
                                    homography=HomographyConfig(), photometric=NO_NOISE, seed=0, crop=crop)
    ys, xs = torch.meshgrid(torch.arange(2.0, 46.0, 3), torch.arange(2.0, 62.0, 3), indexing="ij")
    points_a = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    for index in range(len(dataset)):
        image_a, image_b, h_ab = dataset[index]
        assert image_a.shape == image_b.shape == (1, 48, 64) and h_ab.shape == (3, 3)
        assert image_a.dtype == image_b.dtype == h_ab.dtype == torch.float32
        points_b = warp_points(points_a, h_ab)
        keep = inside_image(points_b, 48, 64)
        assert keep.sum() > 50
        matched = (_bilinear(image_b, points_b[keep]) - _bilinear(image_a, points_a[keep])).abs().mean()
        wrong = (_bilinear(image_b, points_a[keep]) - _bilinear(image_a, points_a[keep])).abs().mean()
        assert matched < 0.03, f"sample {index}: content moved, error {matched:.3f}"
        assert wrong > 3 * matched


def test_pair_b_shows_photo_content_beyond_the_crop(photo_folder: Path):
    """B is rendered from the whole photo, so it has less black border than a warp of the crop alone."""
    dataset = HomographyPairDataset(ImageFolder(photo_folder), image_size=(48, 64),
                                    homography=HomographyConfig(max_translation=0.3), photometric=NO_NOISE, seed=0)
    black_b, black_crop_warp = 0.0, 0.0
    for epoch in range(6):
        image_a, image_b, h_ab = dataset[2 + epoch * len(dataset)]  # the 100x100 photo
        black_b += (image_b == 0).float().mean().item()
        black_crop_warp += (warp_image(image_a[None], h_ab[None])[0] == 0).float().mean().item()
    assert black_crop_warp > 0.1
    assert black_b < 0.5 * black_crop_warp


def test_small_photos_are_resized_to_fit_the_crop(photo_folder: Path):
    folder = ImageFolder(photo_folder)
    small = [i for i, p in enumerate(folder.paths) if p.name == "small.png"][0]
    dataset = HomographyPairDataset(folder, image_size=(64, 80), photometric=NO_NOISE, seed=0)
    image_a, _, _ = dataset[small]
    assert image_a.shape == (1, 64, 80)
    assert image_a.std() > 0.05


def test_cover_crop_shows_the_whole_photo_scaled_down(tmp_path: Path):
    photo = _texture(200, 400, 4)
    folder = ImageFolder(tmp_path, [_write(tmp_path / "wide.png", photo)])
    whole = HomographyPairDataset(folder, image_size=(48, 96), photometric=NO_NOISE, crop=CropConfig("cover"))
    expected = cv2.resize(photo, (96, 48), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    assert np.abs(whole[0][0][0].numpy() - expected).max() < 1e-6
    native = HomographyPairDataset(folder, image_size=(48, 96), photometric=NO_NOISE)
    zoomed = HomographyPairDataset(folder, image_size=(48, 96), photometric=NO_NOISE,
                                   crop=CropConfig("cover", (2.0, 2.0)))
    detail = [float(np.abs(np.diff(d[0][0][0].numpy(), axis=1)).mean()) for d in (whole, zoomed, native)]
    assert detail[0] > 1.2 * detail[1] > 1.2 * 1.2 * detail[2]  # the more of the photo, the finer the texture


def test_crop_config_is_checked():
    assert from_dict({"crop": {"resize": "cover", "zoom": [1.0, 1.5]}}).crop == CropConfig("cover", (1.0, 1.5))
    with pytest.raises(ConfigError, match="zoom"):
        from_dict({"crop": {"resize": "cover", "zoom": [0.5, 1.5]}})
    with pytest.raises(ConfigError, match="crop.resize"):
        from_dict({"crop": {"resize": "stretch"}})


def test_pairs_are_a_function_of_seed_and_index(photo_folder: Path):
    folder = ImageFolder(photo_folder)
    dataset = HomographyPairDataset(folder, image_size=(32, 32), seed=5)
    first = dataset[1]
    assert all(torch.equal(x, y) for x, y in zip(first, dataset[1]))
    same_photo_next_epoch = dataset[1 + len(dataset)]
    assert not torch.equal(first[2], same_photo_next_epoch[2])
    other_seed = HomographyPairDataset(folder, image_size=(32, 32), seed=6)[1]
    assert not torch.equal(first[2], other_seed[2])


def test_infinite_sampler_epochs_offsets_and_ranks():
    stream = list(itertools.islice(InfiniteSampler(5, seed=1), 15))
    assert sorted(stream[:5]) == [0, 1, 2, 3, 4]
    assert sorted(stream[5:10]) == [5, 6, 7, 8, 9]
    assert [i % 5 for i in stream[5:10]] != [i % 5 for i in stream[:5]] or \
        [i % 5 for i in stream[10:15]] != [i % 5 for i in stream[:5]]
    resumed = list(itertools.islice(InfiniteSampler(5, seed=1, start=7), 8))
    assert resumed == stream[7:15]
    rank0 = list(itertools.islice(InfiniteSampler(5, seed=1, start=2, rank=0, world_size=2), 4))
    rank1 = list(itertools.islice(InfiniteSampler(5, seed=1, start=2, rank=1, world_size=2), 4))
    assert rank0 == stream[2:10:2] and rank1 == stream[3:11:2]

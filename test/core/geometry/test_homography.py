"""Tests of usp_core.geometry.homography: sampling, point/image warping conventions, inside test, resizing."""
import math

import cv2
import numpy as np
import pytest
import torch

from usp_core.geometry.homography import (HomographyConfig, inside_image, sample_homography, scale_homography,
                                          scaling_matrix, warp_image, warp_points)

STILL = HomographyConfig(max_rotation_deg=0.0, scale_range=(1.0, 1.0), max_skew=0.0, max_perspective=0.0,
                         max_translation=0.0)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_zero_ranges_give_identity():
    homography = sample_homography(48, 64, STILL, _generator())
    assert torch.allclose(homography, torch.eye(3), atol=1e-6)


def test_config_validation_and_yaml_lists():
    assert HomographyConfig(scale_range=[0.5, 2.0]).scale_range == (0.5, 2.0)
    with pytest.raises(ValueError):
        HomographyConfig(scale_range=(0.0, 1.0))
    with pytest.raises(ValueError):
        HomographyConfig(scale_range=(1.2, 0.8))
    with pytest.raises(ValueError):
        HomographyConfig(max_skew=-0.1)


def test_sampling_is_reproducible_and_varied():
    first = sample_homography(48, 64, generator=_generator(3))
    again = sample_homography(48, 64, generator=_generator(3))
    other = sample_homography(48, 64, generator=_generator(4))
    assert first.shape == (3, 3) and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_pure_rotation_turns_about_the_centre():
    config = HomographyConfig(max_rotation_deg=90.0, scale_range=(1.0, 1.0), max_skew=0.0,
                              max_perspective=0.0, max_translation=0.0)
    homography = sample_homography(41, 61, config, _generator(1))
    centre = torch.tensor([[30.0, 20.0]])
    assert torch.allclose(warp_points(centre, homography), centre, atol=1e-4)
    linear = homography[:2, :2]
    assert torch.allclose(linear @ linear.T, torch.eye(2), atol=1e-5)  # a rotation, no zoom or shear


def test_centre_moves_only_by_the_translation_range():
    config = HomographyConfig()
    centre = torch.tensor([[31.5, 23.5]])
    for seed in range(20):
        moved = warp_points(centre, sample_homography(48, 64, config, _generator(seed)))[0]
        assert abs(moved[0] - 31.5) <= 0.1 * 64 + 1e-3
        assert abs(moved[1] - 23.5) <= 0.1 * 48 + 1e-3


def test_default_warps_keep_most_of_the_image_inside():
    height, width = 60, 80
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    grid = torch.stack((xs, ys), -1).reshape(-1, 2)
    for seed in range(20):
        kept = inside_image(warp_points(grid, sample_homography(height, width, generator=_generator(seed))),
                            height, width)
        assert kept.float().mean() > 0.5


def test_warp_then_inverse_returns_the_points():
    points = torch.rand(3, 50, 2) * torch.tensor([320.0, 240.0])
    homographies = torch.stack([sample_homography(240, 320, generator=_generator(s)) for s in range(3)])
    there = warp_points(points, homographies)
    back = warp_points(there, torch.linalg.inv(homographies))
    assert not torch.allclose(there, points, atol=1.0)
    assert torch.allclose(back, points, atol=1e-3)


def test_warp_points_matches_opencv_and_broadcasts():
    homography = sample_homography(240, 320, generator=_generator(7))
    points = torch.rand(2, 30, 2) * 300
    ours = warp_points(points, homography)
    for index in range(2):
        theirs = cv2.perspectiveTransform(points[index].numpy()[None].astype(np.float64),
                                          homography.double().numpy())[0]
        assert np.allclose(ours[index].numpy(), theirs, atol=1e-3)


def test_warp_image_moves_a_dot_where_warp_points_says():
    height, width = 64, 80
    image = torch.zeros(1, 1, height, width)
    image[0, 0, 20, 30] = 1.0
    config = HomographyConfig(max_rotation_deg=20.0, scale_range=(0.9, 1.1), max_skew=0.05,
                              max_perspective=0.05, max_translation=0.1)
    for seed in range(3):
        homography = sample_homography(height, width, config, _generator(seed))
        warped = warp_image(image, homography[None])[0, 0]
        target = warp_points(torch.tensor([[30.0, 20.0]]), homography)[0]
        ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
        centroid = torch.stack(((warped * xs).sum(), (warped * ys).sum())) / warped.sum()
        assert torch.allclose(centroid, target, atol=0.35)


def test_warp_image_matches_cv2_warp_perspective():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.random((48, 64)).astype(np.float32), (0, 0), 2.0)
    homography = sample_homography(48, 64, generator=_generator(5))
    ours = warp_image(torch.from_numpy(image)[None, None], homography[None])[0, 0].numpy()
    theirs = cv2.warpPerspective(image, homography.double().numpy(), (64, 48), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    interior = np.zeros_like(ours, dtype=bool)
    interior[4:-4, 4:-4] = True
    valid = interior & (cv2.warpPerspective(np.ones_like(image), homography.double().numpy(), (64, 48)) > 0.999)
    assert valid.sum() > 500
    assert np.abs(ours - theirs)[valid].max() < 2e-3


def test_warp_image_out_size_and_dtype():
    images = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    warped = warp_image(images, torch.eye(3).expand(2, 3, 3), out_size=(8, 12))
    assert warped.shape == (2, 3, 8, 12) and warped.dtype == torch.float64
    assert torch.allclose(warped, images[:, :, :8, :12], atol=1e-6)


def test_inside_image_bounds():
    points = torch.tensor([[0.0, 0.0], [79.0, 59.0], [-0.01, 5.0], [79.01, 5.0], [5.0, 59.5], [40.0, 30.0]])
    assert inside_image(points, 60, 80).tolist() == [True, True, False, False, False, True]


def test_scaling_matrix_matches_cv2_resize():
    height, width = 40, 50
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    blob = np.exp(-((xs - 17.3) ** 2 + (ys - 22.6) ** 2) / (2 * 2.5 ** 2)).astype(np.float32)
    resized = cv2.resize(blob, (width * 2, height * 3), interpolation=cv2.INTER_LINEAR)
    ry, rx = np.mgrid[0:height * 3, 0:width * 2].astype(np.float32)
    centroid = np.array([(resized * rx).sum(), (resized * ry).sum()]) / resized.sum()
    predicted = warp_points(torch.tensor([[17.3, 22.6]], dtype=torch.float64), scaling_matrix((2.0, 3.0)))[0]
    assert np.allclose(centroid, predicted.numpy(), atol=0.05)


@pytest.mark.parametrize("as_numpy", [True, False])
def test_scale_homography_commutes_with_resizing(as_numpy):
    homography = sample_homography(240, 320, generator=_generator(2)).double()
    scale_src, scale_dst = (0.5, 0.5), (0.25, 0.4)
    given = homography.numpy() if as_numpy else homography
    scaled = scale_homography(given, scale_src, scale_dst)
    assert isinstance(scaled, np.ndarray) == as_numpy
    scaled = torch.as_tensor(scaled)
    points = torch.rand(20, 2, dtype=torch.float64) * 300
    via_scaled = warp_points(warp_points(points, scaling_matrix(scale_src)), scaled)
    via_original = warp_points(warp_points(points, homography), scaling_matrix(scale_dst))
    assert torch.allclose(via_scaled, via_original, atol=1e-6)
    assert math.isclose(float(scaled[2, 2]), 1.0)

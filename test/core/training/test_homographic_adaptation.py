"""Homographic Adaptation: exact identity, the direction of the inverse warp, equivariant detectors keep their
points, a detector tied to pixel positions is averaged down, and points_heatmap's rounding."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from usp_core.models.superpoint import heatmap_points
from usp_core.training.homographic_adaptation import (AdaptationConfig, adapt_heatmap, homographic_adaptation,
                                                      points_heatmap)


def _blobs(size: tuple[int, int], centres: list[tuple[float, float]], sigma: float) -> torch.Tensor:
    """(1, H, W) image of Gaussian blobs of peak 1 at pixel (x, y) centres."""
    ys, xs = torch.meshgrid(torch.arange(size[0]).float(), torch.arange(size[1]).float(), indexing="ij")
    image = torch.zeros(size)
    for x, y in centres:
        image = torch.maximum(image, torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)))
    return image[None]


def _pointwise(images: torch.Tensor) -> torch.Tensor:
    """A detector that is equivariant by construction: the heatmap is the (blob) image itself."""
    return images


def _harris(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 1, H, W) Harris corner response (Sobel gradients, 7x7 Gaussian window, k = 0.05), >= 0."""
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, sobel[None, None]), F.conv2d(padded, sobel.T[None, None])
    taps = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / (2 * 1.5 ** 2))
    window = (taps[:, None] * taps[None, :] / taps.sum() ** 2)[None, None]
    sxx, syy, sxy = (F.conv2d(product, window, padding=3) for product in (gx * gx, gy * gy, gx * gy))
    return (sxx * syy - sxy ** 2 - 0.05 * (sxx + syy) ** 2).clamp(min=0)


def _fixed_spot(images: torch.Tensor) -> torch.Tensor:
    """A detector blind to content: always a spot of peak 1 at pixel (16, 12) of its input."""
    spot = _blobs(tuple(images.shape[-2:]), [(16.0, 12.0)], 1.5)
    return spot[None].expand(len(images), -1, -1, -1)


def _smooth_threshold(images: torch.Tensor) -> torch.Tensor:
    """Some nonlinear detector: a soft threshold of the 3x3 local mean."""
    return torch.sigmoid(8 * (F.avg_pool2d(images, 3, 1, 1) - 0.5))


def test_identity_only_returns_the_detector_heatmap_exactly():
    image = torch.rand(1, 24, 40, generator=torch.Generator().manual_seed(1))
    mean, count = homographic_adaptation(_smooth_threshold, image, AdaptationConfig(num_warps=1))
    assert torch.equal(mean, _smooth_threshold(image[None])[0, 0])
    assert torch.equal(count, torch.ones(24, 40))


def test_a_known_translation_is_warped_back_by_its_inverse_and_eroded_from_the_black_border():
    height, width = 24, 32
    shift = torch.tensor([[1.0, 0.0, 5.0], [0.0, 1.0, 3.0], [0.0, 0.0, 1.0]])  # image -> warp: (x, y) + (5, 3)
    mean, count = adapt_heatmap(_fixed_spot, torch.rand(1, height, width), torch.stack([torch.eye(3), shift]),
                                erosion=2)
    # The warp's valid pixels are x >= 5, y >= 3 (the rest is black border), eroded 2 px from that border only,
    # not from the frame: back in the image, pixels 2 <= x <= W-6 and 2 <= y <= H-4 are seen twice.
    expected_count = torch.ones(height, width)
    expected_count[2:height - 3, 2:width - 5] = 2.0
    assert torch.allclose(count, expected_count, atol=1e-5)
    # The detector's spot at (16, 12) in the warp is the image's (11, 9): averaged with the identity's (16, 12).
    expected = (_fixed_spot(torch.zeros(1, 1, height, width))[0, 0]
                + torch.roll(_fixed_spot(torch.zeros(1, 1, height, width))[0, 0], (-3, -5), (0, 1))
                * (expected_count - 1)) / expected_count
    assert torch.allclose(mean, expected, atol=1e-5)
    assert mean[12, 16] == pytest.approx(0.5, abs=1e-3) and mean[9, 11] == pytest.approx(0.5, abs=1e-3)


def test_an_equivariant_detector_keeps_its_points_and_its_heatmap_where_every_warp_sees():
    corners = [(20.0, 18.0), (55.0, 20.0), (24.0, 45.0), (58.0, 44.0)]
    image = _blobs((64, 80), corners, sigma=2.5)
    config = AdaptationConfig(num_warps=24, batch_size=8)
    mean, count = homographic_adaptation(_pointwise, image, config, torch.Generator().manual_seed(0))
    points, _ = heatmap_points(mean, radius=4, threshold=0.5)
    assert len(points) == len(corners)
    assert np.abs(np.sort(points, axis=0) - np.sort(np.array(corners), axis=0)).max() <= 1.0
    everywhere = count >= config.num_warps - 1e-3
    assert everywhere.float().mean() > 0.2 and count.max() <= config.num_warps + 1e-3
    assert (mean - image[0])[everywhere].abs().max() < 0.1  # two bilinear resamplings of a smooth blob
    again, _ = homographic_adaptation(_pointwise, image, config, torch.Generator().manual_seed(0))
    other, _ = homographic_adaptation(_pointwise, image, config, torch.Generator().manual_seed(1))
    assert torch.equal(mean, again) and not torch.equal(mean, other)


def test_a_corner_detector_peaks_at_the_corners_of_a_rectangle():
    image = torch.zeros(1, 64, 80)
    image[:, 16:48, 20:60] = 1.0  # corners of the lit area at (19.5, 15.5), (59.5, 15.5), (19.5, 47.5), (59.5, 47.5)
    mean, _ = homographic_adaptation(_harris, image, AdaptationConfig(num_warps=16),
                                     torch.Generator().manual_seed(0))
    single = _harris(image[None])[0, 0]
    views, _ = heatmap_points(single, radius=4, threshold=float(0.2 * single.max()))
    corners = np.array([(19.5, 15.5), (59.5, 15.5), (19.5, 47.5), (59.5, 47.5)])
    assert len(views) == 4 and np.linalg.norm(views[:, None] - corners[None], axis=-1).min(axis=0).max() < 0.8
    points, _ = heatmap_points(mean, radius=4, threshold=float(0.2 * mean.max()))
    distances = np.linalg.norm(points[:, None] - views[None], axis=-1)
    assert len(points) == 4 and distances.min(axis=0).max() <= 1.5  # each corner pixel or one of its 8 neighbours


def test_a_detector_blind_to_content_is_averaged_down():
    config = AdaptationConfig(num_warps=24, batch_size=8)
    image = _blobs((48, 64), [(16.0, 12.0)], 1.5)  # the content sits where the blind detector fires
    blind, _ = homographic_adaptation(_fixed_spot, image, config, torch.Generator().manual_seed(0))
    seeing, _ = homographic_adaptation(_pointwise, image, config, torch.Generator().manual_seed(0))
    assert _fixed_spot(image[None])[0, 0, 12, 16] == pytest.approx(1.0)  # what one view reports
    assert blind.max() < 0.35  # scattered over the warps' positions of (16, 12)
    assert seeing[12, 16] > 0.8  # the same response, tied to content, survives


def test_points_heatmap_puts_each_best_score_on_the_nearest_pixel():
    points = np.array([[1.4, 2.6], [1.2, 2.8], [2.5, 0.5], [-0.6, 1.0], [3.49, 3.5], [4.0, 0.0], [0.0, -0.5]])
    scores = np.array([0.5, 0.6, 0.7, 0.9, 0.3, 0.8, 0.4])
    heatmap = points_heatmap(points, scores, (5, 4))
    expected = np.zeros((5, 4), dtype=np.float32)
    expected[3, 1] = 0.6  # (1.4, 2.6) and (1.2, 2.8) share a pixel: the best score
    expected[1, 3] = 0.7  # halves round up
    expected[4, 3] = 0.3
    expected[0, 0] = 0.4  # y = -0.5 rounds up to row 0; (-0.6, 1) and (4, 0) lie outside
    assert heatmap.dtype == np.float32 and np.array_equal(heatmap, expected)


@pytest.mark.parametrize("settings", [{"num_warps": 0}, {"batch_size": 0}, {"erosion": -1}])
def test_config_rejects_bad_numbers(settings):
    with pytest.raises(ValueError):
        AdaptationConfig(**settings)

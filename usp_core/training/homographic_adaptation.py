"""Homographic Adaptation (DeTone et al., SuperPoint, section 5): a detector's heatmap averaged over random warps.

The detector runs on many random homographic warps of one image; each warp's heatmap is warped
back onto the image and the heatmaps are averaged where the warps see the pixel. A response that
follows the image content (a corner) survives the average; one tied to where a pixel sits in the
detector's input (a border artefact, an unstable response) is spread over many places and averaged
down. That is what makes the averaged heatmap a better, more repeatable pseudo-ground-truth.

Aggregation is the mean (the paper's choice; it also mentions the max, not used here), weighted by
how much of each warp covers a pixel: with ``m_k`` a warp's valid mask (eroded by
``AdaptationConfig.erosion`` px) and ``h_k`` its heatmap, both warped back bilinearly,
``mean = sum_k warp_back(h_k m_k) / sum_k warp_back(m_k)``. Inside a warp's view the weight is 1;
at the edge of its view bilinear resampling gives a fractional weight, so the mean stays a convex
combination of detector outputs there too. The identity is always the first warp and is neither
resampled nor eroded: every pixel has a count of at least 1, and one warp returns the detector's
heatmap exactly.

Coordinates follow usp_core.geometry.homography: pixel (x, y) = (column, row), ``H`` maps the image to its warp.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from usp_core.geometry.homography import HomographyConfig, sample_homography, warp_image

__all__ = ["AdaptationConfig", "adapt_heatmap", "adaptation_homographies", "homographic_adaptation", "points_heatmap"]

VALID_LEVEL = 0.999  # a warped pixel is valid when the warped all-ones image is at least this (fully inside the source)


def _adaptation_homographies() -> HomographyConfig:
    """The warp ranges of Homographic Adaptation.

    Moderate, so that most warps see most of the image and the detector stays in the range of
    viewpoints it was trained for: +-25 deg rotation (at 90 deg, as some reimplementations allow, a
    4:3 image loses about a quarter of its area, mostly its corners), zoom 0.8-1.25 log-uniform
    (symmetric in and out), perspective 0.15 (the homogeneous denominator changes by up to 15 %
    at the border: a tilted view) and a 5 % shift (16 px at 320 wide: two 8-px detector cells, all a
    cell-based detector needs to see each point at every position in its cell); no shear (the
    paper's warps are translation, scale, rotation and perspective). Measured at 240x320 with 100
    warps (erosion 3): a pixel is seen by 84 % of the warps on average, 91 % of the pixels by at least
    half of them; only the outer few pixels, where the decoder drops points anyway, are seen by few.
    """
    return HomographyConfig(max_rotation_deg=25.0, scale_range=(0.8, 1.25), max_skew=0.0, max_perspective=0.15,
                            max_translation=0.05)


@dataclass
class AdaptationConfig:
    """Settings of :func:`homographic_adaptation`."""

    num_warps: int = 100  # warps in all, the identity first (the paper's N_h = 100: 99 random + the identity)
    homography: HomographyConfig = field(default_factory=_adaptation_homographies)  # random warp ranges, see above
    batch_size: int = 16  # warps per detector call (memory: batch_size images of the input size)
    erosion: int = 3  # px eroded from each random warp's valid mask: the detector fires on the edge of the black border

    def __post_init__(self) -> None:
        if self.num_warps < 1 or self.batch_size < 1:
            raise ValueError(f"num_warps and batch_size must be >= 1, got {self.num_warps} and {self.batch_size}")
        if self.erosion < 0:
            raise ValueError(f"erosion must be >= 0, got {self.erosion}")


def adaptation_homographies(height: int, width: int, config: AdaptationConfig,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """(num_warps, 3, 3) float32 homographies, image -> warp: the identity, then num_warps - 1 random ones."""
    warps = [torch.eye(3)]
    warps += [sample_homography(height, width, config.homography, generator) for _ in range(config.num_warps - 1)]
    return torch.stack(warps)


def _erode(valid: torch.Tensor, erosion: int) -> torch.Tensor:
    """(B, 1, H, W) {0, 1} mask eroded by ``erosion`` px (square window, separable).

    Only the zeros eat into the mask: the frame is not eroded (max-pool pads with -inf).
    """
    if erosion <= 0:
        return valid
    invalid = F.max_pool2d(1.0 - valid, kernel_size=(1, 2 * erosion + 1), stride=1, padding=(0, erosion))
    invalid = F.max_pool2d(invalid, kernel_size=(2 * erosion + 1, 1), stride=1, padding=(erosion, 0))
    return 1.0 - invalid


def _is_identity(homographies: torch.Tensor) -> torch.Tensor:
    """(B,) bool: which of (B, 3, 3) homographies are exactly the identity."""
    eye = torch.eye(3, dtype=homographies.dtype, device=homographies.device)
    return (homographies == eye).flatten(1).all(dim=1)


def _warp_batch(heatmap_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                homographies: torch.Tensor, erosion: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of warps: (sum of masked heatmaps warped back (H, W), sum of masks warped back (H, W))."""
    identity = _is_identity(homographies)
    stacked = torch.cat([image, torch.ones_like(image[:1])])[None].expand(len(homographies), -1, -1, -1)
    warped = warp_image(stacked, homographies)  # image and its all-ones mask in one resampling
    images, masks = warped[:, :-1], _erode((warped[:, -1:] >= VALID_LEVEL).float(), erosion)
    images[identity], masks[identity] = image, 1.0  # exact: no resampling, no erosion
    heatmaps = heatmap_fn(images.contiguous()).float() * masks
    inverse = torch.linalg.inv(homographies.double()).float()
    back = warp_image(torch.cat([heatmaps, masks], dim=1), inverse)
    back[identity] = torch.cat([heatmaps, masks], dim=1)[identity]
    back, seen = back[:, :1], back[:, 1:]
    return back.sum(dim=0)[0], seen.sum(dim=0)[0]


@torch.no_grad()
def adapt_heatmap(heatmap_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, homographies: torch.Tensor,
                  batch_size: int = 16, erosion: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Homographic Adaptation over given warps (see the module docstring).

    image (C, H, W) float in [0, 1]; homographies (N, 3, 3) image -> warp (an exact identity is not
    resampled nor eroded); heatmap_fn maps (B, C, H, W) images -> (B, 1, H, W) heatmaps.
    Returns (mean heatmap (H, W) float32, count (H, W) float32: how many warps saw each pixel,
    fractional at the edge of a warp's view); the mean is 0 where the count is 0.
    """
    homographies = homographies.to(device=image.device, dtype=torch.float32)
    total = torch.zeros(image.shape[-2:], device=image.device)
    count = torch.zeros_like(total)
    for start in range(0, len(homographies), batch_size):
        back, seen = _warp_batch(heatmap_fn, image, homographies[start:start + batch_size], erosion)
        total += back
        count += seen
    mean = torch.where(count > 0, total / count.clamp(min=torch.finfo(count.dtype).tiny), torch.zeros_like(total))
    return mean, count


def homographic_adaptation(heatmap_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                           config: AdaptationConfig | None = None,
                           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Homographic Adaptation of one image over ``config.num_warps`` warps, the identity first.

    image (1, H, W) float in [0, 1] (any channel count works); heatmap_fn maps (B, 1, H, W) images ->
    (B, 1, H, W) heatmaps. Returns (mean heatmap (H, W), count (H, W): how many warps saw each pixel).
    The warps are drawn from ``generator`` (a seeded CPU generator makes the result reproducible).
    """
    config = config if config is not None else AdaptationConfig()
    height, width = image.shape[-2:]
    homographies = adaptation_homographies(height, width, config, generator)
    return adapt_heatmap(heatmap_fn, image, homographies, config.batch_size, config.erosion)


def points_heatmap(points: np.ndarray, scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A sparse (H, W) float32 heatmap from scored points (for detectors that give points, not heatmaps).

    points (N, 2) pixel (x, y), scores (N,), size (H, W). Each point lands on the pixel whose centre
    is nearest, ``floor(x + 0.5)`` (halves round up, towards +inf); points whose pixel lies outside
    the image are dropped; where several land on one pixel, the best score is kept. Elsewhere 0
    (scores are taken to be >= 0).
    """
    height, width = size
    heatmap = np.zeros((height, width), dtype=np.float32)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(points) != len(scores):
        raise ValueError(f"points and scores differ in length: {len(points)} and {len(scores)}")
    finite = np.isfinite(points).all(axis=1)
    pixels = np.floor(points[finite] + 0.5).astype(np.int64)
    scores = scores[finite]
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
    np.maximum.at(heatmap, (pixels[inside, 1], pixels[inside, 0]), scores[inside])
    return heatmap

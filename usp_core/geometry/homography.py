"""Homography geometry: random sampling, point and image warping, resizing. Pure functions on tensors.

Pixel coordinates follow OpenCV: ``(x, y) = (column, row)``, the centre of the top-left pixel is
``(0, 0)``, and a homography ``H`` maps a source pixel ``p`` to ``H p`` (homogeneous) in the target.
This is the convention of ``cv2.warpPerspective``, ``cv2.findHomography`` and the HPatches ``H_1_k``
files, so their homographies are used here unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "HomographyConfig",
    "sample_homography",
    "warp_points",
    "warp_image",
    "inside_image",
    "scaling_matrix",
    "scale_homography",
]


@dataclass
class HomographyConfig:
    """Ranges of the random homography; every parameter is drawn uniformly in [-max, max] (scale in its range).

    All components act about the image centre, which therefore moves only by the translation: with
    the defaults the centre stays within 10 % of the image size of where it was and the warped image
    covers most of the output.
    """

    max_rotation_deg: float = 30.0  # in-plane rotation angle, degrees
    scale_range: tuple[float, float] = (0.8, 1.2)  # isotropic zoom factor, drawn log-uniformly
    max_skew: float = 0.1  # shear x += skew * y (and y += skew * x), unitless
    max_perspective: float = 0.1  # change of the homogeneous denominator at the image border (x and y separately)
    max_translation: float = 0.1  # shift as a fraction of width (x) and height (y)

    def __post_init__(self) -> None:
        self.scale_range = (float(self.scale_range[0]), float(self.scale_range[1]))
        if not 0.0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        maxima = (self.max_rotation_deg, self.max_skew, self.max_perspective, self.max_translation)
        if min(maxima) < 0.0:
            raise ValueError(f"rotation, skew, perspective and translation maxima must be >= 0, got {maxima}")


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    """One float drawn uniformly in [low, high]."""
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _translation(tx: float, ty: float) -> torch.Tensor:
    """(3, 3) float64 translation by (tx, ty)."""
    return torch.tensor([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)


def sample_homography(height: int, width: int, config: HomographyConfig | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Random homography for an image of (height, width) pixels: (3, 3) float32, source -> target pixels.

    Composition, in coordinates centred on the image centre ``c = ((W-1)/2, (H-1)/2)``:
    ``H = T(c) T(t) P K R S T(-c)`` with S the zoom, R the rotation, K the shear, P the perspective
    row ``(p_x / (W/2), p_y / (H/2), 1)`` (resolution independent) and t the translation.
    Pass a seeded ``torch.Generator`` for reproducible draws.
    """
    config = config if config is not None else HomographyConfig()
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    log_low, log_high = math.log(config.scale_range[0]), math.log(config.scale_range[1])
    scale = math.exp(_uniform(log_low, log_high, generator))
    angle = math.radians(_uniform(-config.max_rotation_deg, config.max_rotation_deg, generator))
    skew_x = _uniform(-config.max_skew, config.max_skew, generator)
    skew_y = _uniform(-config.max_skew, config.max_skew, generator)
    persp_x = _uniform(-config.max_perspective, config.max_perspective, generator) / (width / 2.0)
    persp_y = _uniform(-config.max_perspective, config.max_perspective, generator) / (height / 2.0)
    tx = _uniform(-config.max_translation, config.max_translation, generator) * width
    ty = _uniform(-config.max_translation, config.max_translation, generator) * height

    cos, sin = math.cos(angle), math.sin(angle)
    zoom = torch.diag(torch.tensor([scale, scale, 1.0], dtype=torch.float64))
    rotation = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    shear = torch.tensor([[1.0, skew_x, 0.0], [skew_y, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    perspective = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [persp_x, persp_y, 1.0]], dtype=torch.float64)
    centred = _translation(tx, ty) @ perspective @ shear @ rotation @ zoom
    homography = _translation(cx, cy) @ centred @ _translation(-cx, -cy)
    return (homography / homography[2, 2]).to(torch.float32)


def warp_points(points: torch.Tensor, homography: torch.Tensor) -> torch.Tensor:
    """Apply homographies to points: points (..., N, 2), homography (..., 3, 3) -> (..., N, 2).

    Leading dimensions broadcast. Points mapped to the line at infinity get a tiny denominator of
    the right sign instead of a division by zero.
    """
    homography = homography.to(points.dtype)
    projected = points @ homography[..., :2, :2].transpose(-1, -2) + homography[..., None, :2, 2]
    denominator = points @ homography[..., 2:, :2].transpose(-1, -2) + homography[..., None, 2:, 2]
    eps = torch.finfo(points.dtype).eps
    safe = torch.where(denominator >= 0, denominator.clamp(min=eps), denominator.clamp(max=-eps))
    return projected / safe


def warp_image(images: torch.Tensor, homography: torch.Tensor,
               out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Warp images (B, C, H, W) by homographies (B, 3, 3) mapping source to output pixels.

    Each output pixel ``q`` samples the source bilinearly at ``H^-1 q`` (``grid_sample`` with
    ``align_corners=False`` and the half-pixel shift of the pixel-centre convention); outside the
    source it reads 0. ``out_size`` = (H_out, W_out), default the input size. Returns (B, C, H_out, W_out).
    """
    batch, _, height, width = images.shape
    out_h, out_w = out_size if out_size is not None else (height, width)
    dtype = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
    ys = torch.arange(out_h, device=images.device, dtype=dtype)
    xs = torch.arange(out_w, device=images.device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    targets = torch.stack((grid_x, grid_y), dim=-1).reshape(1, -1, 2)
    inverse = torch.linalg.inv(homography.to(device=images.device, dtype=torch.float64)).to(dtype)
    sources = warp_points(targets, inverse)
    size = torch.tensor([width, height], device=images.device, dtype=dtype)
    grid = ((sources + 0.5) * 2.0 / size - 1.0).reshape(batch, out_h, out_w, 2)
    warped = F.grid_sample(images.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped.to(images.dtype)


def inside_image(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Whether points (..., N, 2) lie inside an image: bool (..., N).

    Inside means within the hull of the pixel centres, ``0 <= x <= W-1`` and ``0 <= y <= H-1``,
    where bilinear sampling needs no padding.
    """
    x, y = points[..., 0], points[..., 1]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def scaling_matrix(scale: tuple[float, float]) -> torch.Tensor:
    """(3, 3) float64 map from pixels of an image to pixels of its copy resized by (sx, sy).

    Uses the pixel-centre convention of ``cv2.resize`` and ``F.interpolate(align_corners=False)``:
    ``x' = (x + 0.5) sx - 0.5``.
    """
    sx, sy = float(scale[0]), float(scale[1])
    return torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


def scale_homography(homography: torch.Tensor | np.ndarray, scale_src: tuple[float, float],
                     scale_dst: tuple[float, float]) -> torch.Tensor | np.ndarray:
    """Homography between resized copies: ``S_dst H S_src^-1``, (..., 3, 3).

    ``homography`` maps source to target pixels; the source image is resized by ``scale_src`` =
    (new_w / old_w, new_h / old_h) and the target by ``scale_dst``. Numpy in, numpy out (float64);
    a tensor keeps its dtype and device.
    """
    as_numpy = isinstance(homography, np.ndarray)
    tensor = torch.as_tensor(homography)
    src = scaling_matrix(scale_src).to(tensor.device)
    dst = scaling_matrix(scale_dst).to(tensor.device)
    scaled = dst @ tensor.to(torch.float64) @ torch.linalg.inv(src)
    scaled = scaled / scaled[..., 2:, 2:]
    return scaled.numpy() if as_numpy else scaled.to(tensor.dtype)

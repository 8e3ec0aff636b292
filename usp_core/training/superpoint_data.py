"""Training samples for MagicPoint and SuperPoint, with their points as 65-way cell labels.

- :class:`SyntheticShapesDataset`: a Synthetic Shapes image (usp_core.training.synthetic_shapes), randomly
  warped and photometrically changed, with its corners as labels: MagicPoint's data.
- :class:`LabelledPairDataset`: the siamese photo pairs of UnsuperPoint (usp_core.training.data), each photo's
  pseudo-ground-truth points (written by ``usp-label``, Homographic Adaptation) carried into both
  views: SuperPoint's data.

Like every dataset here, a sample is a pure function of (seed, index): resumed runs see the same data.
"""
from __future__ import annotations

import dataclasses
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from usp_core.geometry.homography import HomographyConfig, sample_homography, warp_image, warp_points
from usp_core.models.superpoint import CELL, cell_labels
from usp_core.support.errors import first_line
from usp_core.training.data import (CropConfig, HomographyPairDataset, ImageFolder, PhotometricConfig,
                                    apply_photometric, first_readable, sample_generator)
from usp_core.training.synthetic_shapes import ShapesConfig, render_shapes

__all__ = ["LabelError", "label_path", "read_labels", "valid_cells", "SyntheticShapesDataset", "LabelledPairDataset",
           "SyntheticConfig"]

LABEL_SUFFIX = ".npz"


class LabelError(ValueError):
    """A photo has no readable pseudo-label file."""


@dataclass
class SyntheticConfig:
    """MagicPoint's data: Synthetic Shapes (``shapes``) and the chance that a sample is randomly warped."""

    shapes: ShapesConfig = field(default_factory=ShapesConfig)  # renderer settings (image_size: the run's)
    warp_probability: float = 0.5  # fraction of samples warped by a random homography (the rest as rendered)

    def __post_init__(self) -> None:
        if not 0.0 <= self.warp_probability <= 1.0:
            raise ValueError(f"warp_probability must be in [0, 1], got {self.warp_probability}")


def label_path(labels_dir: str | Path, data_root: str | Path, photo: str | Path) -> Path:
    """Where the labels of ``photo`` (a file under ``data_root``) live: labels_dir/<relative path>.npz.

    Paths are made absolute without resolving links, so a folder of links to photos works.
    """
    relative = Path(os.path.abspath(photo)).relative_to(os.path.abspath(data_root))
    return Path(labels_dir) / relative.with_name(relative.name + LABEL_SUFFIX)


def read_labels(path: Path) -> np.ndarray:
    """The points (N, 2) float32 pixel (x, y) of a label file. Raises LabelError, one line."""
    try:
        with np.load(path, allow_pickle=False) as data:
            points = np.asarray(data["points"], dtype=np.float32)
    except FileNotFoundError as error:
        raise LabelError(f"no labels for a training photo: {path} is missing (run usp-label first)") from error
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:  # missing key, truncated, empty
        raise LabelError(f"cannot read labels {path}: {first_line(error)}") from error
    if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise LabelError(f"cannot read labels {path}: points must be finite (N, 2), got {points.shape}")
    return points


def valid_cells(mask: torch.Tensor) -> torch.Tensor:
    """(1, H, W) pixel mask in [0, 1] -> (H/8, W/8) bool: cells whose pixels all show image content."""
    return (-F.max_pool2d(-mask[None], CELL))[0, 0] > 0.99


class SyntheticShapesDataset(Dataset):
    """(image (1, H, W) float32 in [0, 1], labels (H/8, W/8) int64, valid (H/8, W/8) bool).

    Images are rendered at ``image_size`` (H, W), whatever ``config.shapes.image_size`` says;
    ``length`` sets how many distinct samples an epoch has (any index is valid: it renders anew).
    """

    def __init__(self, config: SyntheticConfig, image_size: tuple[int, int], homography: HomographyConfig,
                 photometric: PhotometricConfig, seed: int, length: int) -> None:
        self.shapes = dataclasses.replace(config.shapes, image_size=tuple(image_size))
        self.config, self.homography, self.photometric = config, homography, photometric
        self.seed, self.length = seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        generator = sample_generator(self.seed, index)
        seed = int(torch.randint(2 ** 62, (), generator=generator))
        picture, points = render_shapes(seed, self.shapes)
        image = torch.from_numpy(picture).float().div_(255.0)[None]
        points = torch.from_numpy(points)
        mask = torch.ones_like(image)
        if float(torch.rand((), generator=generator)) < self.config.warp_probability:
            height, width = image.shape[-2:]
            homography = sample_homography(height, width, self.homography, generator=generator)
            image = warp_image(image[None], homography[None])[0]
            mask = warp_image(mask[None], homography[None])[0]
            points = warp_points(points, homography)
        image = apply_photometric(image, self.photometric, generator)
        return image.contiguous(), cell_labels(points, tuple(image.shape[-2:]), generator), valid_cells(mask)


class LabelledPairDataset(Dataset):
    """(image_a, image_b (1, H, W), H_ab (3, 3), labels_a, labels_b (H/8, W/8) int64, valid_b (H/8, W/8) bool).

    The pairs of :class:`usp_core.training.data.HomographyPairDataset`; labels from ``labels_dir`` (see
    :func:`label_path`). Every photo must have a readable label file: checked at construction.
    """

    def __init__(self, images: ImageFolder, labels_dir: str | Path, image_size: tuple[int, int],
                 homography: HomographyConfig, photometric: PhotometricConfig, seed: int, crop: CropConfig) -> None:
        self.pairs = HomographyPairDataset(images, image_size, homography, photometric, seed=seed, crop=crop)
        self.labels = [label_path(labels_dir, images.root, photo) for photo in images.paths]
        missing = [path for path in self.labels if not path.is_file()]
        if missing:
            raise LabelError(f"{len(missing)} of {len(self.labels)} photos have no labels under {labels_dir} "
                             f"(first: {missing[0]}); run usp-label first")
        for path in self.labels:  # a truncated or empty file (a partial copy) fails here, not mid-run
            read_labels(path)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return first_readable(index, self._sample)  # a photo and its labels skipped together

    def _sample(self, index: int) -> tuple[torch.Tensor, ...]:
        image_a, image_b, h_ab, photo_to_a, shown_b = self.pairs.views(index)
        generator = sample_generator(self.seed, index, stream=2)
        points = torch.from_numpy(read_labels(self.labels[index % len(self.labels)]))
        size = tuple(image_a.shape[-2:])
        in_a = warp_points(points, photo_to_a)
        in_b = warp_points(in_a, h_ab)
        return (image_a, image_b, h_ab, cell_labels(in_a, size, generator), cell_labels(in_b, size, generator),
                valid_cells(shown_b))

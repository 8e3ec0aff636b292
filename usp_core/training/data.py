"""Training data: a folder of photos, photometric noise, and siamese homography pairs.

A training sample is a pair of grey images: branch A is a random crop of a photo, branch B is
the same view seen through a random homography ``H_ab`` (A pixels -> B pixels). B is rendered
from the whole (resized) photo rather than from the crop, so B shows real content wherever the
warped view leaves the crop; only views that leave the photo itself get black borders.
Independent photometric noise is applied to each branch.

Every random draw for sample ``index`` comes from its own generator seeded by ``(seed, index)``,
so a sample is a pure function of its index: a resumed run sees exactly the samples an
uninterrupted one would. Indices beyond ``len(dataset)`` are valid (image ``index % len``, fresh
randomness), which lets the training sampler draw new augmentations every epoch.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence, TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from usp_core.geometry.homography import HomographyConfig, sample_homography, scaling_matrix, warp_image
from usp_core.support.errors import first_line
from usp_core.support.image_files import IMAGE_EXTENSIONS, decodes, read_grey

__all__ = [
    "ImageFolder",
    "CropConfig",
    "PhotometricConfig",
    "apply_photometric",
    "HomographyPairDataset",
    "InfiniteSampler",
    "sample_generator",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
READ_ATTEMPTS = 8  # samples tried in turn when photos became unreadable during a run


def _is_readable(path: Path) -> bool:
    """True when OpenCV decodes ``path``."""
    try:
        return decodes(path.read_bytes())
    except OSError:
        return False


class ImageFolder:
    """The readable images under a folder, searched recursively, in sorted order.

    Files with an extension in ``IMAGE_EXTENSIONS`` (any case) are listed and each is test-decoded
    once; unreadable ones are skipped with one warning each.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no readable image was found under ``root``.
    """

    def __init__(self, root: str | Path, paths: Sequence[Path] | None = None):
        self.root = Path(root)
        if paths is None:
            paths = self._scan(self.root)
        self.paths: list[Path] = list(paths)

    @staticmethod
    def _scan(root: Path) -> list[Path]:
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        candidates = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        readable = []
        for path in candidates:
            if _is_readable(path):
                readable.append(path)
            else:
                logger.warning("skipping unreadable image %s", path)
        if not readable:
            raise ValueError(
                f"no readable images under {root} (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)"
            )
        return readable

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        """The image at ``index``, (H, W) uint8 grey. Raises OSError when it became unreadable after the scan."""
        return read_grey(self.paths[index])

    def split(self, val_fraction: float, seed: int) -> tuple["ImageFolder", "ImageFolder"]:
        """Split into (train, validation) folders by a seeded shuffle.

        The validation part holds ``round(val_fraction * len)`` images, at least one when
        ``val_fraction > 0``, and the training part keeps at least one image.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        count = len(self.paths)
        num_val = round(val_fraction * count)
        if val_fraction > 0:
            num_val = max(1, num_val)
        if count - num_val < 1:
            raise ValueError(f"cannot hold out {num_val} of {count} images for validation")
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
        val_idx, train_idx = sorted(order[:num_val]), sorted(order[num_val:])
        train = ImageFolder(self.root, [self.paths[i] for i in train_idx])
        val = ImageFolder(self.root, [self.paths[i] for i in val_idx])
        return train, val


@dataclass
class PhotometricConfig:
    """Photometric noise ranges, drawn independently for each branch (intensities in [0, 1])."""

    brightness: float = 0.2  # additive offset drawn from U(-brightness, brightness)
    contrast: float = 0.3  # gain about the image mean drawn from U(1 - contrast, 1 + contrast)
    noise_std: float = 0.02  # Gaussian pixel noise with std drawn from U(0, noise_std)
    blur_sigma: float = 1.0  # Gaussian blur with sigma drawn from U(0, blur_sigma) ...
    blur_probability: float = 0.3  # ... applied with this probability


@dataclass
class CropConfig:
    """How a photo is scaled before the training crop is cut from it.

    "native" cuts the crop from the photo at its own resolution (enlarging only a photo smaller
    than the crop), so a small crop sees a small part of a large photo. "cover" first scales the
    photo until it just covers the crop (aspect kept), then by a zoom drawn log-uniformly from
    ``zoom``: the crop then shows most of the scene, as a whole frame resized for inference does.
    """

    resize: Literal["native", "cover"] = "native"  # see the class docstring
    zoom: tuple[float, float] = (1.0, 1.0)  # with "cover": extra scale range, log-uniform, >= 1 keeps the crop covered

    def __post_init__(self):
        low, high = self.zoom
        if not 1.0 <= low <= high:
            raise ValueError(f"zoom must satisfy 1 <= low <= high, got {list(self.zoom)}")


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (C, H, W) with reflect padding."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[0]
    batch = image[None]
    batch = F.pad(batch, (radius, radius, radius, radius), mode="reflect")
    batch = F.conv2d(batch, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    batch = F.conv2d(batch, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return batch[0]


def apply_photometric(image: torch.Tensor, config: PhotometricConfig, generator: torch.Generator) -> torch.Tensor:
    """Random contrast, brightness, blur and noise. image (C, H, W) in [0, 1] -> (C, H, W) in [0, 1].

    All draws happen in a fixed order whatever the config, so changing one range does not shift
    the random stream of the others.
    """
    gain = _uniform(1 - config.contrast, 1 + config.contrast, generator)
    offset = _uniform(-config.brightness, config.brightness, generator)
    sigma = _uniform(0.0, config.blur_sigma, generator)
    do_blur = torch.rand((), generator=generator).item() < config.blur_probability
    noise_std = _uniform(0.0, config.noise_std, generator)
    noise = torch.randn(image.shape, generator=generator, dtype=image.dtype)

    mean = image.mean()
    image = (image - mean) * gain + mean + offset
    if do_blur and sigma > 0.05:
        image = _gaussian_blur(image, sigma)
    image = image + noise * noise_std
    return image.clamp(0.0, 1.0)


def sample_generator(seed: int, index: int, stream: int = 0) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, index, stream)`` (mixed by SeedSequence).

    ``stream`` separates unrelated uses of the same (seed, index), e.g. samples and epoch shuffles.
    """
    state = np.random.SeedSequence([seed, index, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _translation(tx: float, ty: float) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


class HomographyPairDataset(Dataset):
    """Siamese pairs ``(image_a (1, H, W), image_b (1, H, W), H_ab (3, 3))``, float32, images in [0, 1].

    ``image_size`` is (H, W) of both branches. A photo smaller than the crop is first resized
    (aspect kept) so that the crop fits. ``H_ab`` maps branch-A pixels to branch-B pixels:
    ``image_b(H_ab p) = image_a(p)`` up to photometric noise.
    """

    def __init__(
        self,
        images: ImageFolder,
        image_size: tuple[int, int] = (240, 320),
        homography: HomographyConfig | None = None,
        photometric: PhotometricConfig | None = None,
        seed: int = 0,
        crop: CropConfig | None = None,
    ):
        self.images = images
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.homography = homography if homography is not None else HomographyConfig()
        self.photometric = photometric if photometric is not None else PhotometricConfig()
        self.seed = seed
        self.crop = crop if crop is not None else CropConfig()

    def __len__(self) -> int:
        return len(self.images)

    def _fit(self, photo: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, torch.Tensor]:
        """Scale (H, W) uint8, aspect kept, per ``self.crop``; the result always covers the crop size.

        Returns the scaled photo and the (3, 3) float32 map from the photo's pixels to its pixels.
        """
        height, width = self.image_size
        cover = max(height / photo.shape[0], width / photo.shape[1])
        if self.crop.resize == "native":
            scale = max(cover, 1.0)
        else:
            low, high = self.crop.zoom
            scale = cover * math.exp(_uniform(math.log(low), math.log(high), generator))
        if scale == 1.0:
            return photo, torch.eye(3)
        size = (max(width, math.ceil(photo.shape[1] * scale)), max(height, math.ceil(photo.shape[0] * scale)))
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        scaling = scaling_matrix((size[0] / photo.shape[1], size[1] / photo.shape[0])).float()
        return cv2.resize(photo, size, interpolation=interpolation), scaling

    def views(self, index: int) -> tuple[torch.Tensor, ...]:
        """Sample ``index`` with where it came from: (image_a, image_b, H_ab, photo_to_a (3, 3), shown_b (1, H, W)).

        ``photo_to_a`` maps pixels of the photo as stored on disk to branch-A pixels; ``shown_b`` is
        1 where branch B shows the photo, 0 where its view left the photo (bilinear in between).
        """
        generator = sample_generator(self.seed, index)
        photo, photo_to_fit = self._fit(self.images[index % len(self.images)], generator)
        height, width = self.image_size
        top = int(torch.randint(photo.shape[0] - height + 1, (), generator=generator))
        left = int(torch.randint(photo.shape[1] - width + 1, (), generator=generator))
        full = torch.from_numpy(photo).float().div_(255.0)[None]
        image_a = full[:, top : top + height, left : left + width]

        h_ab = sample_homography(height, width, self.homography, generator=generator).float()
        crop = _translation(-left, -top)
        photo_to_b = h_ab @ crop
        with_mask = torch.cat([full, torch.ones_like(full)])[None]  # the photo and where it is, in one resampling
        image_b, shown_b = warp_image(with_mask, photo_to_b[None], out_size=(height, width))[0].split(1)

        image_a = apply_photometric(image_a, self.photometric, generator)
        image_b = apply_photometric(image_b, self.photometric, generator)
        return image_a.contiguous(), image_b.contiguous(), h_ab, crop @ photo_to_fit, shown_b

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return first_readable(index, lambda readable: self.views(readable)[:3])


def first_readable(index: int, sample: Callable[[int], T]) -> T:
    """``sample(index)``, else ``sample(index + 1)``, ... : a photo that became unreadable after the folder was scanned
    (replaced or cut while a run reads it) is logged and the next sample taken, so a run goes on; OSError when
    READ_ATTEMPTS in a row fail (the folder is gone)."""
    for offset in range(READ_ATTEMPTS):
        try:
            return sample(index + offset)
        except OSError as error:
            logger.warning("skipping a sample: %s", first_line(error))
    raise OSError(f"{READ_ATTEMPTS} photos in a row are unreadable (samples {index}-{index + READ_ATTEMPTS - 1})")


class InfiniteSampler(Sampler[int]):
    """Endless sample indices, reshuffled every epoch, sharded by rank, able to start at any point.

    Plays the role of ``DistributedSampler`` for training, with two differences that exact resume
    needs: it can start after ``start`` samples already drawn (over all ranks), and the index it
    yields for epoch ``e`` is ``e * size + perm_e[i]``, so every epoch gets fresh augmentation from
    ``HomographyPairDataset`` while the photo order stays a seeded permutation. Global sample ``k``
    goes to rank ``k % world_size``.
    """

    def __init__(self, size: int, seed: int = 0, start: int = 0, rank: int = 0, world_size: int = 1):
        if size < 1:
            raise ValueError("InfiniteSampler needs a non-empty dataset")
        self.size = size
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size

    def _permutation(self, epoch: int) -> list[int]:
        return torch.randperm(self.size, generator=sample_generator(self.seed, epoch, stream=1)).tolist()

    def __iter__(self) -> Iterator[int]:
        position = self.start + self.rank
        epoch, perm = -1, []
        while True:
            this_epoch, offset = divmod(position, self.size)
            if this_epoch != epoch:
                epoch, perm = this_epoch, self._permutation(this_epoch)
            yield epoch * self.size + perm[offset]
            position += self.world_size

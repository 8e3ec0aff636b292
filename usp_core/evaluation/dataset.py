"""Image pairs in the HPatches layout, resized to the evaluation resolution.

A sequence is a folder holding a reference image ``1.<ext>``, further images ``k.<ext>`` and
text files ``H_1_k`` (a 3x3 homography mapping pixels of image 1 to pixels of image k, each at
its own original size). The homography files define the pairs: a folder with one is a sequence, and
an image 1 or k missing for it is an error that names the file; images without a homography are
ignored. Images of one sequence may differ in size, so every image's own size is read. Pixel
coordinates follow OpenCV: the centre of the top-left pixel is (0, 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from usp_core.geometry.homography import scale_homography
from usp_core.support.image_files import IMAGE_EXTENSIONS, read_grey

# The extensions tried, in this order, for a sequence's image <k>.<ext>: usp_core.support.image_files' extensions, the
# lossless ones of the benchmarks first (.png ours, .ppm HPatches, .pgm), so a folder holding several picks the
# same file every time (.png, .ppm, .pgm, .jpg, .jpeg as before, then the other image extensions).
LOSSLESS_FIRST = (".png", ".ppm", ".pgm")
SEARCH_ORDER = tuple(sorted(IMAGE_EXTENSIONS, key=lambda ext: LOSSLESS_FIRST.index(ext) if ext in LOSSLESS_FIRST
                            else len(LOSSLESS_FIRST)))


class DatasetError(ValueError):
    """A data folder or file that cannot be evaluated; the message is one readable line."""


@dataclass(frozen=True)
class EvalPair:
    """One evaluation pair at the evaluation resolution.

    image_a, image_b: (H, W) uint8 grey images (H, W = the evaluation resolution).
    homography: (3, 3) float64, maps pixels of image_a to pixels of image_b.
    """

    sequence: str
    index: int
    image_a: np.ndarray
    image_b: np.ndarray
    homography: np.ndarray


def rescale_homography(
    homography: np.ndarray,
    size_a: tuple[int, int],
    size_b: tuple[int, int],
    size_to: tuple[int, int],
) -> np.ndarray:
    """Homography (3, 3) from an image of size_a to one of size_b (h, w), re-expressed for both resized to size_to.

    Follows cv2.resize (pixel areas aligned, x' = (x + 0.5) * sx - 0.5); [2, 2] is normalised to 1.
    """
    scale_a = (size_to[1] / size_a[1], size_to[0] / size_a[0])
    scale_b = (size_to[1] / size_b[1], size_to[0] / size_b[0])
    return np.asarray(scale_homography(np.asarray(homography, dtype=np.float64), scale_a, scale_b), dtype=np.float64)


def _image_path(folder: Path, index: int) -> Path | None:
    """The image file named <index>.<ext> in folder, or None."""
    for ext in SEARCH_ORDER:
        for candidate in (folder / f"{index}{ext}", folder / f"{index}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _required_image(folder: Path, index: int) -> Path:
    """The image file <index>.<ext> of a sequence folder; DatasetError naming the missing file otherwise."""
    path = _image_path(folder, index)
    if path is None:
        needed_by = "every H_1_k" if index == 1 else f"H_1_{index}"
        alternatives = ", ".join(SEARCH_ORDER[1:])
        raise DatasetError(f"missing image {folder / f'{index}.png'} (or {alternatives}), needed by {needed_by}")
    return path


def _pair_indices(folder: Path) -> list[int]:
    """Indices k of the homography files H_1_k (k > 1) in folder, ascending."""
    suffixes = (path.name[len("H_1_"):] for path in folder.glob("H_1_*") if path.is_file())
    return sorted(int(s) for s in suffixes if s.isdigit() and int(s) != 1)


def is_sequence(folder: Path) -> bool:
    """Whether folder holds at least one homography file H_1_k (its images are checked when loaded)."""
    return folder.is_dir() and bool(_pair_indices(folder))


def find_sequences(data_dir: str | Path) -> list[Path]:
    """Sequence folders under data_dir (or data_dir itself when it is one), sorted by name.

    Raises DatasetError when data_dir is missing or holds no sequence.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist")
    if is_sequence(root):
        return [root]
    sequences = sorted((p for p in root.iterdir() if is_sequence(p)), key=lambda p: p.name)
    if not sequences:
        raise DatasetError(f"no sequences in {root} (expected <seq>/1.png .. N.png and <seq>/H_1_k files)")
    return sequences


def _read_image(path: Path) -> np.ndarray:
    """(H, W) uint8 grey image (usp_core.training.data.read_grey); raises DatasetError when unreadable."""
    try:
        return read_grey(path)
    except OSError as error:
        raise DatasetError(str(error)) from None


def read_homography(path: Path) -> np.ndarray:
    """(3, 3) float64 homography from a text file; raises DatasetError when malformed."""
    try:
        homography = np.loadtxt(path, dtype=np.float64)
    except ValueError as error:
        raise DatasetError(f"cannot parse homography {path}: {error}") from None
    if homography.shape != (3, 3) or not np.all(np.isfinite(homography)) or abs(np.linalg.det(homography)) < 1e-12:
        raise DatasetError(f"homography {path} is not a finite invertible 3x3 matrix")
    return homography


def resize_grey(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 image resized to size (h, w) with area interpolation (cv2 pixel-area alignment)."""
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def load_sequence(folder: Path, size: tuple[int, int]) -> Iterator[EvalPair]:
    """Pairs (1, k) of one sequence folder, images resized to size (h, w) and homographies rescaled.

    Raises DatasetError naming the first missing image, unreadable image or malformed homography.
    """
    original_a = _read_image(_required_image(folder, 1))
    image_a = resize_grey(original_a, size)
    for index in _pair_indices(folder):
        original_b = _read_image(_required_image(folder, index))
        homography = rescale_homography(
            read_homography(folder / f"H_1_{index}"), original_a.shape[:2], original_b.shape[:2], size
        )
        yield EvalPair(folder.name, index, image_a, resize_grey(original_b, size), homography)

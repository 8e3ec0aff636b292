"""Image files on disk: which extensions count as images, reading one as grey, resizing (OpenCV only, no torch).

Shared by training data (usp_core.training.data), evaluation sequences, usp-bench, usp-label, the image_source
node's folder source, and the detector and its int8 calibration (which must resize alike).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "decodes", "read_grey", "resize_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")


def read_grey(path: str | Path) -> np.ndarray:
    """Decode an image file as grey. Returns (H, W) uint8. Raises OSError when unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise OSError(f"cannot read image {path}")
    return image


def decodes(data: bytes) -> bool:
    """Whether OpenCV decodes an image file's bytes (checked at 1/8 scale: cheap for JPEG)."""
    return bool(data) and cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) or (H, W, C) image -> size (h, w) with cv2.resize: INTER_AREA when shrinking, else INTER_LINEAR.

    Pixel-centre convention: a resized point maps back by x = (x' + 0.5) W / w - 0.5.
    """
    height, width = image.shape[:2]
    shrink = size[0] * size[1] < height * width
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

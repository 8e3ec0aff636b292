"""Image files on disk: which extensions count as images, and reading one as grey (OpenCV only, no torch).

Shared by training data (usp_core.training.data), evaluation sequences, usp-bench, usp-label and the image_source
node's folder source.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "read_grey"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")


def read_grey(path: str | Path) -> np.ndarray:
    """Decode an image file as grey. Returns (H, W) uint8. Raises OSError when unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise OSError(f"cannot read image {path}")
    return image

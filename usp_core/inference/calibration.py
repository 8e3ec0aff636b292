"""Calibration photos for int8 quantisation: which photos, read at the inference size, and their digest.

The folder: ``calibration_dir`` (DetectorConfig), else ``$USP_ROS_CALIBRATION_DIR``: photos like the
ones the detector will see (the training photos, or frames of the robot's own camera), searched
recursively. ``CALIBRATION_PHOTOS`` of them, spread evenly over the sorted file list, are read grey and
resized to the inference size as the detector resizes (usp_core.support.image_files.resize_image: INTER_AREA to
shrink, INTER_LINEAR to enlarge), then scaled to [0, 1].
:class:`CalibrationSet` carries a SHA-256 over the chosen files' names and bytes, so that the graph cache
keeps one int8 graph per calibration set and size.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usp_core.support.image_files import IMAGE_EXTENSIONS, decodes, read_grey, resize_image

__all__ = ["CALIBRATION_PHOTOS", "CALIBRATION_ENV", "CalibrationError", "CalibrationSet", "calibration_given",
           "calibration_set"]

CALIBRATION_PHOTOS = 128  # photos NNCF collects activation statistics on (its default is 300)
CALIBRATION_ENV = "USP_ROS_CALIBRATION_DIR"


class CalibrationError(ValueError):
    """No usable calibration photos; the message is one line."""


def calibration_given(calibration_dir: str | Path | None) -> bool:
    """Whether calibration photos are named: ``calibration_dir``, else $USP_ROS_CALIBRATION_DIR."""
    return bool(_named_folder(calibration_dir))


def _named_folder(calibration_dir: str | Path | None) -> str:
    """``calibration_dir``, else $USP_ROS_CALIBRATION_DIR, else ""."""
    return str(calibration_dir or "") or os.environ.get(CALIBRATION_ENV, "")


@dataclass(frozen=True)
class CalibrationSet:
    """The chosen photos and the SHA-256 over their names (relative to the folder) and bytes."""

    photos: tuple[Path, ...]
    digest: str

    def images(self, height: int, width: int) -> list[np.ndarray]:
        """The photos as (1, 1, height, width) float32 arrays in [0, 1] (read grey, resized as the detector does)."""
        return [(resize_image(read_grey(path), (height, width)).astype(np.float32) / 255.0)[None, None]
                for path in self.photos]


def calibration_set(calibration_dir: str | Path | None, count: int = CALIBRATION_PHOTOS) -> CalibrationSet:
    """Up to ``count`` photos of ``calibration_dir`` (else $USP_ROS_CALIBRATION_DIR), spread evenly over the sorted
    list of its image files (recursive). CalibrationError when neither names a folder, it holds no photos, or a
    chosen photo does not decode (found here, not at every frame that needs the int8 graph)."""
    folder = _named_folder(calibration_dir)
    if not folder:
        raise CalibrationError(f"precision int8 needs calibration photos: set calibration_dir (or ${CALIBRATION_ENV}) "
                               "to a folder of photos like the camera's")
    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"calibration_dir {folder} is not a folder")
    files = sorted(path for path in root.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())
    if not files:
        raise CalibrationError(f"calibration_dir {folder} holds no photos ({', '.join(IMAGE_EXTENSIONS)})")
    picks = np.unique(np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int))
    digest = hashlib.sha256()
    for path in (files[index] for index in picks):
        data = path.read_bytes()
        if not decodes(data):
            raise CalibrationError(f"calibration photo {path} cannot be decoded")
        digest.update(f"{path.relative_to(root)}|{len(data)}|".encode())
        digest.update(data)
    return CalibrationSet(tuple(files[index] for index in picks), digest.hexdigest())

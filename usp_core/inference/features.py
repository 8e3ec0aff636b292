"""The one feature type from the detector to the matcher: one image's keypoints, scores and descriptors in numpy.

:class:`usp_core.inference.detector.KeypointDetector` returns it, the evaluation methods return it, the ROS bridge
turns it into a ``usp_ros/Features`` message and back, and :meth:`usp_core.geometry.tracking.Frame.from_features`
matches it. Pixels follow OpenCV's convention: the centre of the top-left pixel is (0, 0), so the image
spans [-0.5, W - 0.5] x [-0.5, H - 0.5].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Features"]


@dataclass(frozen=True, eq=False)  # arrays: == would be ambiguous
class Features:
    """One image's keypoints.

    keypoints: (N, 2) float32 (x, y) pixels of the image (pixel-centre convention, OpenCV's);
    scores: (N,) float32; descriptors: (N, D) float32 (uint8 packed bits for binary evaluation methods);
    image_size: (width, height) of the image the pixels refer to.

    Keypoints and scores are taken as float32 (no copy when they already are); descriptors keep their dtype.
    Raises ValueError naming the shapes when they disagree.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        keypoints = np.asarray(self.keypoints, dtype=np.float32)
        scores = np.asarray(self.scores, dtype=np.float32)
        descriptors = np.asarray(self.descriptors)
        count = len(keypoints)
        if keypoints.shape != (count, 2) or scores.shape != (count,) or descriptors.ndim != 2 \
                or len(descriptors) != count:
            raise ValueError(f"inconsistent features: keypoints {keypoints.shape}, scores {scores.shape}, "
                             f"descriptors {descriptors.shape}")
        width, height = (int(side) for side in self.image_size)
        object.__setattr__(self, "keypoints", keypoints)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "descriptors", descriptors)
        object.__setattr__(self, "image_size", (width, height))

    def __len__(self) -> int:
        return len(self.keypoints)

    def finite_rows(self, scores: bool = True) -> np.ndarray:
        """(N,) bool: rows whose keypoint, descriptor and (when ``scores``) score are all finite."""
        finite = np.isfinite(self.keypoints).all(axis=1) & np.isfinite(self.descriptors).all(axis=1)
        return finite & np.isfinite(self.scores) if scores else finite

    def take(self, rows: np.ndarray) -> Features:
        """The features of ``rows``: (K,) row indices (in their order) or an (N,) bool mask; same image_size."""
        rows = np.asarray(rows)
        return Features(self.keypoints[rows], self.scores[rows], self.descriptors[rows], self.image_size)

    def resized(self, image_size: tuple[int, int]) -> Features:
        """The same points in the same image shown at another (width, height): x' = (x + 0.5) W'/W - 0.5.

        Returns self when the size is the same.
        """
        width, height = (int(side) for side in image_size)
        if (width, height) == self.image_size:
            return self
        scale = np.array([width / self.image_size[0], height / self.image_size[1]], dtype=np.float32)
        keypoints = (self.keypoints + np.float32(0.5)) * scale - np.float32(0.5)
        return Features(keypoints, self.scores, self.descriptors, (width, height))

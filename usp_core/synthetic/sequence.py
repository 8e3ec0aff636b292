"""A synthetic keypoint sequence with known motion: matcher tests and the matcher benchmark.

Each frame keeps a share of the previous frame's keypoints, moved by a known homography with pixel
noise and with noisy descriptors (cosine about 0.85 to their match, as learned descriptors of true
matches), and fills the rest with new points.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from usp_core.inference.features import Features

__all__ = ["SyntheticFrame", "small_motion", "synthetic_sequence"]


@dataclass(frozen=True)
class SyntheticFrame:
    """keypoints (N, 2) float32 pixels, scores (N,), descriptors (N, D) float32 unit rows, and the
    homography (3, 3) from the previous frame's pixels to this frame's (identity for the first; None: unknown)."""

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    homography: np.ndarray | None

    def features(self, image_size: tuple[int, int]) -> Features:
        """The frame's points as the detector would give them for an image of (width, height)."""
        return Features(self.keypoints, self.scores, self.descriptors, image_size)


def small_motion(rng: np.random.Generator, size: tuple[int, int], step: float = 1.0) -> np.ndarray:
    """A random homography (3, 3) of a small camera motion about the image centre of size (w, h).

    ``step`` scales it: rotation up to 3 deg, scale 3 %, translation 12 px and a little perspective at 1.
    """
    width, height = size
    angle = np.deg2rad(rng.uniform(-3.0, 3.0) * step)
    scale = 1.0 + rng.uniform(-0.03, 0.03) * step
    tx, ty = rng.uniform(-12.0, 12.0, size=2) * step
    px, py = rng.uniform(-2e-5, 2e-5, size=2) * step
    centre = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]], dtype=np.float64)
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    motion = np.array([[cos, -sin, tx], [sin, cos, ty], [px, py, 1.0]])
    return centre @ motion @ np.linalg.inv(centre)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def synthetic_sequence(frames: int, keypoints: int = 1000, dim: int = 256, size: tuple[int, int] = (640, 480),
                       keep: float = 0.7, descriptor_noise: float = 0.6, pixel_noise: float = 0.5,
                       seed: int = 0) -> list[SyntheticFrame]:
    """A sequence of ``frames`` frames of ``keypoints`` points each, in an image of size (w, h).

    Frame k+1 keeps a share ``keep`` of frame k's points that stay inside the image, moved by a
    known homography (``small_motion``) plus Gaussian pixel noise, with their descriptors perturbed
    (unit noise scaled by ``descriptor_noise``, then re-normalised); new random points fill the
    rest. Point order is shuffled in every frame, so indices carry no information.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    points = rng.uniform((0, 0), (width - 1, height - 1), size=(keypoints, 2))
    descriptors = _unit(rng.standard_normal((keypoints, dim)))
    sequence = [SyntheticFrame(points.astype(np.float32), np.ones(keypoints, np.float32), descriptors, np.eye(3))]
    for _ in range(frames - 1):
        homography = small_motion(rng, size)
        moved = cv2.perspectiveTransform(points[None].astype(np.float64), homography)[0]
        inside = np.flatnonzero((moved >= 0).all(1) & (moved[:, 0] <= width - 1) & (moved[:, 1] <= height - 1))
        kept = rng.choice(inside, size=min(len(inside), int(keep * keypoints)), replace=False)
        noise = rng.standard_normal((len(kept), dim)) * descriptor_noise / np.sqrt(dim)
        new = keypoints - len(kept)
        points = np.concatenate([moved[kept] + rng.normal(0.0, pixel_noise, (len(kept), 2)),
                                 rng.uniform((0, 0), (width - 1, height - 1), size=(new, 2))])
        descriptors = np.concatenate([_unit(descriptors[kept] + noise), _unit(rng.standard_normal((new, dim)))])
        order = rng.permutation(keypoints)
        points, descriptors = points[order], descriptors[order]
        sequence.append(SyntheticFrame(points.astype(np.float32), rng.random(keypoints, dtype=np.float32),
                                       descriptors, homography))
    return sequence

"""The outcome of matching one frame against its reference: homography, inliers, track ids (numpy only).

Made by usp_core.geometry.tracking (match_frames, FrameTracker) and, for a known motion such as the virtual
camera's ground truth, by :meth:`MatchResult.from_homography`; turned into a usp_ros/FrameMatch by
usp_ros.bridge.messages. Kept apart from the tracker so that code which only carries results (the
image_source node, the message bridge) does not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MatchResult"]


@dataclass(frozen=True)
class MatchResult:
    """Matches of a current frame against its reference; every index is a row of the frames' source Features.

    homography: (3, 3) float64 mapping reference pixels to current pixels, None when invalid or when the model
    estimated is not a homography.
    num_matches: mutual nearest-neighbour matches (before RANSAC).
    reference_indices, current_indices: (K,) int64 rows of the K RANSAC inliers (when the estimate is
    invalid: those of the rejected model, possibly empty).
    reference_points, current_points: (K, 2) float32 pixels of the same inliers.
    current_track_ids: (num_rows,) uint64 track id of each row of the current frame's Features, 0 in rows left
    out (filled by :class:`FrameTracker`; empty from :func:`match_frames` and :meth:`from_homography`).
    model: the geometry estimated (homography, essential or fundamental; see usp_core.geometry.two_view);
    matrix: its (3, 3) float64 matrix, None when invalid (the homography itself for model homography);
    rotation (3, 3) and translation (3,) unit vector: relative pose reference -> current camera
    (X_cur = R X_ref + t), None without a camera model;
    match_pairs: (M, 2) int64 rows (reference, current) of every mutual match, match_inliers: (M,) bool, the
    model's inliers among them (empty when not given).
    """

    reference_stamp: Any
    homography: np.ndarray | None
    num_matches: int
    reference_indices: np.ndarray
    current_indices: np.ndarray
    reference_points: np.ndarray
    current_points: np.ndarray
    current_track_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    model: str = "homography"
    matrix: np.ndarray | None = None
    rotation: np.ndarray | None = None
    translation: np.ndarray | None = None
    match_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    match_inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @classmethod
    def from_homography(cls, reference_stamp: Any, homography: np.ndarray | None) -> MatchResult:
        """A result without matches that carries a known (3, 3) homography, e.g. the ground truth of a sequence."""
        homography = None if homography is None else np.asarray(homography, np.float64).reshape(3, 3)
        no_rows, no_points = np.zeros(0, np.int64), np.zeros((0, 2), np.float32)
        return cls(reference_stamp, homography, 0, no_rows, no_rows, no_points, no_points, matrix=homography)

    @property
    def valid(self) -> bool:
        return self.matrix is not None or self.homography is not None

    @property
    def num_inliers(self) -> int:
        return len(self.reference_indices)

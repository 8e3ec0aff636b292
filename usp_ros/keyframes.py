"""Frame-to-reference tracking without ROS: what each frame is matched against, and the match itself.

A :class:`FrameTracker` keeps one reference frame. Each new frame is matched against it (mutual
nearest neighbours on the descriptors, in torch on the descriptors' device, then a RANSAC/MAGSAC
homography); the :class:`KeyframePolicy` then decides whether the new frame replaces the reference:
always (``previous`` mode), or in ``keyframe`` mode when the inliers fall below a fraction of those
the keyframe had at its first match, and whenever a match is invalid (the track is lost, so it
restarts from the current frame). Nothing here imports rclpy: the matcher node and the benchmark
share it.

Track ids: the tracker gives every point of every frame a track id, an unsigned 64-bit integer from a
counter that starts at 1 and never repeats in the tracker's life (0 means "no track"). A point that
is an inlier of a valid match inherits the id of its reference point; every other point (all points
of a frame whose match is invalid, and of the first frame of a track) gets a fresh id. The tracker
keeps the ids of its reference frame, so in keyframe mode every frame matched against the same
keyframe inherits that keyframe's ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from usp_core.matching import estimate_homography, mutual_nearest_neighbours

__all__ = ["MatchConfig", "KeyframeConfig", "Frame", "MatchResult", "match_frames", "KeyframePolicy", "FrameTracker"]

METHODS = ("ransac", "magsac")
MODES = ("previous", "keyframe")


@dataclass(frozen=True)
class MatchConfig:
    """Descriptor matching and homography estimation between two frames."""

    ratio_test: float = 0.0  # Lowe's ratio in (0, 1], applied both ways; 0 disables it (mutual nearest neighbours only)
    method: str = "ransac"  # "ransac" (cv2.RANSAC) or "magsac" (cv2.USAC_MAGSAC)
    reprojection_threshold: float = 3.0  # RANSAC inlier threshold, pixels
    min_inliers: int = 15  # fewer inliers than this gives an invalid match

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio_test <= 1.0:
            raise ValueError(f"ratio_test must be in [0, 1] (0 = off), got {self.ratio_test}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.reprojection_threshold <= 0.0:
            raise ValueError(f"reprojection_threshold must be positive, got {self.reprojection_threshold}")
        if self.min_inliers < 4:
            raise ValueError(f"min_inliers must be at least 4 (a homography needs 4 points), got {self.min_inliers}")


@dataclass(frozen=True)
class KeyframeConfig:
    """Which frame the current one is matched against."""

    mode: str = "previous"  # "previous": the frame before; "keyframe": the last keyframe
    inlier_fraction: float = 0.5  # keyframe mode: new keyframe when inliers < this share of the keyframe's first match

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0.0 <= self.inlier_fraction <= 1.0:
            raise ValueError(f"inlier_fraction must be in [0, 1], got {self.inlier_fraction}")


@dataclass(frozen=True)
class Frame:
    """One frame's detections.

    stamp: an opaque identifier carried into the results (the node uses the image stamp);
    keypoints: (N, 2) float32 (x, y) pixels; descriptors: (N, D) float tensor on the matching device;
    rows: (N,) int64 row of each point in its source arrays when some rows were left out (the node drops
    non-finite ones), None when point i is row i.
    """

    stamp: Any
    keypoints: np.ndarray
    descriptors: torch.Tensor
    rows: np.ndarray | None = None

    def source_rows(self, indices: np.ndarray) -> np.ndarray:
        """Point indices (K,) -> rows (K,) of the source arrays."""
        return indices if self.rows is None else self.rows[indices]

    def ids_by_row(self, track_ids: np.ndarray, num_rows: int) -> np.ndarray:
        """Track ids of the points (N,) -> (num_rows,) uint64 of the source rows; 0 (no track) in rows left out."""
        by_row = np.zeros(num_rows, dtype=np.uint64)
        by_row[self.source_rows(np.arange(len(track_ids)))] = track_ids
        return by_row


@dataclass(frozen=True)
class MatchResult:
    """Matches of a current frame against its reference.

    homography: (3, 3) float64 mapping reference pixels to current pixels, None when invalid.
    reference_indices, current_indices: (K,) int64 indices of the K RANSAC inliers (when the
    estimate is invalid: those of the rejected model, possibly empty).
    reference_points, current_points: (K, 2) float32 pixels of the same inliers.
    current_track_ids: (N,) uint64 track id of each point of the current frame (filled by
    :class:`FrameTracker`; empty from :func:`match_frames`).
    """

    reference_stamp: Any
    homography: np.ndarray | None
    num_matches: int
    reference_indices: np.ndarray
    current_indices: np.ndarray
    reference_points: np.ndarray
    current_points: np.ndarray
    current_track_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))

    @property
    def valid(self) -> bool:
        return self.homography is not None

    @property
    def num_inliers(self) -> int:
        return len(self.reference_indices)


def match_frames(reference: Frame, current: Frame, config: MatchConfig) -> MatchResult:
    """Mutual nearest neighbours (+ ratio test) and a robust homography reference -> current.

    Frames whose descriptor lengths differ cannot be matched: the result is invalid with no matches.
    """
    if reference.descriptors.shape[1] != current.descriptors.shape[1]:
        pairs = np.zeros((0, 2), dtype=np.int64)
    else:
        ratio = config.ratio_test if config.ratio_test > 0.0 else None
        pairs = mutual_nearest_neighbours(reference.descriptors, current.descriptors, ratio).cpu().numpy()
    reference_points = reference.keypoints[pairs[:, 0]]
    current_points = current.keypoints[pairs[:, 1]]
    estimate = estimate_homography(reference_points, current_points, config.method,
                                   config.reprojection_threshold, config.min_inliers)
    inliers = estimate.inlier_mask
    return MatchResult(reference.stamp, estimate.homography, len(pairs), pairs[inliers, 0], pairs[inliers, 1],
                       reference_points[inliers], current_points[inliers])


class KeyframePolicy:
    """Decides, after each match against the reference, whether the current frame becomes the reference."""

    def __init__(self, config: KeyframeConfig = KeyframeConfig()) -> None:
        self.config = config
        self._keyframe_inliers: int | None = None  # inliers of the keyframe's first match; None before it

    def reset(self) -> None:
        """Forget the keyframe's inlier count (a new keyframe starts counting at its first match)."""
        self._keyframe_inliers = None

    def replace_reference(self, valid: bool, num_inliers: int) -> bool:
        """True when the current frame must become the new reference."""
        if self.config.mode == "previous" or not valid:
            self.reset()
            return True
        if self._keyframe_inliers is None:
            self._keyframe_inliers = num_inliers
            return False
        if num_inliers < self.config.inlier_fraction * self._keyframe_inliers:
            self.reset()
            return True
        return False


class FrameTracker:
    """Matches each frame against the reference frame chosen by a :class:`KeyframePolicy`, and keeps track ids."""

    def __init__(self, match_config: MatchConfig = MatchConfig(),
                 keyframe_config: KeyframeConfig = KeyframeConfig()) -> None:
        self.match_config = match_config
        self.policy = KeyframePolicy(keyframe_config)
        self.reference: Frame | None = None
        self.reference_track_ids = np.zeros(0, dtype=np.uint64)  # (N,) ids of the reference's points
        self._next_id = 1  # 0 is "no track"; never reset, so an id never repeats

    def reset(self) -> None:
        """Drop the reference: the next frame starts a new track (with fresh ids)."""
        self.reference = None
        self.policy.reset()

    def track(self, frame: Frame) -> MatchResult | None:
        """Match ``frame`` against the reference; None for the first frame of a track (it becomes the reference).

        The result carries the track ids of ``frame``'s points (see the module docstring).
        """
        if self.reference is None:
            self.reference, self.reference_track_ids = frame, self._fresh_ids(len(frame.keypoints))
            return None
        result = match_frames(self.reference, frame, self.match_config)
        track_ids = np.zeros(len(frame.keypoints), dtype=np.uint64)
        if result.valid:
            track_ids[result.current_indices] = self.reference_track_ids[result.reference_indices]
        unmatched = track_ids == 0
        track_ids[unmatched] = self._fresh_ids(int(unmatched.sum()))
        if self.policy.replace_reference(result.valid, result.num_inliers):
            self.reference, self.reference_track_ids = frame, track_ids
        return replace(result, current_track_ids=track_ids)

    def _fresh_ids(self, count: int) -> np.ndarray:
        """(count,) uint64 ids never handed out before."""
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.uint64)
        self._next_id += count
        return ids

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

Rows: a :class:`Frame` made by :meth:`Frame.from_features` leaves out the rows of its Features that hold
NaN or inf. Every index of a :class:`MatchResult` is a row of the source Features (rows left out
counted), and its track ids are one per source row, 0 ("no track") in the rows left out.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from usp_core.geometry.camera import CameraModel
from usp_core.geometry.match_result import MatchResult
from usp_core.geometry.matching import estimate_homography, mutual_nearest_neighbours
from usp_core.geometry.two_view import MODELS, REFINEMENTS, TwoViewConfig, estimate_two_view
from usp_core.inference.features import Features

__all__ = ["MatchConfig", "KeyframeConfig", "Frame", "match_frames", "KeyframePolicy", "FrameTracker",
           "TrackTrails", "MODELS"]

METHODS = ("ransac", "magsac")
MODES = ("previous", "keyframe")
TRAIL_LENGTH = 10  # positions a TrackTrails keeps per track: 1 s at 10 Hz, a third of a second at 30 Hz


@dataclass(frozen=True)
class MatchConfig:
    """Descriptor matching and homography estimation between two frames."""

    ratio_test: float = 0.0  # Lowe's ratio in (0, 1], applied both ways; 0 disables it (mutual nearest neighbours only)
    method: str = "ransac"  # "ransac" (cv2.RANSAC) or "magsac" (cv2.USAC_MAGSAC)
    reprojection_threshold: float = 3.0  # RANSAC inlier threshold, pixels (divided by the focal length for E)
    min_inliers: int = 15  # fewer inliers than this gives an invalid match
    model: str = "homography"  # homography | essential (needs a camera) | fundamental | auto (usp_core.geometry)
    refine: str = "lm"  # essential: "lm" refines R, t on the inliers (Sampson error); "none" keeps RANSAC's model

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio_test <= 1.0:
            raise ValueError(f"ratio_test must be in [0, 1] (0 = off), got {self.ratio_test}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.reprojection_threshold < math.inf:
            raise ValueError(f"reprojection_threshold must be positive and finite, got {self.reprojection_threshold}")
        if self.min_inliers < 4:
            raise ValueError(f"min_inliers must be at least 4 (a homography needs 4 points), got {self.min_inliers}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.refine not in REFINEMENTS:
            raise ValueError(f"refine must be one of {REFINEMENTS}, got {self.refine!r}")

    def two_view(self) -> TwoViewConfig:
        """The settings of usp_core.geometry.two_view.estimate_two_view."""
        return TwoViewConfig(self.model, self.method, self.reprojection_threshold, min_inliers=self.min_inliers,
                             refine=self.refine)


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
    """One frame's detections, ready to match.

    stamp: an opaque identifier carried into the results (the node uses the image stamp);
    keypoints: (N, 2) float32 (x, y) pixels; descriptors: (N, D) float tensor on the matching device;
    rows: (N,) int64 row of each point in its source Features when some rows were left out, None when point i
    is row i; num_rows: rows of the source Features (N when None is given); camera: the camera model of the
    image (None: unknown); normalised: (N, 2) float64 undistorted normalised coordinates of the keypoints,
    computed once when the frame is made with a camera (None without).
    """

    stamp: Any
    keypoints: np.ndarray
    descriptors: torch.Tensor
    rows: np.ndarray | None = None
    num_rows: int | None = None
    camera: CameraModel | None = None
    normalised: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.num_rows is None:
            if self.rows is not None:
                raise ValueError("a Frame with rows left out needs num_rows, the rows of its source Features")
            object.__setattr__(self, "num_rows", len(self.keypoints))
        if self.camera is not None and self.normalised is None:
            object.__setattr__(self, "normalised", self.camera.undistort(self.keypoints))

    @classmethod
    def from_features(cls, stamp: Any, features: Features, device: str | torch.device,
                      camera: CameraModel | None = None) -> Frame:
        """The frame of ``features``' rows whose keypoint and descriptor are finite (scores are not checked),
        descriptors as a float tensor on ``device``; with ``camera``, the keypoints undistorted."""
        finite = features.finite_rows(scores=False)
        descriptors = torch.from_numpy(np.ascontiguousarray(features.descriptors, np.float32))
        if finite.all():
            return cls(stamp, features.keypoints, descriptors.to(device), camera=camera)
        rows = np.flatnonzero(finite)
        return cls(stamp, features.keypoints[rows], descriptors[rows].to(device), rows, len(features), camera)

    @property
    def dropped(self) -> int:
        """Rows of the source Features left out of this frame."""
        return self.num_rows - len(self.keypoints)

    def source_rows(self, indices: np.ndarray) -> np.ndarray:
        """Point indices (K,) -> rows (K,) int64 of the source Features."""
        indices = np.asarray(indices, np.int64)
        return indices if self.rows is None else self.rows[indices]


def match_frames(reference: Frame, current: Frame, config: MatchConfig) -> MatchResult:
    """Mutual nearest neighbours (+ ratio test) and the robust geometry of ``config.model`` reference -> current.

    Indices in the result are rows of the frames' source Features. Frames whose descriptor lengths differ
    cannot be matched: the result is invalid with no matches. The current frame's camera, when it has one,
    undistorts the keypoints of both frames (usp_core.geometry.two_view); model ``homography`` without a
    camera is usp_core.geometry.matching.estimate_homography on the pixels, as before cameras existed. Model
    ``essential`` without a camera raises ValueError.
    """
    if reference.descriptors.shape[1] != current.descriptors.shape[1]:
        pairs = np.zeros((0, 2), dtype=np.int64)
    else:
        ratio = config.ratio_test if config.ratio_test > 0.0 else None
        pairs = mutual_nearest_neighbours(reference.descriptors, current.descriptors, ratio).cpu().numpy()
    reference_points = reference.keypoints[pairs[:, 0]]
    current_points = current.keypoints[pairs[:, 1]]
    geometry = _geometry(reference, current, pairs, config)
    inliers = geometry.inlier_mask
    rows = np.stack([reference.source_rows(pairs[:, 0]), current.source_rows(pairs[:, 1])], axis=1)
    homography = geometry.matrix if geometry.model == "homography" else None
    return MatchResult(reference.stamp, homography, len(pairs), rows[inliers, 0], rows[inliers, 1],
                       reference_points[inliers], current_points[inliers], model=geometry.model,
                       matrix=geometry.matrix, rotation=geometry.rotation, translation=geometry.translation,
                       match_pairs=rows, match_inliers=inliers)


def _geometry(reference: Frame, current: Frame, pairs: np.ndarray, config: MatchConfig):
    """The TwoViewResult of the matched pairs (K, 2) (point indices of both frames)."""
    reference_points, current_points = reference.keypoints[pairs[:, 0]], current.keypoints[pairs[:, 1]]
    camera = current.camera
    if camera is None and config.model == "homography":
        estimate = estimate_homography(reference_points, current_points, config.method,
                                       config.reprojection_threshold, config.min_inliers)
        return _TodaysHomography(estimate.homography, estimate.inlier_mask)
    undistorted = camera is not None and reference.normalised is not None and camera.same(reference.camera)
    return estimate_two_view(reference_points, current_points, config.two_view(), camera,
                             reference.normalised[pairs[:, 0]] if undistorted else None,
                             current.normalised[pairs[:, 1]] if undistorted else None)


@dataclass(frozen=True)
class _TodaysHomography:
    """estimate_homography's result read as a TwoViewResult (no camera, so no pose)."""

    matrix: np.ndarray | None
    inlier_mask: np.ndarray
    model: str = "homography"
    rotation: None = None
    translation: None = None


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
        self.reference_track_ids = np.zeros(0, dtype=np.uint64)  # (num_rows,) ids of the reference's source rows
        self._next_id = 1  # 0 is "no track"; never reset, so an id never repeats

    def reset(self) -> None:
        """Drop the reference: the next frame starts a new track (with fresh ids)."""
        self.reference = None
        self.policy.reset()

    def track(self, frame: Frame) -> MatchResult | None:
        """Match ``frame`` against the reference; None for the first frame of a track (it becomes the reference).

        The result carries the track ids of ``frame``'s source rows (see the module docstring).
        """
        track_ids = np.zeros(frame.num_rows, dtype=np.uint64)
        if self.reference is None:
            self.reference, self.reference_track_ids = frame, self._with_fresh_ids(frame, track_ids)
            return None
        result = match_frames(self.reference, frame, self.match_config)
        if result.valid:
            track_ids[result.current_indices] = self.reference_track_ids[result.reference_indices]
        self._with_fresh_ids(frame, track_ids)
        if self.policy.replace_reference(result.valid, result.num_inliers):
            self.reference, self.reference_track_ids = frame, track_ids
        return replace(result, current_track_ids=track_ids)

    def _with_fresh_ids(self, frame: Frame, track_ids: np.ndarray) -> np.ndarray:
        """Ids never handed out before in the rows of ``frame``'s points whose id in ``track_ids`` (num_rows,) is
        still 0 (rows left out of the frame keep 0); fills ``track_ids`` in place and returns it."""
        rows = frame.source_rows(np.arange(len(frame.keypoints)))
        fresh = rows[track_ids[rows] == 0]
        track_ids[fresh] = np.arange(self._next_id, self._next_id + len(fresh), dtype=np.uint64)
        self._next_id += len(fresh)
        return track_ids


class TrackTrails:
    """The last positions of every live track, for drawing flow tracks (usp_core.support.drawing.draw_tracks).

    Fed one frame at a time with its track ids and keypoints; a track missing from a frame is forgotten.
    """

    def __init__(self, length: int = TRAIL_LENGTH) -> None:
        self.length = length
        self._trails: dict[int, deque] = {}  # track id -> up to ``length`` (x, y), oldest first

    def update(self, track_ids: np.ndarray, keypoints: np.ndarray) -> None:
        """This frame's (N,) track ids (0: no track, skipped) and (N, 2) pixel positions."""
        trails = {}
        for track_id, point in zip(np.asarray(track_ids).tolist(), np.asarray(keypoints).tolist()):
            if track_id:
                trails[track_id] = self._trails.get(track_id) or deque(maxlen=self.length)
                trails[track_id].append(point)
        self._trails = trails

    def trails(self, track_ids: np.ndarray) -> list[np.ndarray]:
        """(L, 2) float32 positions of each of the (K,) tracks, oldest first; (0, 2) for a track not in the last
        frame."""
        return [np.array(self._trails.get(track_id, ()), np.float32).reshape(-1, 2)
                for track_id in np.asarray(track_ids).tolist()]

    def clear(self) -> None:
        self._trails = {}

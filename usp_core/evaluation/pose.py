"""Relative-pose evaluation on real sequences with ground truth (the usp-eval-pose command).

A sequence is a folder of frames (``*.png``/``*.jpg``, sorted by name) with ``camera.yaml``
(usp_core.geometry.camera) and either ``groundtruth.txt`` (TUM: ``timestamp tx ty tz qx qy qz qw`` per line,
camera -> world; a frame named by its timestamp is paired with the nearest line) or ``poses.txt`` (KITTI:
12 numbers per line, the row-major 3x4 camera -> world of frame n on line n, ``#`` comments skipped).

Per pair of frames (i, i + gap), both frames' features are matched and their geometry estimated by the
matcher node's own code (usp_core.geometry.tracking.match_frames: mutual nearest neighbours, keypoints undistorted,
essential matrix, cheirality check); the ground truth motion is ``inv(T_j) T_i``. Errors as SuperGlue's
evaluation (Sarlin et al., CVPR 2020): rotation error = angle of R_est^T R_gt; translation error = the
angle between the unit translations, sign-free (min(e, 180 - e)); a pair without a pose counts as
infinitely wrong. Pose AUC@5/10/20 of max(rotation, translation) error, rotation-only AUC@5, medians.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from usp_core.evaluation.match import descriptor_vectors
from usp_core.geometry.camera import CameraError, CameraModel, load_camera_yaml
from usp_core.geometry.rotation import quaternion_to_rotation
from usp_core.geometry.tracking import Frame, MatchConfig, match_frames
from usp_core.geometry.two_view import direction_angle_deg, rotation_angle_deg

__all__ = ["PoseDataError", "PoseSequence", "load_pose_sequence", "relative_motion",
           "pose_auc", "PairResult", "FrameFeatures", "evaluate_pairs", "summarize", "AUC_THRESHOLDS"]

AUC_THRESHOLDS = (5.0, 10.0, 20.0)  # degrees, SuperGlue's
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_STAMP_GAP_S = 0.02  # TUM: a frame whose nearest ground-truth line is further than this has no pose


class PoseDataError(ValueError):
    """A sequence folder that cannot be evaluated; the message is one readable line."""


@dataclass(frozen=True)
class PoseSequence:
    """One sequence: frames (N,) paths, poses (N, 4, 4) float64 camera -> world, its camera model."""

    name: str
    frames: list[Path]
    poses: np.ndarray
    camera: CameraModel


def _numbers(path: Path, columns: int) -> np.ndarray:
    """The rows (L, columns) of a whitespace-separated text file, ``#`` lines skipped; PoseDataError otherwise."""
    rows = []
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise PoseDataError(f"{path}: not UTF-8 text") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            values = [float(value) for value in line.split()]
        except ValueError:
            raise PoseDataError(f"{path}:{number}: not numbers") from None
        if len(values) != columns:
            raise PoseDataError(f"{path}:{number}: {len(values)} values, expected {columns}")
        if not np.isfinite(values).all():
            raise PoseDataError(f"{path}:{number}: NaN or inf")
        rows.append(values)
    return np.array(rows, np.float64).reshape(-1, columns)


def _tum_poses(path: Path, frames: list[Path]) -> np.ndarray:
    """(N, 4, 4) poses of the frames (named by their timestamps) from the nearest line of a TUM ground truth."""
    table = _numbers(path, 8)
    poses = []
    for frame in frames:
        try:
            stamp = float(frame.stem)
        except ValueError:
            raise PoseDataError(f"{frame.name}: a TUM frame must be named by its timestamp") from None
        nearest = int(np.argmin(np.abs(table[:, 0] - stamp))) if len(table) else -1
        if nearest < 0 or abs(table[nearest, 0] - stamp) > MAX_STAMP_GAP_S:
            raise PoseDataError(f"{frame.name}: no ground truth within {MAX_STAMP_GAP_S} s in {path}")
        if np.linalg.norm(table[nearest, 4:8]) < 1e-6:
            raise PoseDataError(f"{path}: the line of {frame.name} has a zero quaternion")
        pose = np.eye(4)
        pose[:3, :3] = quaternion_to_rotation(*table[nearest, 4:8])
        pose[:3, 3] = table[nearest, 1:4]
        poses.append(pose)
    return np.array(poses)


def _kitti_poses(path: Path, frames: list[Path]) -> np.ndarray:
    """(N, 4, 4) poses of the frames from a KITTI poses file (line n: frame n)."""
    table = _numbers(path, 12)
    if len(table) < len(frames):
        raise PoseDataError(f"{path} has {len(table)} poses for {len(frames)} frames")
    poses = np.tile(np.eye(4), (len(frames), 1, 1))
    poses[:, :3, :] = table[:len(frames)].reshape(-1, 3, 4)
    determinants = np.linalg.det(poses[:, :3, :3])
    bad = np.flatnonzero(np.abs(determinants - 1.0) > 1e-3)
    if len(bad):
        raise PoseDataError(f"{path}: pose {bad[0] + 1} is not a rotation (determinant {determinants[bad[0]]:.3g})")
    return poses


def load_pose_sequence(folder: str | Path) -> PoseSequence:
    """The frames, ground truth and camera of a sequence folder (see the module docstring); PoseDataError else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PoseDataError(f"{folder} is not a folder")
    frames = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if len(frames) < 2:
        raise PoseDataError(f"{folder} holds {len(frames)} frames (png or jpg); a pair needs 2")
    try:
        camera = load_camera_yaml(folder / "camera.yaml")
    except CameraError as error:
        raise PoseDataError(str(error)) from None
    if (folder / "groundtruth.txt").is_file():
        poses = _tum_poses(folder / "groundtruth.txt", frames)
    elif (folder / "poses.txt").is_file():
        poses = _kitti_poses(folder / "poses.txt", frames)
    else:
        raise PoseDataError(f"{folder} has neither groundtruth.txt (TUM) nor poses.txt (KITTI)")
    return PoseSequence(folder.resolve().name, frames, poses, camera)


def relative_motion(pose_i: np.ndarray, pose_j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Motion (R (3, 3), t (3,)) from frame i to frame j of camera -> world poses (4, 4): inv(T_j) T_i."""
    motion = np.linalg.inv(pose_j) @ pose_i
    return motion[:3, :3], motion[:3, 3]


def pose_auc(errors: np.ndarray, thresholds=AUC_THRESHOLDS) -> list[float]:
    """Area under the recall-vs-error curve up to each threshold, normalised to [0, 1] (SuperGlue's pose AUC).

    errors: (P,) degrees, inf for failed pairs. The curve is the fraction of pairs with error <= e,
    piecewise linear between the sorted errors, starting at (0, 0).
    """
    errors = np.sort(np.asarray(errors, np.float64))
    if errors.size == 0:
        return [float("nan")] * len(thresholds)
    recall = np.arange(1, len(errors) + 1) / len(errors)
    errors, recall = np.concatenate([[0.0], errors]), np.concatenate([[0.0], recall])
    areas = []
    for threshold in thresholds:
        last = int(np.searchsorted(errors, threshold, side="right"))
        x = np.concatenate([errors[:last], [threshold]])
        y = np.concatenate([recall[:last], [recall[last - 1]]])
        areas.append(float(np.trapezoid(y, x) / threshold))
    return areas


@dataclass(frozen=True)
class PairResult:
    """One pair (i, j = i + gap): rotation and translation errors in degrees (inf without a pose), counts."""

    gap: int
    i: int
    j: int
    rotation_error: float
    translation_error: float
    num_matches: int
    num_inliers: int
    model: str


@dataclass
class FrameFeatures:
    """A sequence's frames as the matcher's Frames (features of ``method`` at the frame's own size, descriptors as
    vectors whose L2 order is the method's metric, keypoints undistorted), each extracted once on first
    :meth:`get`; ``seconds`` spent extracting."""

    method: object
    sequence: PoseSequence
    frames: dict = field(default_factory=dict)
    seconds: float = 0.0

    def get(self, index: int) -> Frame:
        """Frame ``index`` of the sequence (its stamp is the index); PoseDataError when the image is unreadable."""
        if index not in self.frames:
            image = cv2.imread(str(self.sequence.frames[index]), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise PoseDataError(f"cannot read {self.sequence.frames[index]}")
            started = time.perf_counter()
            features = self.method.extract(image)
            self.seconds += time.perf_counter() - started
            vectors = descriptor_vectors(features.descriptors, self.method.binary)  # Hamming order for binary ones
            self.frames[index] = Frame(index, features.keypoints, vectors, camera=self.sequence.camera)
        return self.frames[index]


def evaluate_pairs(method, sequence: PoseSequence, gaps: list[int], config: MatchConfig) -> tuple[list, float]:
    """Every pair (i, i + gap) of the sequence for each gap: its PairResult; and the seconds per extracted frame."""
    cache, results = FrameFeatures(method, sequence), []
    for gap in gaps:
        for i in range(len(sequence.frames) - gap):
            j = i + gap
            result = match_frames(cache.get(i), cache.get(j), config)
            rotation_gt, translation_gt = relative_motion(sequence.poses[i], sequence.poses[j])
            if result.rotation is None:
                errors = (float("inf"), float("inf"))
            else:
                errors = (rotation_angle_deg(result.rotation, rotation_gt),
                          direction_angle_deg(result.translation, translation_gt))
            results.append(PairResult(gap, i, j, *errors, result.num_matches, result.num_inliers, result.model))
    return results, cache.seconds / max(len(cache.frames), 1)


def summarize(pairs: list[PairResult]) -> dict:
    """AUC@5/10/20 of max(rotation, translation) error, rotation-only AUC@5, medians, failed pairs (percent)."""
    rotation = np.array([p.rotation_error for p in pairs], np.float64)
    translation = np.array([p.translation_error for p in pairs], np.float64)
    auc = pose_auc(np.maximum(rotation, translation))
    return {
        "pairs": len(pairs),
        "failed": int(np.count_nonzero(~np.isfinite(rotation))),
        "auc": {f"{t:g}": 100.0 * a for t, a in zip(AUC_THRESHOLDS, auc)},
        "rotation_auc_5": 100.0 * pose_auc(rotation, (5.0,))[0],
        "median_rotation_error": float(np.median(rotation)) if len(pairs) else float("nan"),
        "median_translation_error": float(np.median(translation)) if len(pairs) else float("nan"),
        "median_inliers": float(np.median([p.num_inliers for p in pairs])) if pairs else float("nan"),
        "median_matches": float(np.median([p.num_matches for p in pairs])) if pairs else float("nan"),
    }

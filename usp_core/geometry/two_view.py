"""Two-view geometry of matched keypoints: homography, essential or fundamental matrix, relative pose, model choice.

Conventions. Correspondences are (K, 2) arrays, row k of the reference frame matching row k of the current
one. The relative pose (R, t) maps a point X_ref in the reference camera's frame into the current camera's
frame, ``X_cur = R X_ref + t`` (what ``cv2.recoverPose`` returns; for camera -> world poses T_ref and T_cur
it is ``inv(T_cur) T_ref``); ``t`` is a unit vector (the scale is unobservable from two views). Matrices:

- homography H: reference pixels -> current pixels; with a camera model, the pixels of the undistorted
  (pinhole) images, K (x, y, 1) of the normalised coordinates;
- essential E: normalised coordinates, ``x_cur^T E x_ref = 0``, E = [t]x R; needs a camera model;
- fundamental F: pixels (undistorted ones with a camera model), ``p_cur^T F p_ref = 0``.

Inlier thresholds are always in pixels; for the essential matrix they are divided by the mean focal length
(the usual conversion, as in the relative-pose protocol of docs/evaluation.md).

Model choice (``auto``): ORB-SLAM's heuristic (Mur-Artal, Montiel, Tardos, "ORB-SLAM: a Versatile and
Accurate Monocular SLAM System", IEEE T-RO 31(5), 2015, section IV-B): both models are scored over all
correspondences in pixels with sigma = 1 px, S_M = sum of rho_M(d^2) over the transfer errors both ways,
rho_M(d^2) = 5.99 - d^2 when d^2 < T_M (T_H = 5.99, T_F = 3.84: chi-square 95% for 2 and 1 degrees of
freedom) and 0 otherwise; R_H = S_H / (S_H + S_F) > 0.45 picks the homography (planar scene or
rotation only), else the epipolar model (essential with a camera, fundamental without).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from usp_core.geometry.camera import CameraModel

__all__ = ["MODELS", "ESTIMATORS", "TwoViewConfig", "TwoViewResult", "estimate_two_view", "homography_ratio",
           "refine_pose", "rotation_angle_deg", "direction_angle_deg", "essential_from_pose", "sampson_squared"]

MODELS = ("homography", "essential", "fundamental", "auto")
ESTIMATORS = {"ransac": (cv2.RANSAC, cv2.FM_RANSAC), "magsac": (cv2.USAC_MAGSAC, cv2.USAC_MAGSAC)}
REFINEMENTS = ("none", "lm")
MIN_POINTS = {"homography": 4, "essential": 5, "fundamental": 8}
ORB_SLAM_GAMMA = 5.99  # rho's constant: the homography's chi-square threshold, used for both models
ORB_SLAM_THRESHOLDS = {"homography": 5.99, "fundamental": 3.84}  # chi-square 95 %, 2 and 1 degrees of freedom
REFINE_ROUNDS = 2  # refine "lm": rounds of LM on the inliers and inlier re-selection
LM_ITERATIONS = 20  # refine_pose: Levenberg-Marquardt steps at most (it stops earlier once the cost is flat)


@dataclass(frozen=True)
class TwoViewConfig:
    """How one pair's geometry is estimated."""

    model: str = "homography"  # homography | essential | fundamental | auto (see the module docstring)
    method: str = "ransac"  # robust estimator: ransac (cv2.RANSAC) or magsac (cv2.USAC_MAGSAC)
    threshold: float = 3.0  # inlier threshold in pixels (divided by the focal length for the essential matrix)
    confidence: float = 0.999  # RANSAC confidence of the essential and fundamental matrices
    min_inliers: int = 15  # fewer inliers than this gives an invalid result
    refine: str = "lm"  # essential: "lm" refines R, t on the inliers (Sampson error) and re-selects them; "none"
    homography_ratio: float = 0.45  # auto: R_H above this picks the homography (ORB-SLAM's value)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.method not in ESTIMATORS:
            raise ValueError(f"method must be one of {', '.join(ESTIMATORS)}, got {self.method!r}")
        if self.refine not in REFINEMENTS:
            raise ValueError(f"refine must be one of {', '.join(REFINEMENTS)}, got {self.refine!r}")
        if not 0.0 < self.threshold < math.inf:
            raise ValueError(f"threshold must be positive and finite, got {self.threshold}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.min_inliers < 4:
            raise ValueError(f"min_inliers must be at least 4, got {self.min_inliers}")
        if not 0.0 <= self.homography_ratio <= 1.0:
            raise ValueError(f"homography_ratio must be in [0, 1], got {self.homography_ratio}")


@dataclass(frozen=True)
class TwoViewResult:
    """One pair's geometry.

    model: the model estimated (homography, essential or fundamental; ``auto`` resolves to one of them);
    matrix: its (3, 3) float64 matrix (see the module docstring), None when not valid; inlier_mask: (K,) bool
    over the correspondences (the rejected model's inliers when not valid); rotation: (3, 3) and translation:
    (3,) unit vector, reference -> current camera, when a camera model gives them (None otherwise);
    homography_ratio: ORB-SLAM's R_H when ``auto`` chose (None otherwise).
    """

    model: str
    matrix: np.ndarray | None
    inlier_mask: np.ndarray
    rotation: np.ndarray | None = None
    translation: np.ndarray | None = None
    homography_ratio: float | None = None

    @property
    def valid(self) -> bool:
        return self.matrix is not None

    @property
    def num_inliers(self) -> int:
        return int(np.count_nonzero(self.inlier_mask))


def _invalid(model: str, count: int, mask: np.ndarray | None = None) -> TwoViewResult:
    return TwoViewResult(model, None, np.zeros(count, bool) if mask is None else mask)


def estimate_two_view(reference: np.ndarray, current: np.ndarray, config: TwoViewConfig,
                      camera: CameraModel | None = None, reference_normalised: np.ndarray | None = None,
                      current_normalised: np.ndarray | None = None) -> TwoViewResult:
    """The geometry of correspondences reference (K, 2) -> current (K, 2) pixels, by ``config.model``.

    With ``camera``, keypoints are undistorted (or their normalised coordinates (K, 2) are taken as given,
    computed once per frame by the caller) and the result carries the relative pose. Without a camera,
    ``essential`` raises ValueError; ``auto`` chooses between homography and fundamental matrix.
    """
    reference = np.asarray(reference, np.float64).reshape(-1, 2)
    current = np.asarray(current, np.float64).reshape(-1, 2)
    if reference.shape != current.shape:
        raise ValueError(f"reference {reference.shape} and current {current.shape} differ in shape")
    if camera is None and config.model == "essential":
        raise ValueError("model essential needs a camera model")
    if camera is not None:
        reference_normalised = camera.undistort(reference) if reference_normalised is None else reference_normalised
        current_normalised = camera.undistort(current) if current_normalised is None else current_normalised
        reference, current = camera.to_pixels(reference_normalised), camera.to_pixels(current_normalised)
    views = _Views(reference, current, camera, reference_normalised, current_normalised)
    if config.model != "auto":
        return _ESTIMATE[config.model](views, config)
    epipolar = "essential" if camera is not None else "fundamental"
    homography, other = _ESTIMATE["homography"](views, config), _ESTIMATE[epipolar](views, config)
    if not homography.valid or not other.valid:
        chosen = homography if homography.num_inliers > other.num_inliers else other
        return chosen
    ratio = homography_ratio(reference, current, homography.matrix, _fundamental_of(other, camera))
    chosen = homography if ratio > config.homography_ratio else other
    return TwoViewResult(chosen.model, chosen.matrix, chosen.inlier_mask, chosen.rotation, chosen.translation, ratio)


@dataclass(frozen=True)
class _Views:
    """Correspondences of one pair: pixels (K, 2) (undistorted with a camera) and normalised (K, 2) or None."""

    reference: np.ndarray
    current: np.ndarray
    camera: CameraModel | None
    reference_normalised: np.ndarray | None
    current_normalised: np.ndarray | None


def _homography(views: _Views, config: TwoViewConfig) -> TwoViewResult:
    """Robust homography on the pixels; with a camera, the pose of its decomposition."""
    count = len(views.reference)
    if count < MIN_POINTS["homography"]:
        return _invalid("homography", count)
    # OpenCV's default confidence (0.995), as usp_core.geometry.matching.estimate_homography: the node's results unchanged
    matrix, mask = cv2.findHomography(views.reference, views.current, ESTIMATORS[config.method][0], config.threshold)
    if matrix is None or mask is None:
        return _invalid("homography", count)
    inliers = mask.reshape(-1).astype(bool)
    if inliers.sum() < config.min_inliers:
        return _invalid("homography", count, inliers)
    rotation = translation = None
    if views.camera is not None:
        rotation, translation = _pose_from_homography(matrix, views, inliers)
    return TwoViewResult("homography", matrix, inliers, rotation, translation)


def _essential(views: _Views, config: TwoViewConfig) -> TwoViewResult:
    """Robust essential matrix on normalised coordinates, pose by the cheirality check, optional LM refinement."""
    count = len(views.reference)
    if count < MIN_POINTS["essential"]:
        return _invalid("essential", count)
    threshold = config.threshold / views.camera.focal
    matrix, mask = cv2.findEssentialMat(views.reference_normalised, views.current_normalised, np.eye(3),
                                        ESTIMATORS[config.method][0], config.confidence, threshold)
    if matrix is None or mask is None or matrix.shape[0] < 3:
        return _invalid("essential", count)
    inliers = mask.reshape(-1).astype(bool)
    if inliers.sum() < max(config.min_inliers, MIN_POINTS["essential"]):
        return _invalid("essential", count, inliers)
    rotation, translation = _recover_pose(matrix[:3], views, inliers)
    if config.refine == "lm":
        matrix, rotation, translation, inliers = _refined(views, rotation, translation, inliers, threshold)
    return TwoViewResult("essential", matrix[:3], inliers, rotation, translation)


def _refined(views: _Views, rotation: np.ndarray, translation: np.ndarray, inliers: np.ndarray, threshold: float):
    """REFINE_ROUNDS of: LM on the inliers, then the inliers re-selected by Sampson distance under the refined pose.
    Returns (E, R, t, inlier mask)."""
    a, b = views.reference_normalised, views.current_normalised
    for _ in range(REFINE_ROUNDS):
        rotation, translation = refine_pose(rotation, translation, a[inliers], b[inliers])
        matrix = essential_from_pose(rotation, translation)
        inliers = sampson_squared(matrix, a, b) < threshold ** 2
    return matrix, rotation, translation, inliers


def _fundamental(views: _Views, config: TwoViewConfig) -> TwoViewResult:
    """Robust fundamental matrix on the pixels; with a camera, the pose of E = K^T F K."""
    count = len(views.reference)
    if count < MIN_POINTS["fundamental"]:
        return _invalid("fundamental", count)
    matrix, mask = cv2.findFundamentalMat(views.reference, views.current, ESTIMATORS[config.method][1],
                                          config.threshold, config.confidence)
    if matrix is None or mask is None or matrix.shape[0] < 3:
        return _invalid("fundamental", count)
    inliers = mask.reshape(-1).astype(bool)
    if inliers.sum() < config.min_inliers:
        return _invalid("fundamental", count, inliers)
    rotation = translation = None
    if views.camera is not None:
        k = views.camera.matrix
        rotation, translation = _recover_pose(k.T @ matrix[:3] @ k, views, inliers)
    return TwoViewResult("fundamental", matrix[:3], inliers, rotation, translation)


def _guarded(estimate):
    """An estimator whose OpenCV failure on degenerate input is an invalid result: e.g. findEssentialMat's 5-point
    solver raises (solvePoly) when every correspondence is the same point twice, as a still camera gives."""
    def run(views: _Views, config: TwoViewConfig) -> TwoViewResult:
        try:
            return estimate(views, config)
        except cv2.error:
            return _invalid(estimate.__name__.strip("_"), len(views.reference))
    return run


_ESTIMATE = {"homography": _guarded(_homography), "essential": _guarded(_essential),
             "fundamental": _guarded(_fundamental)}


def _recover_pose(essential: np.ndarray, views: _Views, inliers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R (3, 3), unit t (3,)) of the decomposition of E (R1 or R2, +t or -t) that puts most inliers in front of
    both cameras: the cheirality check of cv2.recoverPose without its distance limit. recoverPose counts only
    points nearer than 50 baselines, so at a small baseline (tum_fr2: 2.6 cm, the desk 1-2 m away) it counts none
    and may return the twisted pair, 180 degrees off (seen on tum_fr2 frames 4-5)."""
    first, second, translation = cv2.decomposeEssentialMat(essential)
    before = views.reference_normalised[inliers].reshape(-1, 1, 2)
    after = views.current_normalised[inliers].reshape(-1, 1, 2)
    translation = translation.reshape(3) / max(np.linalg.norm(translation), 1e-12)
    candidates = [(rotation, sign * translation) for rotation in (first, second) for sign in (1.0, -1.0)]
    return max(candidates, key=lambda pose: _in_front(pose[0], pose[1], before, after))


def _pose_from_homography(matrix: np.ndarray, views: _Views, inliers: np.ndarray):
    """(R, unit t or zeros) of the decomposition of the homography (in normalised coordinates) that sees the
    inliers in front of both cameras, with most triangulated points at positive depth; (None, None) if none."""
    k = views.camera.matrix
    normalised = np.linalg.inv(k) @ matrix @ k
    _, rotations, translations, normals = cv2.decomposeHomographyMat(normalised, np.eye(3))
    before = views.reference_normalised[inliers].reshape(-1, 1, 2).astype(np.float32)  # OpenCV wants float32 here
    after = views.current_normalised[inliers].reshape(-1, 1, 2).astype(np.float32)
    visible = cv2.filterHomographyDecompByVisibleRefpoints(rotations, normals, before, after)
    candidates = range(len(rotations)) if visible is None else visible.reshape(-1).tolist()
    if not candidates:
        return None, None
    best = max(candidates, key=lambda i: _in_front(rotations[i], translations[i].reshape(3), before, after))
    translation = translations[best].reshape(3)
    norm = np.linalg.norm(translation)
    return rotations[best], (translation / norm if norm > 1e-9 else np.zeros(3))


def _in_front(rotation: np.ndarray, translation: np.ndarray, before: np.ndarray, after: np.ndarray) -> int:
    """Points (N, 1, 2) normalised triangulated with [I|0], [R|t] at positive depth in both cameras."""
    if np.linalg.norm(translation) < 1e-9:
        return len(before)
    points = cv2.triangulatePoints(np.eye(3, 4), np.hstack([rotation, translation[:, None]]),
                                   before.reshape(-1, 2).T.astype(np.float64), after.reshape(-1, 2).T.astype(np.float64))
    points = points[:3] / np.where(np.abs(points[3]) > 1e-12, points[3], 1e-12)
    depth_after = (rotation @ points + translation[:, None])[2]
    return int(np.count_nonzero((points[2] > 0) & (depth_after > 0)))


# ---- model selection ---------------------------------------------------------------------------------

def _fundamental_of(result: TwoViewResult, camera: CameraModel | None) -> np.ndarray:
    """The pixel fundamental matrix of an epipolar result: F itself, or K^-T E K^-1."""
    if result.model == "fundamental":
        return result.matrix
    inverse = np.linalg.inv(camera.matrix)
    return inverse.T @ result.matrix @ inverse


def homography_ratio(reference: np.ndarray, current: np.ndarray, homography: np.ndarray,
                     fundamental: np.ndarray) -> float:
    """ORB-SLAM's R_H = S_H / (S_H + S_F) of pixel correspondences (K, 2) under H and F (sigma = 1 px)."""
    score_h = _orb_slam_score(_transfer_squared(homography, reference, current), "homography") \
        + _orb_slam_score(_transfer_squared(np.linalg.inv(homography), current, reference), "homography")
    score_f = _orb_slam_score(_epipolar_squared(fundamental, reference, current), "fundamental") \
        + _orb_slam_score(_epipolar_squared(fundamental.T, current, reference), "fundamental")
    total = score_h + score_f
    return float(score_h / total) if total > 0 else 0.0


def _orb_slam_score(squared: np.ndarray, model: str) -> float:
    """Sum of rho(d^2) = GAMMA - d^2 where d^2 < the model's threshold, else 0 (sigma = 1 px)."""
    threshold = ORB_SLAM_THRESHOLDS[model]
    return float(np.sum(np.where(squared < threshold, ORB_SLAM_GAMMA - squared, 0.0)))


def _homogeneous(points: np.ndarray) -> np.ndarray:
    return np.hstack([points, np.ones((len(points), 1))])


def _transfer_squared(homography: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(K,) squared distance between target and H source, pixels^2."""
    mapped = _homogeneous(source) @ homography.T
    mapped = mapped[:, :2] / np.where(np.abs(mapped[:, 2:]) > 1e-12, mapped[:, 2:], 1e-12)
    return np.sum((mapped - target) ** 2, axis=1)


def _epipolar_squared(fundamental: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(K,) squared distance of each target point to its epipolar line F source, pixels^2."""
    lines = _homogeneous(source) @ fundamental.T
    numerator = np.sum(lines * _homogeneous(target), axis=1) ** 2
    return numerator / np.maximum(lines[:, 0] ** 2 + lines[:, 1] ** 2, 1e-24)


# ---- pose refinement and errors ----------------------------------------------------------------------

def _skew(vector: np.ndarray) -> np.ndarray:
    x, y, z = vector
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def essential_from_pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """E = [t]x R (3, 3) for the pose reference -> current."""
    return _skew(np.asarray(translation, np.float64).reshape(3)) @ rotation


def sampson_residuals(essential: np.ndarray, reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(K,) signed Sampson residuals of normalised correspondences (K, 2) under E: x_cur^T E x_ref divided by the
    norm of its gradient (normalised units; smooth through zero, as least squares needs)."""
    a, b = _homogeneous(reference), _homogeneous(current)
    ea, etb = a @ essential.T, b @ essential
    algebraic = np.sum(b * ea, axis=1)
    denominator = ea[:, 0] ** 2 + ea[:, 1] ** 2 + etb[:, 0] ** 2 + etb[:, 1] ** 2
    return algebraic / np.sqrt(np.maximum(denominator, 1e-24))


def sampson_squared(essential: np.ndarray, reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(K,) squared Sampson distances of normalised correspondences (K, 2) under E (normalised units^2)."""
    return sampson_residuals(essential, reference, current) ** 2


def _tangent_basis(translation: np.ndarray) -> np.ndarray:
    """(3, 2) orthonormal basis of the plane orthogonal to the unit translation."""
    helper = np.eye(3)[int(np.argmin(np.abs(translation)))]
    first = np.cross(translation, helper)
    first /= np.linalg.norm(first)
    return np.stack([first, np.cross(translation, first)], axis=1)


def _perturbed(rotation, translation, basis, delta) -> tuple[np.ndarray, np.ndarray]:
    """Pose moved by delta (5,): rotation R exp([w]x) with w = delta[:3], translation on the unit sphere."""
    moved = rotation @ cv2.Rodrigues(delta[:3].reshape(3, 1))[0]
    direction = translation + basis @ delta[3:]
    return moved, direction / np.linalg.norm(direction)


def refine_pose(rotation: np.ndarray, translation: np.ndarray, reference: np.ndarray, current: np.ndarray,
                iterations: int = LM_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on the Sampson errors of inlier correspondences (K, 2) normalised.

    Five parameters (a rotation increment and a move of the unit translation in its tangent plane),
    numerical Jacobian; returns the refined (R (3, 3), unit t (3,)). Fewer than 6 points: unchanged.
    """
    if len(reference) < 6:
        return rotation, translation

    def residuals(r, t):
        return sampson_residuals(essential_from_pose(r, t), reference, current)

    damping, cost = 1e-3, float(np.sum(residuals(rotation, translation) ** 2))
    for _ in range(iterations):
        basis, base = _tangent_basis(translation), residuals(rotation, translation)
        jacobian = np.stack([(residuals(*_perturbed(rotation, translation, basis, step)) - base) / 1e-7
                             for step in np.eye(5) * 1e-7], axis=1)
        normal, gradient = jacobian.T @ jacobian, jacobian.T @ base
        delta = -np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12), gradient)
        candidate = _perturbed(rotation, translation, basis, delta)
        new_cost = float(np.sum(residuals(*candidate) ** 2))
        if new_cost < cost:
            converged = cost - new_cost < 1e-10 * cost
            (rotation, translation), cost, damping = candidate, new_cost, damping * 0.3
            if converged:
                break
        else:
            damping *= 10.0
    return rotation, translation


def rotation_angle_deg(rotation_a: np.ndarray, rotation_b: np.ndarray) -> float:
    """Angle in degrees of the rotation R_a^T R_b (0 when they agree)."""
    cosine = (np.trace(rotation_a.T @ rotation_b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def direction_angle_deg(vector_a: np.ndarray, vector_b: np.ndarray, signed: bool = False) -> float:
    """Angle in degrees between two directions (3,); sign-free (at most 90) unless ``signed``."""
    a, b = np.asarray(vector_a, np.float64).reshape(3), np.asarray(vector_b, np.float64).reshape(3)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms < 1e-15:
        return 90.0 if not signed else 180.0
    cosine = np.clip(np.dot(a, b) / norms, -1.0, 1.0)
    angle = float(np.degrees(np.arccos(cosine)))
    return angle if signed else min(angle, 180.0 - angle)

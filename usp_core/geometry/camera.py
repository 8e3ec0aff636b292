"""Camera models: intrinsics and lens distortion, undistortion of keypoints to normalised coordinates.

Three distortion models, named as ``sensor_msgs/CameraInfo.distortion_model`` names them:

- ``plumb_bob``: OpenCV's radial-tangential model, coefficients (k1, k2, p1, p2[, k3]);
- ``rational_polynomial``: OpenCV's rational model, (k1, k2, p1, p2, k3, k4, k5, k6);
- ``equidistant``: the fisheye (Kannala-Brandt) model of ``cv2.fisheye``, (k1, k2, k3, k4).

Normalised coordinates are ``(X / Z, Y / Z)`` of the ray in the camera frame (x right, y down, z forward):
what the essential matrix relates. Pixels follow OpenCV (the centre of the top-left pixel is (0, 0)).

Two YAML layouts load (:func:`load_camera_yaml`): camera_calibration's (``image_width``, ``camera_matrix``
``{rows, cols, data}``, ``distortion_model``, ``distortion_coefficients``), as ``camera_info_manager``
reads and writes it, and the flat one of our sequences (``width``, ``height``, ``fx``, ``fy``, ``cx``,
``cy``, ``distortion_model``, ``distortion``). Nothing here knows ROS messages: the bridge passes a
CameraInfo's fields to :meth:`CameraModel.from_fields`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

__all__ = ["DISTORTION_MODELS", "CameraError", "CameraModel", "load_camera_yaml"]

# distortion model -> accepted coefficient counts (0 = no distortion)
DISTORTION_MODELS = {"plumb_bob": (0, 4, 5), "rational_polynomial": (0, 8), "equidistant": (0, 4)}
ALIASES = {"fisheye": "equidistant", "radtan": "plumb_bob", "none": "plumb_bob", "": "plumb_bob"}
# Iterative undistortion: OpenCV's default (5 iterations) leaves ~0.1 px at the corners of strong lenses.
UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)


class CameraError(ValueError):
    """A camera model that cannot be used; the message is one readable line."""


@dataclass(frozen=True, eq=False)
class CameraModel:
    """A pinhole camera with lens distortion.

    width, height: image size in pixels; matrix: (3, 3) float64 K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]];
    distortion: (D,) float64 coefficients in OpenCV's order for ``model`` (D = 0 for none).
    """

    width: int
    height: int
    matrix: np.ndarray
    distortion: np.ndarray
    model: str = "plumb_bob"

    def __post_init__(self) -> None:
        model = ALIASES.get(self.model, self.model)
        if model not in DISTORTION_MODELS:
            raise CameraError(f"unknown distortion model {self.model!r}; known: {', '.join(DISTORTION_MODELS)}")
        matrix = np.asarray(self.matrix, np.float64).reshape(3, 3)
        distortion = np.asarray(self.distortion, np.float64).reshape(-1)
        if distortion.size not in DISTORTION_MODELS[model]:
            raise CameraError(f"{model} takes {' or '.join(map(str, DISTORTION_MODELS[model][1:]))} distortion "
                              f"coefficients, got {distortion.size}")
        if not (np.isfinite(matrix).all() and np.isfinite(distortion).all()):
            raise CameraError("camera matrix or distortion holds NaN or inf")
        if matrix[0, 0] <= 0 or matrix[1, 1] <= 0 or int(self.width) < 1 or int(self.height) < 1:
            raise CameraError(f"camera needs positive fx, fy and image size, got fx {matrix[0, 0]}, fy {matrix[1, 1]}, "
                              f"{self.width}x{self.height}")
        if not np.array_equal(matrix[2], [0.0, 0.0, 1.0]):
            raise CameraError(f"camera matrix's last row must be 0 0 1, got {' '.join(f'{v:g}' for v in matrix[2])}")
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "distortion", distortion)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @classmethod
    def from_fields(cls, width: int, height: int, k: list[float], d: list[float], model: str) -> CameraModel:
        """From CameraInfo's fields: ``k`` the row-major 3x3 K (9 values), ``d`` the coefficients, ``model`` its
        distortion_model. A camera with K all zero (uncalibrated, REP-104) raises CameraError."""
        k = np.asarray(k, np.float64)
        if k.size != 9:
            raise CameraError(f"K needs 9 values, got {k.size}")
        if not k.any():
            raise CameraError("uncalibrated camera (K is all zero)")
        return cls(width, height, k.reshape(3, 3), d, model)

    def same(self, other: CameraModel | None) -> bool:
        """Whether ``other`` is the same camera (size, model, K and coefficients equal)."""
        return other is self or (other is not None and (self.width, self.height, self.model)
                                 == (other.width, other.height, other.model)
                                 and np.array_equal(self.matrix, other.matrix)
                                 and np.array_equal(self.distortion, other.distortion))

    @property
    def focal(self) -> float:
        """Mean focal length (fx + fy) / 2 in pixels: converts pixel thresholds to normalised units."""
        return float(self.matrix[0, 0] + self.matrix[1, 1]) / 2.0

    @property
    def distorted(self) -> bool:
        """Whether any distortion coefficient is non-zero."""
        return bool(np.any(self.distortion))

    def undistort(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) -> normalised coordinates (N, 2) float64 of the same rays (distortion removed)."""
        points = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
        if len(points) == 0:
            return np.zeros((0, 2))
        if not self.distorted:
            inverse = np.linalg.inv(self.matrix)
            return points.reshape(-1, 2) @ inverse[:2, :2].T + inverse[:2, 2]
        if self.model == "equidistant":
            normalised = cv2.fisheye.undistortPoints(points, self.matrix, self.distortion, criteria=UNDISTORT_CRITERIA)
        else:
            normalised = cv2.undistortPoints(points, self.matrix, self.distortion, criteria=UNDISTORT_CRITERIA)
        return normalised.reshape(-1, 2)

    def project(self, points: np.ndarray) -> np.ndarray:
        """3D points (N, 3) in the camera frame (Z > 0) -> distorted pixels (N, 2) float64."""
        points = np.asarray(points, np.float64).reshape(-1, 1, 3)
        zero = np.zeros(3)
        if self.model == "equidistant":
            distortion = self.distortion if self.distortion.size else np.zeros(4)
            pixels, _ = cv2.fisheye.projectPoints(points, zero, zero, self.matrix, distortion)
        else:
            pixels, _ = cv2.projectPoints(points, zero, zero, self.matrix, self.distortion)
        return pixels.reshape(-1, 2)

    def to_pixels(self, normalised: np.ndarray) -> np.ndarray:
        """Normalised coordinates (N, 2) -> pixels (N, 2) of the undistorted (pinhole) image: K (x, y, 1)."""
        normalised = np.asarray(normalised, np.float64).reshape(-1, 2)
        return normalised @ self.matrix[:2, :2].T + self.matrix[:2, 2]


def _matrix_field(data: dict, key: str) -> list:
    """The ``data`` list of a camera_calibration ``{rows, cols, data}`` block (or a plain list)."""
    value = data[key]
    return value["data"] if isinstance(value, dict) else value


def camera_from_dict(data: dict) -> CameraModel:
    """A CameraModel from a parsed YAML mapping in either layout (see the module docstring); CameraError otherwise."""
    if not isinstance(data, dict):
        raise CameraError("camera YAML must be a mapping")
    try:
        if "camera_matrix" in data:
            return CameraModel(data["image_width"], data["image_height"], _matrix_field(data, "camera_matrix"),
                               _matrix_field(data, "distortion_coefficients"), data.get("distortion_model", "plumb_bob"))
        matrix = [[data["fx"], 0.0, data["cx"]], [0.0, data["fy"], data["cy"]], [0.0, 0.0, 1.0]]
        return CameraModel(data["width"], data["height"], matrix, data.get("distortion", []),
                           data.get("distortion_model", "plumb_bob"))
    except KeyError as error:
        raise CameraError(f"camera YAML lacks {error.args[0]!r}") from None
    except (TypeError, ValueError) as error:
        if isinstance(error, CameraError):
            raise
        raise CameraError(f"camera YAML: {error}") from None


def load_camera_yaml(path: str | Path) -> CameraModel:
    """The camera of a YAML file (camera_calibration's layout or our sequences'); CameraError naming the problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise CameraError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise CameraError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise CameraError(f"{path}: not YAML ({str(error).splitlines()[0]})") from None
    try:
        return camera_from_dict(data)
    except CameraError as error:
        raise CameraError(f"{path}: {error}") from None

"""Rotation matrices <-> unit quaternions (Hamilton convention, (x, y, z, w) order as ROS and TUM write them)."""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["quaternion_to_rotation", "rotation_to_quaternion"]


def quaternion_to_rotation(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """(3, 3) float64 rotation of a quaternion, normalised first."""
    q = np.array([qw, qx, qy, qz], np.float64)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rotation_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(3, 3) rotation -> unit quaternion (x, y, z, w) with w >= 0, through the axis-angle of cv2.Rodrigues."""
    vector = cv2.Rodrigues(np.asarray(rotation, np.float64).reshape(3, 3))[0].reshape(3)
    angle = float(np.linalg.norm(vector))
    axis = vector / angle if angle > 1e-15 else np.zeros(3)
    x, y, z = (axis * np.sin(angle / 2.0)).tolist()
    return x, y, z, float(np.cos(angle / 2.0))

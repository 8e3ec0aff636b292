"""Quaternion <-> rotation matrix (usp_core.geometry.rotation) against OpenCV's Rodrigues."""
import cv2
import numpy as np

from usp_core.geometry.rotation import quaternion_to_rotation, rotation_to_quaternion


def test_quaternion_matches_rodrigues():
    axis, angle = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5]), 0.7
    qx, qy, qz = axis * np.sin(angle / 2)
    np.testing.assert_allclose(quaternion_to_rotation(qx, qy, qz, np.cos(angle / 2)),
                               cv2.Rodrigues(axis * angle)[0], atol=1e-12)
    np.testing.assert_allclose(rotation_to_quaternion(cv2.Rodrigues(axis * angle)[0]), [qx, qy, qz, np.cos(angle / 2)],
                               atol=1e-12)

"""Pictures of matches: the two images side by side, RANSAC inlier matches as lines."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from usp_core.evaluation.metrics import warp_points
from usp_core.evaluation.runner import MatchExample
from usp_core.support.atomic import write_bytes_atomic

INLIER_COLOUR = (80, 200, 60)  # BGR green: RANSAC inlier match lines
KEYPOINT_COLOUR = (0, 170, 255)  # BGR orange: every detected keypoint
OUTLINE_COLOUR = (255, 160, 0)  # BGR blue: image a's border mapped into image b by the true homography
HEADER_HEIGHT = 24  # px: black caption strip above the pair


def match_image(example: MatchExample, method: str) -> np.ndarray:
    """(24 + H, W_a + W_b, 3) uint8 BGR picture of one pair: keypoints, inlier matches, caption."""
    image_a = cv2.cvtColor(example.pair.image_a, cv2.COLOR_GRAY2BGR)
    image_b = cv2.cvtColor(example.pair.image_b, cv2.COLOR_GRAY2BGR)
    offset = np.array([image_a.shape[1], 0], dtype=np.float64)
    canvas = np.concatenate([image_a, image_b], axis=1)
    for points, shift in ((example.features_a.keypoints, np.zeros(2)), (example.features_b.keypoints, offset)):
        for x, y in np.asarray(points, np.float64) + shift:
            cv2.circle(canvas, (int(round(x)), int(round(y))), 2, KEYPOINT_COLOUR, -1, cv2.LINE_AA)
    for i, j in example.matches[example.inliers]:
        start = np.round(example.features_a.keypoints[i]).astype(int)
        end = np.round(example.features_b.keypoints[j] + offset).astype(int)
        cv2.line(canvas, tuple(int(v) for v in start), tuple(int(v) for v in end), INLIER_COLOUR, 1, cv2.LINE_AA)
    _draw_true_outline(canvas, example, offset)
    error = f"{example.corner_error:.1f} px" if math.isfinite(example.corner_error) else "failed"
    text = (f"{method}  {example.pair.sequence} 1-{example.pair.index}:  {int(example.inliers.sum())} inliers / "
            f"{len(example.matches)} matches, corner error {error}")
    header = np.zeros((HEADER_HEIGHT, canvas.shape[1], 3), dtype=np.uint8)
    cv2.putText(header, text, (6, HEADER_HEIGHT - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([header, canvas], axis=0)


def _draw_true_outline(canvas: np.ndarray, example: MatchExample, offset: np.ndarray) -> None:
    """Draw, on image b, the border of image a mapped by the ground-truth homography (the shared region)."""
    h, w = example.pair.image_a.shape[:2]
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    outline = warp_points(corners, example.pair.homography) + offset
    if np.all(np.isfinite(outline)) and np.abs(outline).max() < 1e5:
        cv2.polylines(canvas, [np.round(outline).astype(np.int32)], True, OUTLINE_COLOUR, 1, cv2.LINE_AA)


def save_match_images(folder: str | Path, method: str, examples: list[MatchExample]) -> list[Path]:
    """Write <method>_<sequence>_1-<k>.png in folder for each example, atomically; returns the paths."""
    paths = []
    for example in examples:
        ok, encoded = cv2.imencode(".png", match_image(example, method))
        if not ok:
            raise RuntimeError(f"cannot encode match image for {method} {example.pair.sequence}")
        name = f"{method}_{example.pair.sequence}_1-{example.pair.index}.png"
        paths.append(write_bytes_atomic(Path(folder) / name, encoded.tobytes()))
    return paths

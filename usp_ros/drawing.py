"""Debug pictures for RViz: keypoints coloured by score, and matches between two frames side by side.

(usp_core.evaluation.visualize draws evaluation pairs, with captions and the ground-truth outline
of a MatchExample; these are the plain per-frame pictures the nodes publish.)
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["score_colours", "draw_keypoints", "draw_matches"]

KEYPOINT_RADIUS = 3  # px, circle radius of a keypoint
MATCH_COLOUR = (80, 200, 60)  # BGR green: match lines
MATCH_POINT_COLOUR = (0, 170, 255)  # BGR orange: matched points
MAX_MATCH_LINES = 80  # match lines drawn at most (the others' points still get their dots)


def score_colours(scores: np.ndarray) -> np.ndarray:
    """(N,) scores in [0, 1] -> (N, 3) uint8 BGR colours of OpenCV's TURBO map (blue low, red high)."""
    levels = np.clip(np.round(np.asarray(scores, np.float64) * 255.0), 0, 255).astype(np.uint8)
    return cv2.applyColorMap(levels.reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(-1, 3)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) BGR uint8 -> a (H, W, 3) BGR uint8 copy."""
    if image.ndim == 2:
        return cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_GRAY2BGR)
    return np.array(image, dtype=np.uint8, copy=True)


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]))), int(round(float(point[1])))


def draw_keypoints(bgr: np.ndarray, keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """A BGR copy of ``bgr`` ((H, W, 3) or grey (H, W) uint8) with a circle per keypoint.

    keypoints: (N, 2) pixel (x, y); scores: (N,) in [0, 1], giving each circle's colour (score_colours).
    """
    canvas = _as_bgr(bgr)
    for point, colour in zip(np.asarray(keypoints, np.float64), score_colours(scores)):
        cv2.circle(canvas, _pixel(point), KEYPOINT_RADIUS, tuple(int(c) for c in colour), 1, cv2.LINE_AA)
    return canvas


def draw_matches(bgr_a: np.ndarray, bgr_b: np.ndarray, points_a: np.ndarray, points_b: np.ndarray,
                 max_lines: int = MAX_MATCH_LINES) -> np.ndarray:
    """Image a left of image b (max height, W_a + W_b, 3) uint8: a dot on each matched point (K, 2) a[k] <-> b[k],
    and a line for every match while there are at most ``max_lines``, else for an evenly spaced subset of them
    (hundreds of lines hide the images).

    Images may be BGR or grey; one shorter than the other is padded with black at the bottom.
    """
    bgr_a, bgr_b = _as_bgr(bgr_a), _as_bgr(bgr_b)
    if len(points_a) != len(points_b):
        raise ValueError(f"points_a has {len(points_a)} points, points_b {len(points_b)}")
    height = max(bgr_a.shape[0], bgr_b.shape[0])
    canvas = np.zeros((height, bgr_a.shape[1] + bgr_b.shape[1], 3), dtype=np.uint8)
    canvas[: bgr_a.shape[0], : bgr_a.shape[1]] = bgr_a
    canvas[: bgr_b.shape[0], bgr_a.shape[1]:] = bgr_b
    points_a = np.asarray(points_a, np.float64)
    points_b = np.asarray(points_b, np.float64) + np.array([bgr_a.shape[1], 0.0])
    step = max(1, -(-len(points_a) // max(1, max_lines)))  # ceil(K / max_lines)
    for point_a, point_b in zip(points_a[::step], points_b[::step]):
        cv2.line(canvas, _pixel(point_a), _pixel(point_b), MATCH_COLOUR, 1, cv2.LINE_AA)
    for point in np.concatenate([points_a, points_b]):
        cv2.circle(canvas, _pixel(point), 2, MATCH_POINT_COLOUR, -1, cv2.LINE_AA)
    return canvas

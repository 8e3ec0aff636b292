"""Debug pictures a person can read: keypoints coloured by score, and matches as short flow tracks.

Both draw on the frame in dimmed grey, so the marks are the only colour in the picture.
:func:`draw_keypoints` rings every keypoint in the colour of its score's rank in the frame.
:func:`draw_tracks` draws, on the current frame, where each matched point came from: a line through its
positions in the last frames (its track) and a dot at the current end. One frame's motion at 10 to 30 Hz
is a pixel or two, hidden under the dot; ten frames of it show the flow. A 640x480
frame has several hundred inliers, and that many lines hide the image, so at most ``max_tracks`` are
drawn, spread evenly over the image (the first match in each cell of a grid). :func:`caption` puts the
numbers on a dark band at the top. (usp_core.evaluation.visualize draws evaluation pairs side by side,
with the ground-truth outline.)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["CAPTION_HEIGHT", "MAX_TRACKS", "score_colours", "score_ranks", "draw_keypoints", "draw_tracks", "caption",
           "spread_sample"]

BACKDROP_BRIGHTNESS = 0.6  # the frame is drawn on in grey at this share of its brightness, so the marks stand out
KEYPOINT_RADIUS = 3  # px, circle radius of a keypoint
KEYPOINT_LEVELS = (0.1, 0.9)  # score_colours levels of the weakest and the best keypoint (TURBO's ends are dark)
MAX_TRACKS = 150  # tracks drawn at most: about one per 45x45 px cell of a 640x480 frame
TRACK_COLOUR = (0, 255, 0)  # BGR pure green: the line through a track's positions, and the dot
TRACK_END_RADIUS = 2  # px, the dot at the current position (in a dark ring, so it shows on light and green areas)
TRACK_RING_COLOUR = (0, 0, 0)  # BGR black
CAPTION_HEIGHT = 22  # px, height of the caption band
CAPTION_SHADE = 0.25  # the band keeps this share of the image's brightness
CAPTION_SCALE = 0.5  # cv2.FONT_HERSHEY_SIMPLEX scale: about 10 px capitals


def score_colours(scores: np.ndarray) -> np.ndarray:
    """(N,) scores in [0, 1] -> (N, 3) uint8 BGR colours of OpenCV's TURBO map (blue low, red high)."""
    levels = np.clip(np.round(np.asarray(scores, np.float64) * 255.0), 0, 255).astype(np.uint8)
    if len(levels) == 0:
        return np.zeros((0, 3), np.uint8)  # cv2.applyColorMap refuses an empty array
    return cv2.applyColorMap(levels.reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(-1, 3)


def _backdrop(image: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) BGR uint8 -> (H, W, 3) BGR uint8: the image in grey, dimmed to BACKDROP_BRIGHTNESS
    (a new array), so colour marks drawn on it are the only colour in the picture."""
    image = np.asarray(image, np.uint8)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return cv2.cvtColor(cv2.convertScaleAbs(grey, alpha=BACKDROP_BRIGHTNESS), cv2.COLOR_GRAY2BGR)


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]))), int(round(float(point[1])))


def score_ranks(scores: np.ndarray) -> np.ndarray:
    """(N,) scores -> (N,) float64 in [0, 1]: the rank of each among the N (0 the lowest, 1 the highest; equal
    scores share their mean rank); 0.5 for a single score."""
    scores = np.asarray(scores, np.float64)
    if len(scores) < 2:
        return np.full(len(scores), 0.5)
    ordered = np.sort(scores)
    lowest, highest = np.searchsorted(ordered, scores, "left"), np.searchsorted(ordered, scores, "right") - 1
    return (lowest + highest) / (2.0 * (len(scores) - 1))


def draw_keypoints(bgr: np.ndarray, keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """A BGR copy of ``bgr`` ((H, W, 3) or grey (H, W) uint8) with a circle per keypoint.

    keypoints: (N, 2) pixel (x, y); scores: (N,), giving each circle's colour by its rank in the frame
    (:func:`score_ranks` onto score_colours' levels KEYPOINT_LEVELS: red the best, blue the weakest). Ranks,
    not the scores themselves: a detector's top-k all score high (0.86 to 1.0 on a photo), one colour.
    """
    canvas = _backdrop(bgr)
    low, high = KEYPOINT_LEVELS
    colours = score_colours(low + (high - low) * score_ranks(scores))
    for point, colour in zip(np.asarray(keypoints, np.float64), colours):
        cv2.circle(canvas, _pixel(point), KEYPOINT_RADIUS, tuple(int(c) for c in colour), 1, cv2.LINE_AA)
    return canvas


def spread_sample(points: np.ndarray, image_size: tuple[int, int], count: int) -> np.ndarray:
    """Indices (ascending) of at most ``count`` of the (N, 2) pixel points, spread evenly over an image of
    (width, height): the first point of each cell of a grid of about ``count`` cells (an evenly spaced subset of
    those cells when there are more). All indices when N <= count."""
    if len(points) <= count:
        return np.arange(len(points))
    if count <= 0:
        return np.zeros(0, np.int64)
    width, height = image_size
    side = math.sqrt(width * height / count)
    columns, rows = max(1, round(width / side)), max(1, round(height / side))
    points = np.asarray(points, np.float64)
    column = np.clip(np.floor((points[:, 0] + 0.5) * columns / width), 0, columns - 1).astype(np.int64)
    row = np.clip(np.floor((points[:, 1] + 0.5) * rows / height), 0, rows - 1).astype(np.int64)
    _, first = np.unique(row * columns + column, return_index=True)  # cells in raster order
    if len(first) > count:
        first = first[np.linspace(0, len(first) - 1, count).round().astype(np.int64)]
    return np.sort(first)


def draw_tracks(bgr: np.ndarray, tracks: Sequence[np.ndarray], caption: str,
                max_tracks: int = MAX_TRACKS) -> np.ndarray:
    """The current frame ((H, W) grey or (H, W, 3) BGR uint8) as a BGR copy with the matches' flow tracks.

    tracks: K arrays (L_k, 2), L_k >= 1, the pixel (x, y) positions of one matched point in the recent frames,
    oldest first, the last one in this frame (usp_core.geometry.tracking.TrackTrails; a (K, L, 2) array also works).
    Each drawn track is a 1 px polyline through its positions and a dot at the current end; at most
    ``max_tracks`` are drawn, spread over the image by their current positions (:func:`spread_sample`).
    ``caption`` goes on a dark band at the top (:func:`caption`).
    """
    tracks = [np.asarray(track, np.float64).reshape(-1, 2) for track in tracks]
    if any(len(track) == 0 for track in tracks):
        raise ValueError("every track needs at least its current position")
    canvas = _backdrop(bgr)
    ends = np.array([track[-1] for track in tracks]).reshape(-1, 2)
    chosen = [tracks[index] for index in spread_sample(ends, (canvas.shape[1], canvas.shape[0]), max_tracks)]
    cv2.polylines(canvas, [np.round(track).astype(np.int32) for track in chosen if len(track) > 1], False,
                  TRACK_COLOUR, 1, cv2.LINE_AA)
    for track in chosen:
        cv2.circle(canvas, _pixel(track[-1]), TRACK_END_RADIUS + 1, TRACK_RING_COLOUR, -1, cv2.LINE_AA)
        cv2.circle(canvas, _pixel(track[-1]), TRACK_END_RADIUS, TRACK_COLOUR, -1, cv2.LINE_AA)
    return _caption(canvas, caption)


def caption(bgr: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in white on a dark band across the top of ``bgr`` ((H, W, 3) uint8, in place); returns it.

    The band darkens the image under it rather than hiding it (the top rows stay faintly visible).
    """
    band = bgr[:CAPTION_HEIGHT]
    band[:] = (band * CAPTION_SHADE).astype(np.uint8)
    baseline = (CAPTION_HEIGHT + 10) // 2  # capitals of about 10 px, centred
    cv2.putText(bgr, text, (6, baseline), cv2.FONT_HERSHEY_SIMPLEX, CAPTION_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return bgr


_caption = caption  # draw_tracks' parameter ``caption`` hides the function inside it

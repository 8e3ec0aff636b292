"""Feature tracks for VO/VIO estimators: per frame, each tracked point's id, pixel, normalised coordinates,
velocity and age, from the track ids the tracker hands out (usp_core.geometry.tracking.FrameTracker).

What estimators read (OpenVINS: "the uv pixel location, and a unique ID over time"; VINS-Mono/Fusion:
undistorted normalised points with id, pixel and velocity, only points seen more than once) is all here:

- id: the track id (never 0; 0 rows of a frame are skipped);
- u, v: pixel of the point in this frame (distorted, as detected);
- x, y: its undistorted normalised coordinates (NaN without a camera model);
- velocity: change of (x, y) (and of (u, v)) since the previous frame the track was seen in, per second of
  stamp difference; 0 on a track's first frame (as VINS-Fusion's feature tracker does);
- age: frames this id has been seen in, this one included (1 on its first frame); a track that misses a
  frame is forgotten and its id never comes back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TrackedPoints", "TrackHistory"]


@dataclass(frozen=True)
class TrackedPoints:
    """One frame's tracked points, K of them: ids (K,) uint64, rows (K,) int64 (row in the frame's Features),
    pixels (K, 2) float32 (u, v), normalised (K, 2) float64 (x, y; NaN without a camera model), pixel_velocity
    (K, 2) and velocity (K, 2) float64 per second (pixels / normalised units), age (K,) uint32."""

    ids: np.ndarray
    rows: np.ndarray
    pixels: np.ndarray
    normalised: np.ndarray
    pixel_velocity: np.ndarray
    velocity: np.ndarray
    age: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> TrackedPoints:
        """The points of ``rows`` ((K,) bool mask or indices)."""
        return TrackedPoints(self.ids[rows], self.rows[rows], self.pixels[rows], self.normalised[rows],
                             self.pixel_velocity[rows], self.velocity[rows], self.age[rows])


class TrackHistory:
    """The last frame's position and age of every live track; :meth:`update` turns a frame into TrackedPoints."""

    def __init__(self) -> None:
        self._stamp: float | None = None
        self._ids = np.zeros(0, np.uint64)  # sorted ids of the last frame
        self._pixels = np.zeros((0, 2))
        self._normalised = np.zeros((0, 2))
        self._age = np.zeros(0, np.uint32)

    def reset(self) -> None:
        """Forget every track (e.g. when the tracker restarts)."""
        self.__init__()

    def update(self, stamp_s: float, track_ids: np.ndarray, pixels: np.ndarray,
               normalised: np.ndarray | None = None) -> TrackedPoints:
        """A frame at ``stamp_s`` seconds: (N,) track ids (0 = no track, skipped), (N, 2) pixels and (N, 2) normalised
        coordinates (None: unknown). Returns its TrackedPoints, in row order; the frame becomes the last one."""
        track_ids = np.asarray(track_ids, np.uint64).reshape(-1)
        pixels = np.asarray(pixels, np.float64).reshape(-1, 2)
        normalised = np.full_like(pixels, np.nan) if normalised is None else np.asarray(normalised, np.float64)
        rows = np.flatnonzero(track_ids != 0)
        ids, pixels, normalised = track_ids[rows], pixels[rows], normalised[rows]
        seen, previous = self._previous_rows(ids)
        dt = stamp_s - self._stamp if self._stamp is not None else 0.0
        pixel_velocity, velocity = np.zeros_like(pixels), np.zeros_like(normalised)
        age = np.ones(len(ids), np.uint32)
        if dt > 0.0:
            pixel_velocity[seen] = (pixels[seen] - self._pixels[previous]) / dt
            velocity[seen] = (normalised[seen] - self._normalised[previous]) / dt
        age[seen] = self._age[previous] + 1
        points = TrackedPoints(ids, rows, pixels.astype(np.float32), normalised, pixel_velocity, velocity, age)
        order = np.argsort(ids, kind="stable")
        self._stamp, self._ids, self._pixels = stamp_s, ids[order], pixels[order]
        self._normalised, self._age = normalised[order], age[order]
        return points

    def _previous_rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K,) bool: which ids were in the last frame; and their rows there (for the True ones)."""
        if len(self._ids) == 0:
            return np.zeros(len(ids), bool), np.zeros(0, np.int64)
        where = np.clip(np.searchsorted(self._ids, ids), 0, len(self._ids) - 1)
        seen = self._ids[where] == ids
        return seen, where[seen]

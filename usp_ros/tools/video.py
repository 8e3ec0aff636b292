"""The front-end's annotated video: BGR frames to .mp4/.avi (cv2.VideoWriter) or .gif (Pillow).

The frames go to a hidden file beside the video (``.<stem>.partial<suffix>``) that replaces it when closed, so a run
that dies never leaves a truncated video at its path (an older one stays).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["VIDEO_SUFFIXES", "VideoWriter"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".gif")
GIF_MAX_FRAMES = 300  # a GIF holds its frames in memory until the end


class VideoWriter:
    """(H, W, 3) uint8 BGR frames of one size to ``path``: MPEG-4 (.mp4), Motion JPEG (.avi), or a looping GIF
    at half size holding the first GIF_MAX_FRAMES frames. ``frames`` counts the frames written."""

    def __init__(self, path: Path, fps: float) -> None:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ValueError(f"a video must end in {', '.join(VIDEO_SUFFIXES)}, got {path}")
        self.path, self.fps = path, fps
        self._partial = path.with_name(f".{path.stem}.partial{path.suffix}")
        self._partial.unlink(missing_ok=True)  # a killed run's
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._gif: list[np.ndarray] = []  # (H/2, W/2, 3) RGB

    def write(self, bgr: np.ndarray) -> None:
        if self.path.suffix.lower() == ".gif":
            if len(self._gif) < GIF_MAX_FRAMES:
                half = cv2.resize(bgr, (bgr.shape[1] // 2, bgr.shape[0] // 2), interpolation=cv2.INTER_AREA)
                self._gif.append(cv2.cvtColor(half, cv2.COLOR_BGR2RGB))
                self.frames += 1
            return
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"))
            self._writer = cv2.VideoWriter(str(self._partial), fourcc, self.fps, (bgr.shape[1], bgr.shape[0]))
            if not self._writer.isOpened():
                raise OSError(f"cannot write video {self.path}")
        self._writer.write(bgr)
        self.frames += 1

    def close(self) -> None:
        """Finish the file (a GIF is written only now) and move it to ``path``; nothing when no frame came."""
        if self._writer is not None:
            self._writer.release()
        if self._gif:
            from PIL import Image  # Pillow comes with matplotlib; only GIFs need it

            first, *rest = (Image.fromarray(frame) for frame in self._gif)
            first.save(self._partial, format="GIF", save_all=True, append_images=rest, duration=int(1000 / self.fps),
                       loop=0)
        if self.frames:
            os.replace(self._partial, self.path)

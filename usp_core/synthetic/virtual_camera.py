"""A virtual camera flying over one still photo, with the exact homography between its frames.

At frame ``t`` the camera sees the photo through a homography built from a smooth random pose: the
view centre wanders over the photo, the view rotates, zooms and tilts (perspective). Each pose
parameter is a sum of three slow sinusoids with seeded random frequencies and phases, so the path is
smooth, repeatable and never ends. Since every frame is a homography of the same photo, the motion
between two frames is a homography known exactly: ``homography_between(i, j)`` maps frame ``i``
pixels to frame ``j`` pixels. Pure numpy/OpenCV; pixel convention as OpenCV (centre of the top-left
pixel at (0, 0)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

__all__ = ["VirtualCameraConfig", "VirtualCamera"]


@dataclass(frozen=True)
class VirtualCameraConfig:
    """Frame size and the ranges of the camera's motion."""

    width: int = 640  # frame width in pixels
    height: int = 480  # frame height in pixels
    coverage: float = 0.55  # at rest the view spans this fraction of the photo (on the tighter axis)
    max_shift: float = 0.1  # the view centre wanders up to this fraction of the photo size from its centre
    max_rotation_deg: float = 15.0  # in-plane rotation amplitude
    zoom_range: float = 0.15  # relative zoom amplitude: view scale in [1 - zoom_range, 1 + zoom_range]
    perspective: float = 0.08  # tilt amplitude: the frame's edges differ in scale by up to this fraction
    period_frames: float = 300.0  # slowest motion period in frames (10 s at 30 Hz); components run 1-3x faster
    seed: int = 0  # seeds the path: same seed, same flight

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"frame size must be at least 8x8, got {self.width}x{self.height}")
        if not 0.0 < self.coverage <= 1.0:
            raise ValueError(f"coverage must be in (0, 1], got {self.coverage}")
        if not 0.0 <= self.zoom_range < 1.0:
            raise ValueError(f"zoom_range must be in [0, 1), got {self.zoom_range}")
        if not 0.0 <= self.perspective < 1.0:
            raise ValueError(f"perspective must be in [0, 1), got {self.perspective}")
        if self.period_frames <= 0:
            raise ValueError(f"period_frames must be positive, got {self.period_frames}")


_POSE_PARAMETERS = ("shift_x", "shift_y", "rotation", "zoom", "tilt_x", "tilt_y")


class VirtualCamera:
    """Frames of one photo seen along a smooth random homography path.

    photo: (H, W, 3) BGR or (H, W) grey uint8. Frames are (height, width, 3) BGR uint8.
    """

    def __init__(self, photo: np.ndarray, config: VirtualCameraConfig | None = None) -> None:
        if photo.ndim == 2:
            photo = cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR)
        if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
            raise ValueError(f"photo must be (H, W) or (H, W, 3) uint8, got {photo.dtype} {photo.shape}")
        self.photo = photo
        self.config = config if config is not None else VirtualCameraConfig()
        rng = np.random.default_rng(self.config.seed)
        # per pose parameter: 3 frequencies (cycles per frame) and 3 phases
        self._frequencies = rng.uniform(1.0, 3.0, (len(_POSE_PARAMETERS), 3)) / self.config.period_frames
        self._phases = rng.uniform(0.0, 2.0 * math.pi, (len(_POSE_PARAMETERS), 3))

    def _pose(self, index: int) -> dict[str, float]:
        """Each pose parameter at frame ``index``, in [-1, 1]."""
        waves = np.sin(2.0 * math.pi * self._frequencies * index + self._phases).mean(axis=1)
        return dict(zip(_POSE_PARAMETERS, waves.tolist()))

    def frame_to_photo(self, index: int) -> np.ndarray:
        """(3, 3) homography mapping frame ``index`` pixels to photo pixels."""
        cfg = self.config
        pose = self._pose(index)
        photo_h, photo_w = self.photo.shape[:2]
        scale = cfg.coverage * min(photo_w / cfg.width, photo_h / cfg.height) * (1.0 + cfg.zoom_range * pose["zoom"])
        angle = math.radians(cfg.max_rotation_deg * pose["rotation"])
        centre_x = (photo_w - 1) / 2 + cfg.max_shift * photo_w * pose["shift_x"]
        centre_y = (photo_h - 1) / 2 + cfg.max_shift * photo_h * pose["shift_y"]
        to_centre = np.array([[1.0, 0.0, -(cfg.width - 1) / 2], [0.0, 1.0, -(cfg.height - 1) / 2], [0.0, 0.0, 1.0]])
        tilt = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                         [2.0 * cfg.perspective * pose["tilt_x"] / cfg.width,
                          2.0 * cfg.perspective * pose["tilt_y"] / cfg.height, 1.0]])
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        place = np.array([[cos, -sin, centre_x], [sin, cos, centre_y], [0.0, 0.0, 1.0]])
        return place @ tilt @ to_centre

    def photo_to_frame(self, index: int) -> np.ndarray:
        """(3, 3) homography mapping photo pixels to frame ``index`` pixels."""
        return np.linalg.inv(self.frame_to_photo(index))

    def homography_between(self, source: int, target: int) -> np.ndarray:
        """(3, 3) homography mapping frame ``source`` pixels to frame ``target`` pixels, normalised to H[2, 2] = 1."""
        homography = self.photo_to_frame(target) @ self.frame_to_photo(source)
        return homography / homography[2, 2]

    def render(self, index: int) -> np.ndarray:
        """Frame ``index``: (height, width, 3) BGR uint8; outside the photo its content is mirrored."""
        return cv2.warpPerspective(self.photo, self.frame_to_photo(index), (self.config.width, self.config.height),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT101)

    def frames(self, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Endless (frame, homography previous -> current) pairs from frame ``start``; None for the first."""
        index = start
        yield self.render(index), None
        while True:
            index += 1
            yield self.render(index), self.homography_between(index - 1, index)

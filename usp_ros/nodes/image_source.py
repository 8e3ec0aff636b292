"""ROS 2 node ``image_source``: sensor_msgs/Image from a video, a folder, a V4L2 camera or a virtual camera.

For people without a camera driver at hand. ``source``:

- ``video``: a video file (``path``), through OpenCV;
- ``folder``: the images of a folder (``path``) in sorted name order;
- ``camera``: a V4L2 camera by index (``camera_index``), through cv2.VideoCapture;
- ``virtual``: a camera flying over one photo (``path``; empty = matplotlib's sample photo) along a
  smooth random homography path (usp_core.synthetic.virtual_camera); it also publishes ``ground_truth``
  (usp_ros/FrameMatch, valid, no matches) with the exact homography previous frame -> current frame.

Frames go out on ``image`` at ``rate`` Hz in ``encoding``, stamped with the node clock and
``frame_id``. Video and folder sources loop, or with ``loop: false`` the node stops at the end.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import Image

from usp_core.geometry.match_result import MatchResult
from usp_core.support.image_files import IMAGE_EXTENSIONS
from usp_core.synthetic.virtual_camera import VirtualCamera, VirtualCameraConfig
from usp_ros.bridge.images import ENCODINGS, ConversionError, numpy_to_image
from usp_ros.bridge.messages import frame_match_to_msg
from usp_ros.msg import FrameMatch
from usp_ros.support.parameters import NodeParameters, ParameterSpec
from usp_ros.support.qos import output_qos, reliability_from_name
from usp_ros.support.run import run

__all__ = ["SOURCES", "PARAMETERS", "default_photo", "bgr_to_encoding", "large_image_warning", "open_reader",
           "describe_source", "ImageSourceNode", "main"]

NODE_NAME = "image_source"
SOURCES = ("virtual", "video", "folder", "camera")
OUTPUT_ENCODINGS = ("bgr8", "rgb8", "mono8", "mono16", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8")
QOS_CHOICES = ("reliable", "best_effort")
VIRTUAL_SIZE = (640, 480)  # (width, height) of virtual frames when width/height are 0
LARGE_IMAGE_BYTES = 400_000  # Fast DDS's default shared-memory segment (512 KB) loses best-effort samples near this
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
_BGR_INDEX = {"b": 0, "g": 1, "r": 2}


def default_photo() -> Path | None:
    """A photo shipped by an installed pip package (matplotlib's sample data), or None."""
    try:
        import matplotlib
    except ImportError:
        return None
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return photo if photo.is_file() else None


def bgr_to_encoding(bgr: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) BGR uint8 -> the array of ``encoding``: bgr8/rgb8 (H, W, 3), mono8 (H, W), mono16 (H, W) uint16
    (grey x 257, full range), bayer_xxxx8 (H, W) uint8 mosaic sampling each pixel's colour of the pattern."""
    if encoding == "bgr8":
        return bgr
    if encoding == "rgb8":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if encoding == "mono8":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if encoding == "mono16":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    if encoding.startswith("bayer_") and encoding in ENCODINGS:
        pattern = encoding[len("bayer_"):-1]  # e.g. "rggb": colours at (0,0), (0,1), (1,0), (1,1)
        mosaic = np.empty(bgr.shape[:2], dtype=np.uint8)
        for k, colour in enumerate(pattern):
            row, col = divmod(k, 2)
            mosaic[row::2, col::2] = bgr[row::2, col::2, _BGR_INDEX[colour]]
        return mosaic
    raise ValueError(f"encoding must be one of {', '.join(OUTPUT_ENCODINGS)}, got {encoding!r}")


def large_image_warning(environment: dict[str, str], image_bytes: int) -> str | None:
    """A warning when images this large go out with Fast DDS defaults (no profile file set), else None."""
    rmw = environment.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if image_bytes < LARGE_IMAGE_BYTES or environment.get(PROFILE_VARIABLE) or "fastrtps" not in rmw:
        return None
    return (f"{PROFILE_VARIABLE} is unset: with Fast DDS defaults best-effort subscribers may receive none of these "
            f"{image_bytes // 1024} KB images; export {PROFILE_VARIABLE}=<usp_ros share>/config/"
            "fastdds_large_images.xml before starting this node (scripts/env.sh and the launch files do)")


class FrameReader(Protocol):
    def read(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The next (BGR frame, homography previous -> current or None), or None at the end."""

    def close(self) -> None:
        """Release the device or file."""


class _CaptureReader:
    """Video file or V4L2 camera through cv2.VideoCapture."""

    def __init__(self, capture: cv2.VideoCapture, what: str) -> None:
        if not capture.isOpened():
            raise ValueError(f"cannot open {what}")
        self._capture = capture

    def read(self):
        ok, frame = self._capture.read()
        return (frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), None) if ok else None

    def close(self) -> None:
        self._capture.release()


class _FolderReader:
    """The images of a folder, sorted by name; unreadable files are skipped."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ValueError(f"folder {folder} does not exist")
        self._files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self._files:
            raise ValueError(f"folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        self._next = 0

    def read(self):
        while self._next < len(self._files):
            frame = cv2.imread(str(self._files[self._next]), cv2.IMREAD_COLOR)
            self._next += 1
            if frame is not None:
                return frame, None
        return None

    def close(self) -> None:
        self._next = len(self._files)


class _VirtualReader:
    """Endless frames of a VirtualCamera, with the homography from the previous frame."""

    def __init__(self, photo_path: Path, config: VirtualCameraConfig) -> None:
        photo = cv2.imread(str(photo_path), cv2.IMREAD_COLOR)
        if photo is None:
            raise ValueError(f"cannot read photo {photo_path}")
        self._frames = VirtualCamera(photo, config).frames()

    def read(self):
        return next(self._frames)

    def close(self) -> None:
        self._frames.close()


@dataclass(frozen=True)
class SourceSpec:
    """What to open: see the node's parameters."""

    source: str = "virtual"  # virtual | video | folder | camera
    path: str = ""  # video file, image folder, or the virtual camera's photo ("" = default_photo())
    camera_index: int = 0  # V4L2 device index for source camera
    width: int = 0  # output width; 0 = the source's own (virtual: 640)
    height: int = 0  # output height; 0 = the source's own (virtual: 480)
    seed: int = 0  # virtual camera path


def open_reader(spec: SourceSpec) -> FrameReader:
    """A FrameReader for ``spec``; ValueError with a readable reason when the source cannot be opened."""
    if spec.source == "video":
        if not Path(spec.path).is_file():
            raise ValueError(f"video file {spec.path!r} does not exist")
        return _CaptureReader(cv2.VideoCapture(spec.path), f"video {spec.path}")
    if spec.source == "folder":
        return _FolderReader(Path(spec.path))
    if spec.source == "camera":
        return _CaptureReader(cv2.VideoCapture(spec.camera_index, cv2.CAP_V4L2), f"camera {spec.camera_index}")
    if spec.source == "virtual":
        photo = Path(spec.path) if spec.path else default_photo()
        if photo is None:
            raise ValueError("source virtual needs `path` to a photo (no sample photo is installed)")
        width, height = spec.width or VIRTUAL_SIZE[0], spec.height or VIRTUAL_SIZE[1]
        return _VirtualReader(photo, VirtualCameraConfig(width=width, height=height, seed=spec.seed))
    raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {spec.source!r}")


def describe_source(spec: SourceSpec) -> str:
    """The source in words, for the log: "folder /data/run1", "camera 0", "virtual camera over grace_hopper.jpg"."""
    if spec.source == "camera":
        return f"camera {spec.camera_index}"
    if spec.source == "virtual":
        photo = Path(spec.path) if spec.path else default_photo()
        return f"virtual camera over {photo.name if photo else 'no photo'}"
    return f"{spec.source} {spec.path}"


PARAMETERS: dict[str, ParameterSpec] = {  # every one read-only: the source is opened once, at start
    "source": ParameterSpec("virtual", "Where frames come from", read_only=True, choices=SOURCES),
    "path": ParameterSpec("", "Video file (video), image folder (folder) or photo (virtual; empty = matplotlib's "
                              "sample photo)", read_only=True),
    "camera_index": ParameterSpec(0, "V4L2 camera index (source camera)", read_only=True, integer_range=(0, 255)),
    "rate": ParameterSpec(30.0, "Frames per second published", read_only=True, float_range=(0.1, 1000.0)),
    "loop": ParameterSpec(True, "Video/folder: start again at the end (false: stop the node at the end)",
                          read_only=True),
    "encoding": ParameterSpec("bgr8", "Published encoding", read_only=True, choices=OUTPUT_ENCODINGS),
    "frame_id": ParameterSpec("camera", "header.frame_id of the images", read_only=True),
    "width": ParameterSpec(0, "Output width; 0 = the source's own (virtual: 640)", read_only=True,
                           integer_range=(0, 16384)),
    "height": ParameterSpec(0, "Output height; 0 = the source's own (virtual: 480)", read_only=True,
                            integer_range=(0, 16384)),
    "qos": ParameterSpec("reliable", "Image reliability", read_only=True, choices=QOS_CHOICES),
    "seed": ParameterSpec(0, "Seed of the virtual camera's path", read_only=True, integer_range=(0, 2**31 - 1)),
}


class ImageSourceNode(Node):
    """Publishes frames of one source at a fixed rate; ``finished`` completes when a non-looping source ends."""

    _reader: FrameReader | None = None  # a class default: rclpy destroys a half-built node at shutdown too

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        parameters = NodeParameters(self, PARAMETERS)
        parameters.check()
        values = parameters.values
        self._spec = SourceSpec(values["source"], values["path"], values["camera_index"], values["width"],
                                values["height"], values["seed"])
        self._values = values
        self._reader = open_reader(self._spec)
        self.finished = Future()
        self._image_pub = self.create_publisher(Image, "image", output_qos(reliability_from_name(values["qos"]), 1))
        self._truth_pub = (self.create_publisher(FrameMatch, "ground_truth", output_qos())
                           if values["source"] == "virtual" else None)
        self._previous_stamp = None
        self._warned_size = False
        self._timer = self.create_timer(1.0 / values["rate"], self._publish_next)
        self.get_logger().info(f"publishing {describe_source(self._spec)} on {self._image_pub.topic_name} at "
                               f"{values['rate']} Hz as {values['encoding']}")

    def _publish_next(self) -> None:
        try:
            frame = self._next_frame()
        except ValueError as error:  # looping, the source could not be opened again (folder emptied, video moved)
            self.get_logger().error(f"{error}: end of {describe_source(self._spec)}")
            self._timer.cancel()
            self.finished.set_result(False)
            return
        if frame is None:
            return
        image, homography = frame
        now = self.get_clock().now().to_msg()
        try:
            msg = numpy_to_image(bgr_to_encoding(self._resize(image), self._values["encoding"]))
        except ConversionError as error:  # a frame no Image can carry (a side over its limit): skipped
            self.get_logger().warning(f"frame skipped: {error}", throttle_duration_sec=5.0)
            return
        msg.header.stamp, msg.header.frame_id = now, self._values["frame_id"]
        self._warn_if_large(len(msg.data))
        self._image_pub.publish(msg)
        if self._truth_pub is not None and homography is not None:
            self._truth_pub.publish(frame_match_to_msg(msg.header,
                                                       MatchResult.from_homography(self._previous_stamp, homography)))
        self._previous_stamp = now

    def _next_frame(self):
        """The next frame; at the end, reopen (loop) or finish. None when there is nothing to publish; ValueError when
        a looping source cannot be reopened or gives nothing after it."""
        frame = self._reader.read()
        if frame is None and self._values["loop"] and self._spec.source in ("video", "folder"):
            self._reader.close()
            self._reader = open_reader(self._spec)
            frame = self._reader.read()
            if frame is None:
                raise ValueError(f"{describe_source(self._spec)} gives no frame after reopening")
        if frame is None and self._spec.source == "camera":
            self.get_logger().warning("camera returned no frame", throttle_duration_sec=5.0)
        elif frame is None and not self.finished.done():
            self.get_logger().info(f"end of {describe_source(self._spec)}")
            self.finished.set_result(True)
        return frame

    def _resize(self, image: np.ndarray) -> np.ndarray:
        """Resize video/folder/camera frames to width x height when set (virtual frames are rendered at that size)."""
        width, height = self._values["width"], self._values["height"]
        if self._spec.source == "virtual" or not (width or height):
            return image
        size = (width or image.shape[1], height or image.shape[0])
        if size == (image.shape[1], image.shape[0]):
            return image
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def _warn_if_large(self, image_bytes: int) -> None:
        if self._warned_size:
            return
        self._warned_size = True
        warning = large_image_warning(dict(os.environ), image_bytes)
        if warning:
            self.get_logger().warning(warning)

    def destroy_node(self) -> None:
        """Release the source (device or file), then destroy the node."""
        if self._reader is not None:
            self._reader.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run until shutdown or the end of a non-looping source; 1 with one fatal log line when it cannot start."""
    return run(ImageSourceNode, args, name=NODE_NAME, done=lambda node: node.finished)


if __name__ == "__main__":
    raise SystemExit(main())

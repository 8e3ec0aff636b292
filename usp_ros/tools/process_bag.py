"""Offline: run the detector and the matcher's tracker over every image of a rosbag2, write a new bag.

``ros2 run usp_ros process_bag INPUT OUTPUT --image-topic /camera/image_raw`` reads INPUT (MCAP or
sqlite3 storage; sensor_msgs/Image in any encoding of usp_ros.bridge.images, or sensor_msgs/CompressedImage
JPEG/PNG), detects keypoints on every image (none is dropped, unlike the live detector) and matches each
frame as the matcher node does (usp_core.geometry.tracking.FrameTracker, the node's default parameters). OUTPUT, a
new rosbag2 (MCAP unless ``--storage sqlite3``), holds ``features`` (usp_ros/Features) and ``matches``
(usp_ros/FrameMatch) beside the image topic (/camera/image_raw -> /camera/features, /camera/matches; a
CompressedImage topic /camera/image_raw/compressed counts as /camera/image_raw). Every message carries
its image's header and is logged at the image's bag time. No ROS graph is involved.

Camera model and relative poses: ``--camera-yaml`` (camera_calibration's YAML, as the matcher's
``camera_yaml`` parameter) gives every frame's camera model; else the sensor_msgs/CameraInfo on
``--camera-info-topic`` (default: the image topic's sibling ``camera_info``, image_transport's convention,
when the bag has it) gives each frame its camera model (the CameraInfo with the image's stamp, else the
latest one before it, else the first);
with ``--model essential`` (or fundamental, auto) the FrameMatch messages carry the relative pose, also
written as geometry_msgs/TransformStamped on ``motion`` (/camera/motion) as the node's ``matches/motion``.

Bags are read and written with the pure-Python ``rosbags`` library; messages are (de)serialized by
rclpy (CDR, what rosbag2 stores), so the output reads back into the generated usp_ros messages.
The output is written into a temporary folder beside OUTPUT and renamed at the end, also after Ctrl-C
(then it holds the frames done so far), so a failed run never leaves half a bag at OUTPUT and
``--force`` replaces an existing OUTPUT only once the new one is complete.
Errors in the arguments or the input give one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import bisect
import posixpath
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from ament_index_python.packages import get_package_share_directory
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from tqdm import tqdm

from usp_core.geometry.camera import CameraError, CameraModel
from usp_core.geometry.tracking import MODELS, Frame, FrameTracker
from usp_core.inference.backends.base import BACKENDS
from usp_core.inference.detector import KeypointDetector
from usp_core.inference.features import Features
from usp_core.inference.precision import PRECISIONS
from usp_core.support.device import resolve_device
from usp_core.support.errors import first_line
from usp_ros.bridge.images import ConversionError
from usp_ros.bridge.messages import camera_from_info, features_to_msg, frame_match_to_msg, motion_transform
from usp_ros.msg import FrameMatch
from usp_ros.nodes import detector as detector_node
from usp_ros.nodes import matcher as matcher_node
from usp_ros.support.detection import detect_image_message
from usp_ros.support.parameters import defaults
from usp_ros.support.stamps import stamp_ns
from usp_ros.tools.stop_request import StopRequest

__all__ = ["BagError", "CameraTimeline", "detect", "main", "match", "open_input", "output_topics", "process_bag",
           "read_cameras"]

IMAGE_TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage}
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSION = 9  # rosbag2 metadata version written by Jazzy and Kilted
# What one bad frame raises once deserialized (an undecodable image: ConversionError, cv2.error; geometry on degenerate
# points: ValueError, LinAlgError): the frame is skipped and reported, the run goes on. A backend or device failure
# (BackendError, CUDA errors: RuntimeError) is not a frame's fault and ends the run.
FRAME_ERRORS = (ConversionError, cv2.error, ValueError, np.linalg.LinAlgError)


class BagError(Exception):
    """An unusable input, topic or output; the message is the one line shown to the user."""


def output_topics(image_topic: str, compressed: bool) -> tuple[str, str]:
    """Image topic -> (features topic, matches topic) in the image topic's namespace.

    /camera/image_raw -> /camera/features; a compressed topic /camera/image_raw/compressed stands for
    /camera/image_raw (image_transport's naming), so it gives the same.
    """
    topic = "/" + image_topic.strip("/")
    if compressed and posixpath.basename(topic) == "compressed":
        topic = posixpath.dirname(topic)
    namespace = posixpath.dirname(topic)
    return posixpath.join(namespace, "features"), posixpath.join(namespace, "matches")


class CameraTimeline:
    """The camera models of a bag's CameraInfo messages by stamp: :meth:`at` gives a frame's (see the module
    docstring). Empty: no camera model for any frame."""

    def __init__(self, cameras: list[tuple[int, CameraModel]]) -> None:
        self._cameras = sorted(cameras, key=lambda item: item[0])  # (stamp ns, model)
        self._stamps = [stamp for stamp, _ in self._cameras]

    def __len__(self) -> int:
        return len(self._cameras)

    def at(self, stamp) -> CameraModel | None:
        """The camera of the frame with header stamp ``stamp``: same stamp, else the latest before, else the first."""
        if not self._cameras:
            return None
        index = bisect.bisect_right(self._stamps, stamp_ns(stamp)) - 1
        return self._cameras[max(index, 0)][1]


def read_cameras(reader: Reader, topic: str | None, image_topic: str) -> CameraTimeline:
    """The CameraInfo messages on ``topic`` (None: the image topic's sibling camera_info, if in the bag) as a
    CameraTimeline; BagError for a named topic that is absent, not CameraInfo or holds an unusable message. The
    sibling topic is optional: its unusable messages (an uncalibrated camera's K of zeros) are left out, with one
    line on stderr."""
    named = topic is not None
    topic = topic or posixpath.join(posixpath.dirname(_base_topic(image_topic)), "camera_info")
    connection = next((c for c in reader.connections if c.topic == topic), None)
    if connection is None or connection.msgtype != "sensor_msgs/msg/CameraInfo":
        if not named:
            return CameraTimeline([])
        found = "is not in the bag" if connection is None else f"carries {connection.msgtype}, not CameraInfo"
        raise BagError(f"camera info topic {topic} {found}")
    cameras, unusable = [], []
    for _, _, data in reader.messages(connections=[connection]):
        try:
            info = _deserialize(data, CameraInfo)
            cameras.append((stamp_ns(info.header.stamp), camera_from_info(info)))
        except (CameraError, ConversionError) as error:
            if named:
                raise BagError(f"camera info on {topic}: {first_line(error)}") from None
            unusable.append(first_line(error))
    if unusable:
        print(f"process_bag: {len(unusable)} of the CameraInfo messages on {topic} left out: {unusable[0]}",
              file=sys.stderr)
    return CameraTimeline(cameras)


def _base_topic(image_topic: str) -> str:
    """An image topic without image_transport's /compressed suffix."""
    topic = "/" + image_topic.strip("/")
    return posixpath.dirname(topic) if posixpath.basename(topic) == "compressed" else topic


def usp_typestore():
    """rosbags typestore of ROS 2 Kilted plus our messages, read from the installed msg/*.msg."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted((Path(get_package_share_directory("usp_ros")) / "msg").glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"usp_ros/msg/{path.stem}"))
    typestore.register(types)
    return typestore


def open_input(path: Path, topic: str) -> tuple[Reader, object]:
    """Open the bag at ``path`` -> (open reader, connection of ``topic``).

    BagError when the bag cannot be read, or the topic is absent, not an image topic, or empty.
    """
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError) as error:
        raise BagError(f"cannot read {path} as a rosbag2: {first_line(error)}") from None
    connection = next((c for c in reader.connections if c.topic == topic), None)
    problem = _topic_problem(reader, topic, connection)
    if problem:
        reader.close()
        raise BagError(problem)
    return reader, connection


def _topic_problem(reader: Reader, topic: str, connection) -> str | None:
    """Why ``topic`` (its ``connection``, None when absent) cannot be processed, or None when it can."""
    if connection is None:
        images = sorted({c.topic for c in reader.connections if c.msgtype in IMAGE_TYPES})
        return f"topic {topic} is not in the bag (image topics there: {', '.join(images) or 'none'})"
    if connection.msgtype not in IMAGE_TYPES:
        return f"topic {topic} carries {connection.msgtype}, not sensor_msgs/msg/Image or CompressedImage"
    if connection.msgcount == 0:
        return f"topic {topic} has no messages"
    return None


def detect(detector: KeypointDetector, msg: Image | CompressedImage) -> Features:
    """Image message -> Features in its pixels, as the detector node makes them (rows with NaN or inf dropped);
    ConversionError or cv2.error for a bad frame."""
    return detect_image_message(detector, msg).features


def match(tracker: FrameTracker, header: Header, features: Features, device: torch.device,
          camera: CameraModel | None = None) -> FrameMatch | None:
    """One frame's Features -> usp_ros/FrameMatch against the tracker's reference, as the matcher node makes it;
    None for a track's first frame, and (as the node skips it) for a frame without a camera model when the
    model is essential."""
    if camera is not None and (camera.width, camera.height) != features.image_size:
        camera = None  # as the node: a camera model of another image size is not used
    if camera is None and tracker.match_config.model == "essential":
        return None
    result = tracker.track(Frame.from_features(header.stamp, features, device, camera))
    return None if result is None else frame_match_to_msg(header, result)


def process_bag(reader: Reader, connection, output_path: Path, detector: KeypointDetector,
                tracker: FrameTracker | None, storage: str = "mcap", stop=lambda: False,
                cameras: CameraTimeline = CameraTimeline([])) -> tuple[int, int]:
    """Detect (and match, unless ``tracker`` is None) every image of ``connection`` (from :func:`open_input`).

    Writes a new bag at ``output_path``, which must not exist (Writer refuses it). ``stop()`` is asked before
    each frame: True ends the run early with a complete, shorter bag. Returns (frames written, frames
    skipped as bad: unreadable, undecodable or failing to match).
    """
    writer = Writer(output_path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
    writer.open()
    try:
        return _process(reader, connection, detector, tracker, writer, stop, cameras)
    finally:
        writer.close()


def _process(reader, connection, detector, tracker, writer, stop, cameras) -> tuple[int, int]:
    """The loop of process_bag: read, detect, match, write, until the messages end or ``stop()``; tqdm on stderr."""
    message_type, typestore = IMAGE_TYPES[connection.msgtype], usp_typestore()
    features_topic, matches_topic = output_topics(connection.topic, message_type is CompressedImage)
    features_out = writer.add_connection(features_topic, "usp_ros/msg/Features", typestore=typestore)
    matches_out = None if tracker is None else writer.add_connection(matches_topic, "usp_ros/msg/FrameMatch",
                                                                     typestore=typestore)
    motion_out = None  # added at the first pose, so a bag without poses has no empty motion topic
    written = skipped = 0
    with tqdm(total=connection.msgcount, unit="frame", desc=connection.topic, file=sys.stderr) as progress:
        for _, timestamp, data in reader.messages(connections=[connection]):
            if stop():
                break
            progress.update()
            try:
                msg = _deserialize(data, message_type)
                features = detect(detector, msg)
                frame_match = None if tracker is None else match(tracker, msg.header, features, detector.device,
                                                                 cameras.at(msg.header.stamp))
            except FRAME_ERRORS as error:
                skipped += 1
                progress.write(f"skipping bad frame at bag time {timestamp}: {first_line(error)}", file=sys.stderr)
                continue
            writer.write(features_out, timestamp, serialize_message(features_to_msg(msg.header, features)))
            if frame_match is not None:
                writer.write(matches_out, timestamp, serialize_message(frame_match))
            if frame_match is not None and frame_match.has_pose:
                if motion_out is None:
                    motion_out = writer.add_connection(posixpath.join(posixpath.dirname(matches_topic), "motion"),
                                                       "geometry_msgs/msg/TransformStamped", typestore=typestore)
                writer.write(motion_out, timestamp, serialize_message(motion_transform(frame_match)))
            written += 1
    return written, skipped


def _deserialize(data: bytes, message_type):
    """The message of CDR ``data``; ConversionError for bytes that are not one (rclpy raises a bare RuntimeError)."""
    try:
        return deserialize_message(data, message_type)
    except RuntimeError as error:
        raise ConversionError(first_line(error)) from None


def _detector_values(args: argparse.Namespace) -> dict:
    """The detector node's default parameters with this command's precision and calibration photos."""
    return {**defaults(detector_node.PARAMETERS), "precision": args.precision, "calibration_dir": args.calibration}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="process_bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="rosbag2 folder (MCAP or sqlite3) to read")
    parser.add_argument("output", type=Path, help="rosbag2 folder to write (must not exist unless --force)")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic to process")
    parser.add_argument("--model-path", default="", help="checkpoint or shipped model name; empty = bundled weights")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="inference runtime (default: auto)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    parser.add_argument("--storage", default="mcap", choices=tuple(STORAGES), help="output storage (default: mcap)")
    parser.add_argument("--no-matches", action="store_true", help="write features only, no matches")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="what the network computes in (default auto: the fastest its weights' gate passed)")
    parser.add_argument("--calibration", default="", help="precision int8: folder of calibration photos")
    parser.add_argument("--camera-yaml", default="", help="camera calibration YAML (camera_calibration's format) for "
                        "every frame, instead of the bag's CameraInfo")
    parser.add_argument("--camera-info-topic", default=None, help="sensor_msgs/CameraInfo topic (default: the image "
                        "topic's sibling camera_info when the bag has it)")
    parser.add_argument("--model", default=None, choices=MODELS, help="matcher geometry (default: the node's, "
                        "homography); essential needs camera info")
    parser.add_argument("--reprojection-threshold", type=float, default=None,
                        help="matcher inlier threshold in pixels (default: the node's, 3.0; use 1.0 for essential)")
    parser.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    return parser.parse_args(argv)


def _matcher_values(args: argparse.Namespace) -> dict:
    """The matcher node's default parameters with the command line's --model and --reprojection-threshold."""
    values = defaults(matcher_node.PARAMETERS)
    if args.model is not None:
        values["model"] = args.model
    if args.reprojection_threshold is not None:
        values["reprojection_threshold"] = args.reprojection_threshold
    return values


def _replace(staged: Path, output: Path) -> None:
    """Move the finished bag ``staged`` to ``output``; an existing ``output`` goes aside into ``staged``'s folder."""
    if output.exists():
        output.rename(staged.parent / "replaced")
    staged.rename(output)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ros2 run usp_ros process_bag`; 0 done, 1 every frame bad, 2 bad input or output, 130 stopped by
    Ctrl-C."""
    args = _parse_args(argv)
    output, source = args.output.resolve(), args.input.resolve()
    if output == source or source in output.parents or output in source.parents:
        print(f"process_bag: error: OUTPUT {output} would overwrite INPUT {source}", file=sys.stderr)
        return 2
    if output.exists() and not args.force:
        print(f"process_bag: error: {output} exists (use --force to replace it)", file=sys.stderr)
        return 2
    try:
        reader, connection = open_input(args.input, args.image_topic)
    except BagError as error:
        print(f"process_bag: error: {error}", file=sys.stderr)
        return 2
    try:
        return _run(args, reader, connection, output)
    finally:
        reader.close()


def _run(args: argparse.Namespace, reader: Reader, connection, output: Path) -> int:
    """main, once the input is open: load the model, process into a temporary folder, move the bag to ``output``."""
    try:
        detector = KeypointDetector.from_pretrained(args.model_path or None, resolve_device(args.device),
                                                    detector_node.detector_config(_detector_values(args)),
                                                    backend=args.backend)
    except detector_node.START_ERRORS as error:
        print(f"process_bag: error: cannot load the model: {first_line(error)}", file=sys.stderr)
        return 2
    try:
        tracker = None if args.no_matches else FrameTracker(*matcher_node.tracker_configs(_matcher_values(args)))
        cameras = (CameraTimeline([(0, matcher_node.camera_file(args.camera_yaml))]) if args.camera_yaml
                   else read_cameras(reader, args.camera_info_topic, connection.topic))
    except (ValueError, BagError) as error:
        print(f"process_bag: error: {error}", file=sys.stderr)
        return 2
    if tracker is not None and tracker.match_config.model == "essential" and not len(cameras):
        print("process_bag: error: --model essential needs CameraInfo in the bag (--camera-info-topic) or "
              "--camera-yaml", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        with StopRequest() as interrupt:
            written, skipped = process_bag(reader, connection, workdir / output.name, detector, tracker, args.storage,
                                           stop=lambda: interrupt.requested, cameras=cameras)
        _replace(workdir / output.name, output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the replaced bag, or what a failed run left
    summary = f"{written} frames -> {output}" + (f" ({skipped} bad frames skipped)" if skipped else "")
    print(f"process_bag: {'stopped by Ctrl-C: ' if interrupt.requested else ''}{summary}", file=sys.stderr)
    if interrupt.requested:
        return 130
    return 1 if skipped and not written else 0  # every frame bad: the run failed


if __name__ == "__main__":
    raise SystemExit(main())

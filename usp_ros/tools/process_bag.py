"""Offline: run the detector and the matcher's tracker over every image of a rosbag2, write a new bag.

``ros2 run usp_ros process_bag INPUT OUTPUT --image-topic /camera/image_raw`` reads INPUT (MCAP or
sqlite3 storage; sensor_msgs/Image in any encoding of usp_ros.bridge.images, or sensor_msgs/CompressedImage
JPEG/PNG), detects keypoints on every image (none is dropped, unlike the live detector) and matches each
frame as the matcher node does (usp_core.geometry.tracking.FrameTracker, the node's default parameters). OUTPUT, a
new rosbag2 (MCAP unless ``--storage sqlite3``), holds ``features`` (usp_ros/Features) and ``matches``
(usp_ros/FrameMatch) beside the image topic (/camera/image_raw -> /camera/features, /camera/matches; a
CompressedImage topic /camera/image_raw/compressed counts as /camera/image_raw). Every message carries
its image's header and is logged at the image's bag time. No ROS graph is involved.

Bags are read and written with the pure-Python ``rosbags`` library; messages are (de)serialized by
rclpy (CDR, what rosbag2 stores), so the output reads back into the generated usp_ros messages.
The output is written into a temporary folder beside OUTPUT and renamed at the end, also after Ctrl-C
(then it holds the frames done so far), so a failed run never leaves half a bag at OUTPUT and
``--force`` replaces an existing OUTPUT only once the new one is complete.
Errors in the arguments or the input give one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import posixpath
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import torch
from ament_index_python.packages import get_package_share_directory
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from tqdm import tqdm

from usp_core.geometry.tracking import Frame, FrameTracker
from usp_core.inference.backends.base import BACKENDS
from usp_core.inference.detector import KeypointDetector
from usp_core.inference.features import Features
from usp_core.support.device import resolve_device
from usp_core.support.errors import first_line
from usp_ros.bridge.images import ConversionError
from usp_ros.bridge.messages import features_to_msg, frame_match_to_msg
from usp_ros.msg import FrameMatch
from usp_ros.nodes import detector as detector_node
from usp_ros.nodes import matcher as matcher_node
from usp_ros.support.detection import detect_image_message
from usp_ros.support.parameters import defaults
from usp_ros.tools.stop_request import StopRequest

__all__ = ["BagError", "detect", "main", "match", "open_input", "output_topics", "process_bag"]

IMAGE_TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage}
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSION = 9  # rosbag2 metadata version written by Jazzy and Kilted


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


def match(tracker: FrameTracker, header: Header, features: Features, device: torch.device) -> FrameMatch | None:
    """One frame's Features -> usp_ros/FrameMatch against the tracker's reference, as the matcher node makes it;
    None for a track's first frame."""
    result = tracker.track(Frame.from_features(header.stamp, features, device))
    return None if result is None else frame_match_to_msg(header, result)


def process_bag(reader: Reader, connection, output_path: Path, detector: KeypointDetector,
                tracker: FrameTracker | None, storage: str = "mcap", stop=lambda: False) -> tuple[int, int]:
    """Detect (and match, unless ``tracker`` is None) every image of ``connection`` (from :func:`open_input`).

    Writes a new bag at ``output_path``, which must not exist (Writer refuses it). ``stop()`` is asked before
    each frame: True ends the run early with a complete, shorter bag. Returns (frames written, frames
    skipped as unreadable).
    """
    writer = Writer(output_path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
    writer.open()
    try:
        return _process(reader, connection, detector, tracker, writer, stop)
    finally:
        writer.close()


def _process(reader, connection, detector, tracker, writer, stop) -> tuple[int, int]:
    """The loop of process_bag: read, detect, match, write, until the messages end or ``stop()``; tqdm on stderr."""
    message_type, typestore = IMAGE_TYPES[connection.msgtype], usp_typestore()
    features_topic, matches_topic = output_topics(connection.topic, message_type is CompressedImage)
    features_out = writer.add_connection(features_topic, "usp_ros/msg/Features", typestore=typestore)
    matches_out = None if tracker is None else writer.add_connection(matches_topic, "usp_ros/msg/FrameMatch",
                                                                     typestore=typestore)
    written = skipped = 0
    with tqdm(total=connection.msgcount, unit="frame", desc=connection.topic, file=sys.stderr) as progress:
        for _, timestamp, data in reader.messages(connections=[connection]):
            if stop():
                break
            progress.update()
            msg = deserialize_message(data, message_type)
            try:
                features = detect(detector, msg)
            except (ConversionError, cv2.error) as error:
                skipped += 1
                progress.write(f"skipping bad frame at bag time {timestamp}: {str(error).strip().splitlines()[0]}")
                continue
            writer.write(features_out, timestamp, serialize_message(features_to_msg(msg.header, features)))
            frame_match = None if tracker is None else match(tracker, msg.header, features, detector.device)
            if frame_match is not None:
                writer.write(matches_out, timestamp, serialize_message(frame_match))
            written += 1
    return written, skipped


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
    parser.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    return parser.parse_args(argv)


def _replace(staged: Path, output: Path) -> None:
    """Move the finished bag ``staged`` to ``output``; an existing ``output`` goes aside into ``staged``'s folder."""
    if output.exists():
        output.rename(staged.parent / "replaced")
    staged.rename(output)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ros2 run usp_ros process_bag`; 0 done, 2 bad input or output, 130 stopped by Ctrl-C."""
    args = _parse_args(argv)
    output = args.output.resolve()
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
                                                    detector_node.detector_config(defaults(detector_node.PARAMETERS)),
                                                    backend=args.backend)
    except detector_node.START_ERRORS as error:
        print(f"process_bag: error: cannot load the model: {first_line(error)}", file=sys.stderr)
        return 2
    tracker = None if args.no_matches else FrameTracker(
        *matcher_node.tracker_configs(defaults(matcher_node.PARAMETERS)))
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        with StopRequest() as interrupt:
            written, skipped = process_bag(reader, connection, workdir / output.name, detector, tracker, args.storage,
                                           stop=lambda: interrupt.requested)
        _replace(workdir / output.name, output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the replaced bag, or what a failed run left
    summary = f"{written} frames -> {output}" + (f" ({skipped} unreadable frames skipped)" if skipped else "")
    print(f"process_bag: {'stopped by Ctrl-C: ' if interrupt.requested else ''}{summary}", file=sys.stderr)
    return 130 if interrupt.requested else 0


if __name__ == "__main__":
    raise SystemExit(main())

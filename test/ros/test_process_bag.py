"""process_bag on real sequences: rosbag2 of images in, rosbag2 of Features and FrameMatch out.

Input bags are written here with rosbags' writer from ../shared/data/sequences (skipped when absent);
process_bag runs as a child process (`python -m usp_ros.tools.process_bag`, from a temporary folder so the
installed usp_ros with its messages is imported); the output is read with rosbags and deserialized with
rclpy into the generated messages. Matching quality needs the trained bundled weights, as in
test_sequences.py: without them the quality checks are skipped.
"""
import re
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from geometry_msgs.msg import TransformStamped
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header, String

from usp_core.evaluation.pose import load_pose_sequence, relative_motion
from usp_core.geometry.two_view import rotation_angle_deg
from usp_core.inference.weights import BUNDLED_WEIGHTS
from usp_ros.bridge.images import numpy_to_compressed, numpy_to_image
from usp_ros.bridge.messages import rotation_from_msg
from usp_ros.msg import Features, FrameMatch

FIRST_STAMP_S = 100  # header stamp of frame i: FIRST_STAMP_S + i seconds
FIRST_BAG_TIME_NS = 5_000_000_000  # bag (log) time of frame i: this + i * 100 ms, unlike the header stamp
needs_weights = pytest.mark.skipif(not BUNDLED_WEIGHTS.is_file(), reason=f"no trained weights at {BUNDLED_WEIGHTS}")


def write_image_bag(path, images, topic, compressed=False, storage=StoragePlugin.MCAP, camera=None):
    """A rosbag2 at ``path`` with one sensor_msgs/Image (or CompressedImage JPEG) per array of ``images``; with
    ``camera`` (a CameraModel), a CameraInfo of the same stamp on the sibling topic camera_info before each."""
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(path, version=9, storage_plugin=storage) as writer:
        typestore = get_typestore(Stores.ROS2_KILTED)
        connection = writer.add_connection(topic, msgtype, typestore=typestore)
        info_topic = topic.rsplit("/", 1)[0] + "/camera_info"
        infos = None if camera is None else writer.add_connection(info_topic, "sensor_msgs/msg/CameraInfo",
                                                                  typestore=typestore)
        for index, image in enumerate(images):
            header = Header(stamp=Time(sec=FIRST_STAMP_S + index, nanosec=1000 * index), frame_id="camera")
            msg = numpy_to_compressed(image, header=header) if compressed else numpy_to_image(image, header=header)
            if camera is not None:
                info = CameraInfo(header=header, width=camera.width, height=camera.height, k=camera.matrix.ravel(),
                                  d=camera.distortion.tolist(), distortion_model=camera.model)
                writer.write(infos, FIRST_BAG_TIME_NS + index * 100_000_000, serialize_message(info))
            writer.write(connection, FIRST_BAG_TIME_NS + index * 100_000_000, serialize_message(msg))


def read_bag(path):
    """{topic: [(bag time ns, message)]} of a bag holding Features and FrameMatch, deserialized by rclpy."""
    types = {"usp_ros/msg/Features": Features, "usp_ros/msg/FrameMatch": FrameMatch,
             "geometry_msgs/msg/TransformStamped": TransformStamped}
    topics = {}
    with Reader(path) as reader:
        for connection, timestamp, data in reader.messages():
            msg = deserialize_message(data, types[connection.msgtype])
            topics.setdefault(connection.topic, []).append((timestamp, msg))
    return topics


def frames(shared_data, sequence, count):
    """The first ``count`` frames of a shared sequence, as read from their PNGs."""
    return [cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            for path in sorted((shared_data / "sequences" / sequence).glob("*.png"))[:count]]


def process_bag(tmp_path, *args):
    """Run process_bag to completion; returns the CompletedProcess (text stderr)."""
    return subprocess.run([sys.executable, "-m", "usp_ros.tools.process_bag", *map(str, args)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, check=False)


def wait_for_frames(stderr, count, total):
    """Read process_bag's progress bar (tqdm on stderr) until it shows at least ``count`` of ``total`` frames."""
    seen = ""
    while not any(int(done) >= count for done in re.findall(rf"(\d+)/{total} ", seen)):
        char = stderr.read(1)
        assert char, f"process_bag ended before {count} frames: {seen}"
        seen += char


def check_output(bag, namespace, count):
    """One Features per image (its header, its bag time), a FrameMatch per consecutive pair whose indices are rows
    of the two frames' Features; returns the matches."""
    topics = read_bag(bag)
    assert set(topics) == {f"{namespace}/features", f"{namespace}/matches"}
    features, matches = topics[f"{namespace}/features"], topics[f"{namespace}/matches"]
    assert [(t, m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id) for t, m in features] == [
        (FIRST_BAG_TIME_NS + i * 100_000_000, FIRST_STAMP_S + i, 1000 * i, "camera") for i in range(count)]
    assert all(len(m.keypoints.x) > 100 and len(m.descriptors.data) == len(m.keypoints.x) * m.descriptors.size
               for _, m in features)
    assert [(t, m.header.stamp.sec, m.reference_stamp.sec) for t, m in matches] == [
        (FIRST_BAG_TIME_NS + i * 100_000_000, FIRST_STAMP_S + i, FIRST_STAMP_S + i - 1) for i in range(1, count)]
    by_stamp = {m.header.stamp.sec: m.keypoints for _, m in features}
    for _, match in matches:  # indices are rows of the frames' Features; a track id for every current row
        current, reference = by_stamp[match.header.stamp.sec], by_stamp[match.reference_stamp.sec]
        np.testing.assert_array_equal(np.array(current.x)[match.current_indices], match.current_x)
        np.testing.assert_array_equal(np.array(reference.y)[match.reference_indices], match.reference_y)
        assert len(match.current_track_ids) == len(current.x)
    return [m for _, m in matches]


@needs_weights
def test_raw_images_in_mcap(shared_data, tmp_path):
    write_image_bag(tmp_path / "in", frames(shared_data, "tum_fr2", 20), "/camera/image_raw")
    result = process_bag(tmp_path, tmp_path / "in", tmp_path / "out", "--image-topic", "/camera/image_raw")
    assert result.returncode == 0, result.stderr
    matches = check_output(tmp_path / "out", "/camera", 20)
    assert [p.suffix for p in (tmp_path / "out").glob("*.mcap")] == [".mcap"]
    assert sum(m.valid for m in matches) >= 0.8 * len(matches), [m.num_inliers for m in matches]


@needs_weights
def test_compressed_images_in_sqlite3(shared_data, tmp_path):
    write_image_bag(tmp_path / "in", frames(shared_data, "kitti_odometry", 10), "/cam/image_raw/compressed",
                    compressed=True, storage=StoragePlugin.SQLITE3)
    result = process_bag(tmp_path, tmp_path / "in", tmp_path / "out", "--image-topic", "/cam/image_raw/compressed")
    assert result.returncode == 0, result.stderr
    matches = check_output(tmp_path / "out", "/cam", 10)
    assert sum(m.valid for m in matches) >= 0.8 * len(matches), [m.num_inliers for m in matches]


def write_error_bag(path, image):
    """A bag with /camera/image_raw (one image), /chatter (std_msgs/String) and /empty (images, none written)."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=typestore)
        chatter = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=typestore)
        writer.add_connection("/empty", "sensor_msgs/msg/Image", typestore=typestore)
        writer.write(images, FIRST_BAG_TIME_NS, serialize_message(numpy_to_image(image)))
        writer.write(chatter, FIRST_BAG_TIME_NS, serialize_message(String(data="hello")))


@pytest.mark.parametrize("case, args", [
    ("missing topic", ("in", "out", "--image-topic", "/nope")),
    ("not an image topic", ("in", "out", "--image-topic", "/chatter")),
    ("no messages on the topic", ("in", "out", "--image-topic", "/empty")),
    ("output exists", ("in", "exists", "--image-topic", "/camera/image_raw")),
    ("unreadable input", ("garbage", "out", "--image-topic", "/camera/image_raw")),
    ("missing input", ("absent", "out", "--image-topic", "/camera/image_raw")),
    ("output is the input", ("in", "in", "--image-topic", "/camera/image_raw", "--force")),
    ("output inside the input", ("in", "in/out", "--image-topic", "/camera/image_raw")),
])
def test_errors_give_one_line_and_status_2(case, args, shared_data, tmp_path):
    write_error_bag(tmp_path / "in", frames(shared_data, "tum_fr2", 1)[0])
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "metadata.yaml").write_text("not: [a bag")
    (tmp_path / "exists").mkdir()
    result = process_bag(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("process_bag: error: ")
    assert not (tmp_path / "out").exists()
    assert list((tmp_path / "exists").iterdir()) == []
    with Reader(tmp_path / "in") as reader:  # the input is untouched
        assert sum(1 for _ in reader.messages()) == 2 and not (tmp_path / "in" / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left behind


def test_force_replaces_an_existing_output(shared_data, tmp_path):
    write_image_bag(tmp_path / "in", frames(shared_data, "tum_fr2", 2), "/camera/image_raw")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale").write_text("old")
    result = process_bag(tmp_path, "in", "out", "--image-topic", "/camera/image_raw", "--force", "--no-matches")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "out" / "stale").exists()
    assert {topic: len(messages) for topic, messages in read_bag(tmp_path / "out").items()} == {"/camera/features": 2}
    with Reader(tmp_path / "out") as reader:
        assert [c.topic for c in reader.connections] == ["/camera/features"]


def test_ctrl_c_leaves_a_shorter_readable_bag(shared_data, tmp_path):
    images = frames(shared_data, "tum_fr2", 20)
    write_image_bag(tmp_path / "in", images * 10, "/camera/image_raw")  # 200 frames: some seconds of work
    child = subprocess.Popen([sys.executable, "-m", "usp_ros.tools.process_bag", "in", "out", "--image-topic",
                              "/camera/image_raw"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    wait_for_frames(child.stderr, 3, 200)
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=60) == 130, child.stderr.read()
    features = read_bag(tmp_path / "out")["/camera/features"]
    assert 3 <= len(features) < 200
    assert [m.header.stamp.sec for _, m in features] == [FIRST_STAMP_S + i for i in range(len(features))]


@needs_weights
@pytest.mark.parametrize("camera_from", ["camera_info in the bag", "--camera-yaml"])
def test_a_camera_model_gives_relative_poses(camera_from, shared_data, tmp_path):
    """tum_fr2 frames with their CameraInfo (or a bag without it and the calibration YAML), --model essential: the
    rotations within half a degree of the motion capture's at the median and 2 degrees at most, and a
    TransformStamped per pose on /camera/motion. (At 1.5 cm a frame single pairs reach 1-1.4 degrees with every
    method: SIFT 1.08 on frames 3-4 in usp-eval-pose, the default usp 0.08-1.21 here.)"""
    sequence = load_pose_sequence(shared_data / "sequences" / "tum_fr2")
    count = 6
    bag = tmp_path / "in"
    in_bag = camera_from == "camera_info in the bag"
    write_image_bag(bag, frames(shared_data, "tum_fr2", count), "/camera/image_raw",
                    camera=sequence.camera if in_bag else None)
    camera = [] if in_bag else ["--camera-yaml", Path(__file__).parent / "camera_tum_fr2.yaml"]
    done = process_bag(tmp_path, bag, tmp_path / "out", "--image-topic", "/camera/image_raw", "--model", "essential",
                       "--reprojection-threshold", "1.0", *camera)
    assert done.returncode == 0, done.stderr
    topics = read_bag(tmp_path / "out")
    assert set(topics) == {"/camera/features", "/camera/matches", "/camera/motion"}
    matches = [msg for _, msg in topics["/camera/matches"]]
    assert len(matches) == count - 1 and all(m.model == "essential" and m.has_pose for m in matches)
    errors = [rotation_angle_deg(rotation_from_msg(match), relative_motion(sequence.poses[index - 1],
                                                                          sequence.poses[index])[0])
              for index, match in enumerate(matches, start=1)]
    assert np.median(errors) < 0.5 and max(errors) < 2.0, errors
    motions = [msg for _, msg in topics["/camera/motion"]]
    assert [m.header.stamp for m in motions] == [m.header.stamp for m in matches]


def test_essential_without_camera_info_is_one_line(shared_data, tmp_path):
    bag = tmp_path / "in"
    write_image_bag(bag, frames(shared_data, "tum_fr2", 2), "/camera/image_raw")
    done = process_bag(tmp_path, bag, tmp_path / "out", "--image-topic", "/camera/image_raw", "--model", "essential")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "needs CameraInfo" in done.stderr
    named = process_bag(tmp_path, bag, tmp_path / "out", "--image-topic", "/camera/image_raw",
                        "--camera-info-topic", "/camera/info")
    assert named.returncode == 2 and "camera info topic /camera/info is not in the bag" in named.stderr


def test_a_corrupt_frame_is_skipped_and_an_uncalibrated_camera_info_left_out(shared_data, tmp_path):
    """A frame whose CDR bytes are cut short is reported and skipped, the others processed; the sibling camera_info
    of an uncalibrated camera (K all zero, as a driver without calibration publishes) is left out with one line, so
    the default homography model runs without it."""
    images = frames(shared_data, "tum_fr2", 3)
    typestore = get_typestore(Stores.ROS2_KILTED)
    with Writer(tmp_path / "in", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        topic = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=typestore)
        infos = writer.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=typestore)
        for index, image in enumerate(images):
            header = Header(stamp=Time(sec=FIRST_STAMP_S + index), frame_id="camera")
            data = serialize_message(numpy_to_image(image, header=header))
            info = CameraInfo(header=header, width=image.shape[1], height=image.shape[0])
            writer.write(infos, FIRST_BAG_TIME_NS + index, serialize_message(info))
            writer.write(topic, FIRST_BAG_TIME_NS + index, data[:100] if index == 1 else data)
    result = process_bag(tmp_path, "in", "out", "--image-topic", "/camera/image_raw")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any("3 of the CameraInfo messages on /camera/camera_info left out: uncalibrated" in line for line in lines)
    assert sum(f"skipping bad frame at bag time {FIRST_BAG_TIME_NS + 1}" in line for line in lines) == 1
    assert "2 frames" in lines[-1] and "(1 bad frames skipped)" in lines[-1]
    features = read_bag(tmp_path / "out")["/camera/features"]
    assert [m.header.stamp.sec for _, m in features] == [FIRST_STAMP_S, FIRST_STAMP_S + 2]

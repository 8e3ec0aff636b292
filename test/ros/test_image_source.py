"""The image source: encodings, readers (folder, video, virtual, camera), and the node over DDS."""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import Image

from usp_ros.bridge.images import image_to_numpy, to_bgr8
from usp_ros.bridge.messages import homography_from_msg
from usp_ros.msg import FrameMatch
from usp_ros.nodes.image_source import (LARGE_IMAGE_BYTES, SourceSpec, bgr_to_encoding, default_photo,
                                        describe_source, large_image_warning, open_reader)

ENCODINGS = ("bgr8", "rgb8", "mono8", "mono16", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8")


def smooth_colour(height=64, width=80):
    """A BGR picture whose channels vary slowly and differently, so demosaicing can recover it."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [128 + 100 * np.sin(x / 13.0), 128 + 100 * np.cos(y / 11.0), 128 + 90 * np.sin((x + y) / 17.0)]
    return np.clip(np.dstack(channels), 0, 255).astype(np.uint8)


def write_folder(folder, count):
    """count PNG images (plus a non-image file and an unreadable .png); image k is filled with 10 * (k + 1)."""
    folder.mkdir()
    for k in range(count):
        cv2.imwrite(str(folder / f"frame_{k:03d}.png"), np.full((48, 64, 3), 10 * (k + 1), np.uint8))
    (folder / "notes.txt").write_text("not an image")
    (folder / "frame_999.png").write_bytes(b"broken")
    return folder


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encodings_convert_back_to_the_picture(encoding):
    bgr = smooth_colour()
    encoded = bgr_to_encoding(bgr, encoding)
    decoded = to_bgr8(encoded, encoding).astype(int)
    if encoding.startswith("bayer") or encoding.startswith("mono"):
        expected = bgr if encoding.startswith("bayer") else cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
                                                                         cv2.COLOR_GRAY2BGR)
        assert np.abs(decoded - expected.astype(int))[2:-2, 2:-2].mean() < 4.0
    else:
        np.testing.assert_array_equal(decoded, bgr)


def test_mono16_spans_the_full_range_and_unknown_encodings_are_refused():
    bgr = smooth_colour()
    np.testing.assert_array_equal(bgr_to_encoding(bgr, "mono16"),
                                  bgr_to_encoding(bgr, "mono8").astype(np.uint16) * 257)
    with pytest.raises(ValueError, match="encoding must be"):
        bgr_to_encoding(bgr, "yuv422")


def test_large_image_warning():
    assert large_image_warning({}, LARGE_IMAGE_BYTES) is not None
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in large_image_warning({}, 921600)
    assert large_image_warning({}, 230400) is None
    assert large_image_warning({"FASTDDS_DEFAULT_PROFILES_FILE": "/x.xml"}, 921600) is None
    assert large_image_warning({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, 921600) is None


def test_folder_reader_reads_images_in_name_order_and_skips_the_rest(tmp_path):
    reader = open_reader(SourceSpec("folder", str(write_folder(tmp_path / "images", 3))))
    values = []
    while (frame := reader.read()) is not None:
        image, homography = frame
        assert homography is None and image.shape == (48, 64, 3)
        values.append(int(image[0, 0, 0]))
    assert values == [10, 20, 30]
    with pytest.raises(ValueError, match="no images"):
        open_reader(SourceSpec("folder", str(tmp_path)))
    with pytest.raises(ValueError, match="does not exist"):
        open_reader(SourceSpec("folder", str(tmp_path / "absent")))


def test_video_reader(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for k in range(4):
        writer.write(np.full((48, 64, 3), 40 * (k + 1), np.uint8))
    writer.release()
    reader = open_reader(SourceSpec("video", str(path)))
    levels = []
    while (frame := reader.read()) is not None:
        levels.append(int(frame[0].mean()))
    reader.close()
    assert len(levels) == 4 and all(abs(level - 40 * (k + 1)) < 6 for k, level in enumerate(levels))
    with pytest.raises(ValueError, match="does not exist"):
        open_reader(SourceSpec("video", str(tmp_path / "absent.mp4")))


def test_virtual_reader_defaults_to_a_packaged_photo_and_other_sources_fail_clearly():
    assert default_photo() is not None and default_photo().is_file()
    reader = open_reader(SourceSpec("virtual", width=96, height=64))
    first, second = reader.read(), reader.read()
    assert first[0].shape == (64, 96, 3) and first[1] is None and second[1].shape == (3, 3)
    with pytest.raises(ValueError, match="cannot open camera 250"):
        open_reader(SourceSpec("camera", camera_index=250))
    with pytest.raises(ValueError, match="source must be"):
        open_reader(SourceSpec("kinect"))


def test_sources_are_described_in_words():
    assert describe_source(SourceSpec("virtual")) == "virtual camera over grace_hopper.jpg"
    assert describe_source(SourceSpec("virtual", "/photos/boat.png")) == "virtual camera over boat.png"
    assert describe_source(SourceSpec("folder", "/data/run1")) == "folder /data/run1"
    assert describe_source(SourceSpec("camera", camera_index=2)) == "camera 2"


def test_folder_source_publishes_in_order_and_loops(ros_node, spawn, wait, tmp_path):
    folder = write_folder(tmp_path / "images", 4)
    received = []
    ros_node.create_subscription(Image, "/folder_test/image", received.append, 10)
    spawn("-m", "usp_ros.nodes.image_source", "--ros-args", "-r", "__ns:=/folder_test", "-p", "source:=folder",
          "-p", f"path:={folder}", "-p", "rate:=20.0", "-p", "encoding:=mono8", "-p", "frame_id:=cam_test",
          name="source")
    assert wait(lambda: len(received) >= 10, timeout=30)
    levels = [int(image_to_numpy(msg)[0, 0]) for msg in received[:10]]
    assert all(msg.encoding == "mono8" and msg.header.frame_id == "cam_test" for msg in received)
    assert all((b - a) % 40 == 10 for a, b in zip(levels, levels[1:])), f"not in name order, looping: {levels}"
    stamps = [msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec for msg in received[:10]]
    assert np.all(np.diff(stamps) > 0) and 0.02 < np.median(np.diff(stamps)) < 0.1


def test_source_stops_at_the_end_without_loop(spawn, wait, tmp_path):
    folder = write_folder(tmp_path / "images", 2)
    child = spawn("-m", "usp_ros.nodes.image_source", "--ros-args", "-p", "source:=folder", "-p", f"path:={folder}",
                  "-p", "loop:=false", "-p", "rate:=20.0", name="source")
    assert wait(lambda: child.poll() is not None, timeout=30)
    assert child.returncode == 0
    assert "end of folder" in (tmp_path / "source.log").read_text()


def test_a_looping_folder_that_vanishes_ends_the_source_with_one_error(spawn, wait, tmp_path):
    folder = write_folder(tmp_path / "images", 2)
    child = spawn("-m", "usp_ros.nodes.image_source", "--ros-args", "-p", "source:=folder", "-p", f"path:={folder}",
                  "-p", "rate:=20.0", name="source")
    assert wait(lambda: "publishing folder" in (tmp_path / "source.log").read_text(), timeout=30)
    for image in folder.iterdir():
        image.unlink()
    assert wait(lambda: child.poll() is not None, timeout=30)
    errors = [line for line in (tmp_path / "source.log").read_text().splitlines() if "ERROR" in line]
    assert child.returncode == 1 and len(errors) == 1, errors
    assert "end of folder" in errors[0]
    assert "holds no images" in errors[0] or "gives no frame after reopening" in errors[0], errors  # between deletions


def test_bad_source_fails_start_up_with_one_line(spawn, wait, tmp_path):
    child = spawn("-m", "usp_ros.nodes.image_source", "--ros-args", "-p", "source:=video",
                  "-p", f"path:={tmp_path / 'absent.mp4'}", name="source")
    assert wait(lambda: child.poll() is not None, timeout=30)
    assert child.returncode != 0
    lines = (tmp_path / "source.log").read_text().strip().splitlines()
    assert len(lines) == 1 and "FATAL" in lines[0] and "does not exist" in lines[0], lines


def test_virtual_source_publishes_exact_ground_truth(ros_node, spawn, wait, tmp_path):
    images, truths = {}, []
    ros_node.create_subscription(Image, "/virtual_test/image",
                                 lambda msg: images.__setitem__((msg.header.stamp.sec, msg.header.stamp.nanosec),
                                                                msg), 10)
    ros_node.create_subscription(FrameMatch, "/virtual_test/ground_truth", truths.append, 10)
    spawn("-m", "usp_ros.nodes.image_source", "--ros-args", "-r", "__ns:=/virtual_test", "-p", "source:=virtual",
          "-p", "width:=320", "-p", "height:=240", "-p", "rate:=20.0", name="source")

    def pair_received():
        return any((t.reference_stamp.sec, t.reference_stamp.nanosec) in images
                   and (t.header.stamp.sec, t.header.stamp.nanosec) in images for t in truths)

    assert wait(pair_received, timeout=30)
    truth = next(t for t in truths if (t.reference_stamp.sec, t.reference_stamp.nanosec) in images
                 and (t.header.stamp.sec, t.header.stamp.nanosec) in images)
    assert truth.valid and truth.num_matches == 0 and truth.num_inliers == 0 and truth.header.frame_id == "camera"
    previous = image_to_numpy(images[(truth.reference_stamp.sec, truth.reference_stamp.nanosec)]).astype(np.float32)
    current = image_to_numpy(images[(truth.header.stamp.sec, truth.header.stamp.nanosec)]).astype(np.float32)
    predicted = cv2.warpPerspective(previous, homography_from_msg(truth), (320, 240))
    covered = cv2.warpPerspective(np.ones((240, 320), np.uint8), homography_from_msg(truth), (320, 240)) > 0
    covered = cv2.erode(covered.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert covered.mean() > 0.7
    # 320x240, not smaller: warping an already-rendered frame adds aliasing that grows with the photo's
    # downscale (mean error 4.1 at 160x120, 1.2 at 320x240, 0.5 at 640x480 for the true homography).
    error = np.abs(predicted - current)[covered].mean()
    assert error < 3.0
    assert np.abs(previous - current)[covered].mean() > 2 * error  # the camera moved: identity is far worse
    log = (tmp_path / "source.log").read_text()
    assert "publishing virtual camera over grace_hopper.jpg on /virtual_test/image at 20.0 Hz as bgr8" in log, log

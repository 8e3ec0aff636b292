"""Image, CompressedImage, Features and FrameMatch conversions, without a running node."""
import array

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from usp_core.geometry.match_result import MatchResult
from usp_core.geometry.tracking import Frame, FrameTracker, KeyframeConfig, MatchConfig
from usp_core.inference.features import Features
from usp_ros.bridge.images import (ENCODINGS, ConversionError, compressed_size, compressed_to_numpy, image_to_numpy,
                                   numpy_to_compressed, numpy_to_image, to_bgr8, to_gray)
from usp_ros.bridge.messages import features_to_msg, frame_match_to_msg, homography_from_msg, msg_to_features


def random_image(encoding: str, height: int = 6, width: int = 10, seed: int = 0) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype == np.float32:
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("padding", [0, 5])
def test_image_round_trip(encoding, padding):
    original = random_image(encoding)
    row_bytes = original.shape[1] * original.itemsize * (1 if original.ndim == 2 else original.shape[2])
    msg = numpy_to_image(original, encoding, step=row_bytes + padding)
    assert msg.step == row_bytes + padding
    assert len(msg.data) == msg.step * msg.height
    back = image_to_numpy(msg)
    assert back.dtype == original.dtype and back.shape == original.shape
    np.testing.assert_array_equal(back, original)


def test_image_to_numpy_is_zero_copy_for_padded_rows():
    msg = numpy_to_image(random_image("bgr8"), "bgr8", step=64)
    view = image_to_numpy(msg)
    msg.data[0] = 255 - msg.data[0]
    assert view[0, 0, 0] == msg.data[0]


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
def test_big_endian_data_is_byteswapped(encoding):
    original = random_image(encoding)
    msg = numpy_to_image(original, encoding)
    msg.is_bigendian = 1
    msg.data = array.array("B", original.astype(original.dtype.newbyteorder(">")).tobytes())
    back = image_to_numpy(msg)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, original)


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda m: setattr(m, "encoding", "yuv422_fancy"), "unknown image encoding 'yuv422_fancy'"),
        (lambda m: setattr(m, "data", m.data[:-1]), "data has"),
        (lambda m: setattr(m, "step", 3), "step 3 is smaller"),
        (lambda m: setattr(m, "width", 0), "is empty"),
        (lambda m: setattr(m, "height", 0), "is empty"),
        (lambda m: setattr(m, "width", 100000), "absurd"),
        (lambda m: (setattr(m, "height", 30000), setattr(m, "step", 60000)), "absurd"),
    ],
    ids=["encoding", "short-data", "small-step", "zero-width", "zero-height", "huge-width", "huge-bytes"],
)
def test_bad_image_raises_conversion_error(mutate, problem):
    msg = numpy_to_image(random_image("bgr8"), "bgr8")
    mutate(msg)
    with pytest.raises(ConversionError, match=problem):
        image_to_numpy(msg)


def test_numpy_to_image_rejects_mismatched_encoding():
    with pytest.raises(ConversionError, match="does not fit encoding"):
        numpy_to_image(random_image("mono8"), "bgr8")


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
@pytest.mark.parametrize("channels", [1, 3])
def test_compressed_round_trip(image_format, channels):
    smooth = cv2.GaussianBlur(random_image("bgr8", 48, 64), (9, 9), 3)
    original = smooth if channels == 3 else cv2.cvtColor(smooth, cv2.COLOR_BGR2GRAY)
    back = compressed_to_numpy(numpy_to_compressed(original, image_format))
    assert back.shape == original.shape
    tolerance = 0 if image_format == "png" else 12
    assert np.abs(back.astype(int) - original.astype(int)).mean() <= tolerance


@pytest.mark.parametrize("payload", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_undecodable_compressed_raises(payload):
    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", payload)
    with pytest.raises(ConversionError, match="compressed image"):
        compressed_to_numpy(msg)


def bayer_mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """Sample a BGR image with a 2x2 Bayer pattern named like ROS ('rggb' = R at (0,0), B at (1,1))."""
    channel = {"r": 2, "g": 1, "b": 0}
    mosaic = np.empty(bgr.shape[:2], np.uint8)
    for index, letter in enumerate(pattern):
        row, col = divmod(index, 2)
        mosaic[row::2, col::2] = bgr[row::2, col::2, channel[letter]]
    return mosaic


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_demosaics_to_the_right_colour(pattern):
    colour = np.array([40, 120, 220], np.uint8)  # B, G, R
    flat = np.broadcast_to(colour, (16, 16, 3)).copy()
    encoding = f"bayer_{pattern}8"
    msg = numpy_to_image(bayer_mosaic(flat, pattern), encoding)
    bgr = to_bgr8(image_to_numpy(msg), encoding)
    np.testing.assert_allclose(bgr[4:12, 4:12].reshape(-1, 3).mean(0), colour, atol=2)
    gray = to_gray(image_to_numpy(msg), encoding)
    expected = cv2.cvtColor(flat, cv2.COLOR_BGR2GRAY)[8, 8]
    assert abs(int(gray[8, 8]) - int(expected)) <= 2


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_to_gray_and_bgr_shapes(encoding):
    image = random_image(encoding, 8, 12)
    gray = to_gray(image, encoding)
    assert gray.shape == (8, 12)
    assert gray.dtype == np.uint8 or (gray.dtype == np.float32 and 0 <= gray.min() and gray.max() <= 1)
    assert to_bgr8(image, encoding).shape == (8, 12, 3)


def test_rgb_and_bgr_agree_in_grey():
    bgr = random_image("bgr8")
    np.testing.assert_array_equal(to_gray(bgr, "bgr8"), to_gray(bgr[..., ::-1].copy(), "rgb8"))


def random_features(count: int = 50, size: int = 16, image_size=(640, 480), seed: int = 1) -> Features:
    rng = np.random.default_rng(seed)
    keypoints = rng.random((count, 2), dtype=np.float32) * np.float32(image_size)
    descriptors = rng.standard_normal((count, size)).astype(np.float32)
    return Features(keypoints, rng.random(count, dtype=np.float32), descriptors, image_size)


def assert_same_features(got: Features, expected: Features) -> None:
    assert isinstance(got, Features) and got.image_size == expected.image_size
    for name in ("keypoints", "scores", "descriptors"):
        assert getattr(got, name).dtype == np.float32
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))


def test_features_round_trip():
    features = random_features()
    msg = features_to_msg(Header(frame_id="cam"), features)
    assert msg.header.frame_id == "cam" and msg.keypoints.header.frame_id == "cam"
    assert (msg.keypoints.image_width, msg.keypoints.image_height) == (640, 480)
    assert list(msg.keypoints.x) == features.keypoints[:, 0].tolist() and msg.descriptors.size == 16
    assert_same_features(msg_to_features(msg), features)


def test_empty_features_round_trip():
    empty = random_features(0, 256, (32, 24))
    back = msg_to_features(features_to_msg(Header(), empty))
    assert back.keypoints.shape == (0, 2) and back.descriptors.shape == (0, 256)  # D is kept
    assert len(back) == 0 and back.image_size == (32, 24)


def test_non_finite_values_pass_through_for_finite_rows_to_find():
    features = random_features(4, 3)
    keypoints, scores, descriptors = features.keypoints.copy(), features.scores.copy(), features.descriptors.copy()
    keypoints[1, 0], descriptors[2, 1], scores[3] = np.nan, np.inf, -np.inf
    back = msg_to_features(features_to_msg(Header(), Features(keypoints, scores, descriptors, (640, 480))))
    assert np.isnan(back.keypoints[1, 0]) and np.isinf(back.descriptors[2, 1]) and np.isinf(back.scores[3])
    np.testing.assert_array_equal(back.finite_rows(), [True, False, False, False])
    np.testing.assert_array_equal(back.finite_rows(scores=False), [True, False, False, True])


def test_inconsistent_features_messages_raise():
    msg = features_to_msg(Header(), random_features(3, 4, (8, 8)))
    msg.descriptors.size = 5
    with pytest.raises(ConversionError, match="descriptor data has 12 values, expected 3 x 5"):
        msg_to_features(msg)
    msg = features_to_msg(Header(), random_features(3, 4, (8, 8)))
    msg.keypoints.y = array.array("f", [0.0])
    with pytest.raises(ConversionError, match="differ in length"):
        msg_to_features(msg)
    msg = features_to_msg(Header(), random_features(3, 4, (8, 8)))
    msg.descriptors.size, msg.descriptors.data = 0, array.array("f")
    with pytest.raises(ConversionError, match="descriptor data has 0 values, expected 3 x 0"):
        msg_to_features(msg)


def test_frame_match_message():
    homography = np.array([[1.0, 0.1, 5], [0, 1, -3], [0, 0, 1]])
    points = np.arange(8, dtype=np.float32).reshape(4, 2)
    result = MatchResult(reference_stamp=Time(sec=7, nanosec=5), homography=homography, num_matches=10,
                         reference_indices=np.array([0, 2, 4, 6]), current_indices=np.array([1, 3, 5, 7]),
                         reference_points=points, current_points=points + 1,
                         current_track_ids=np.array([0, 9, 0, 10, 0, 11, 0, 12], np.uint64))
    msg = frame_match_to_msg(Header(frame_id="cam"), result)
    assert msg.valid and msg.num_matches == 10 and msg.num_inliers == 4 and msg.header.frame_id == "cam"
    assert msg.reference_stamp == Time(sec=7, nanosec=5)
    np.testing.assert_array_equal(homography_from_msg(msg), homography)
    assert list(msg.reference_indices) == [0, 2, 4, 6] and list(msg.current_indices) == [1, 3, 5, 7]
    assert list(msg.reference_x) == [0, 2, 4, 6] and list(msg.current_y) == [2, 4, 6, 8]
    assert list(msg.current_track_ids) == [0, 9, 0, 10, 0, 11, 0, 12]
    invalid = frame_match_to_msg(Header(), MatchResult(
        reference_stamp=Time(), homography=None, num_matches=3, reference_indices=np.zeros(0, np.int64),
        current_indices=np.zeros(0, np.int64), reference_points=np.zeros((0, 2), np.float32),
        current_points=np.zeros((0, 2), np.float32), current_track_ids=np.zeros(0, np.uint64)))
    assert not invalid.valid and invalid.num_matches == 3 and invalid.num_inliers == 0
    np.testing.assert_array_equal(homography_from_msg(invalid), np.eye(3))


def test_ground_truth_is_a_match_without_matches():
    homography = np.array([[1.0, 0.0, 2.5], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    msg = frame_match_to_msg(Header(), MatchResult.from_homography(Time(sec=3), homography))
    assert msg.valid and msg.reference_stamp == Time(sec=3)
    assert msg.num_matches == 0 and msg.num_inliers == 0
    assert not (msg.reference_indices or msg.current_indices or msg.current_x or msg.current_track_ids)
    np.testing.assert_array_equal(homography_from_msg(msg), homography)


def test_match_indices_are_rows_of_the_features_messages():
    """A Features message with a NaN row, through the tracker: FrameMatch indices and track ids are message rows."""
    reference = random_features(60, 32, seed=2)
    keypoints, descriptors = reference.keypoints + np.float32([4.0, -2.0]), reference.descriptors.copy()
    keypoints[5] = np.nan
    messages = [features_to_msg(Header(), reference),
                features_to_msg(Header(), Features(keypoints, reference.scores, descriptors, (640, 480)))]
    tracker = FrameTracker(MatchConfig(), KeyframeConfig())
    results = [tracker.track(Frame.from_features(index, msg_to_features(msg), "cpu"))
               for index, msg in enumerate(messages)]
    assert results[0] is None
    msg = frame_match_to_msg(Header(), results[1])
    assert msg.valid and msg.num_inliers == 59 and 5 not in msg.current_indices
    assert list(msg.reference_indices) == list(msg.current_indices)  # the same points in the same order
    current = msg_to_features(messages[1])
    np.testing.assert_array_equal(current.keypoints[msg.current_indices], np.stack([msg.current_x, msg.current_y], 1))
    assert len(msg.current_track_ids) == 60 and msg.current_track_ids[5] == 0
    assert np.count_nonzero(msg.current_track_ids) == 59


def compressed(data: bytes) -> CompressedImage:
    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", data)
    return msg


def encoded(extension: str, image: np.ndarray, *flags: int) -> bytes:
    ok, data = cv2.imencode(extension, image, list(flags))
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("height, width", [(1, 1), (37, 53), (480, 640), (3000, 4000)])
def test_compressed_size_reads_jpeg_and_png_headers(height, width):
    grey = np.random.default_rng(height).integers(0, 256, (height, width), dtype=np.uint8)
    colour = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    samples = [encoded(".jpg", grey), encoded(".jpg", colour, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
               encoded(".png", grey), encoded(".png", grey.astype(np.uint16) * 257)]
    for data in samples:
        assert compressed_size(compressed(data)) == (width, height)


def test_compressed_size_skips_segments_before_the_frame_header():
    data = encoded(".jpg", np.zeros((24, 40), np.uint8))
    comment = b"\xff\xfe\x00\x06size" + b"\xff\xff"  # a COM segment, then a fill byte
    assert compressed_size(compressed(data[:2] + comment + data[2:])) == (40, 24)


@pytest.mark.parametrize("data, problem", [
    (b"", "neither JPEG nor PNG"),
    (b"GIF89a" + b"\0" * 20, "neither JPEG nor PNG"),
    (b"\xff\xd8", "truncated"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "truncated"),
    (b"\xff\xd8\x00" + b"\0" * 20, "no marker"),
    (b"\xff\xd8\xff\xda\x00\x08" + b"\0" * 20, "scan starts before"),
    (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10" + b"\0" * 8, "is empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "no IHDR"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x7f\xff\xff\xff\x00\x00\x00\x10", "absurd"),
], ids=["empty", "gif", "soi-only", "cut-in-app0", "no-marker", "scan-first", "zero-height", "png-no-ihdr",
        "png-huge"])
def test_broken_compressed_headers_raise_conversion_error(data, problem):
    with pytest.raises(ConversionError, match=problem):
        compressed_size(compressed(data))


def test_compressed_size_of_every_prefix_is_a_size_or_a_conversion_error():
    """A cut-off file raises ConversionError until its header is whole, then gives the size at every length."""
    for data in (encoded(".jpg", np.zeros((24, 40, 3), np.uint8)), encoded(".png", np.zeros((24, 40), np.uint8))):
        sizes = []
        for end in range(len(data)):
            try:
                sizes.append(compressed_size(compressed(data[:end])))
            except ConversionError:
                sizes.append(None)
        first = next(end for end, size in enumerate(sizes) if size is not None)
        assert first < len(data) // 2 and set(sizes[first:]) == {(40, 24)}, sizes


@pytest.mark.parametrize("min_size, decoded", [(None, (1200, 1600)), ((1200, 1600), (1200, 1600)),
                                               ((600, 800), (600, 800)), ((500, 700), (600, 800)),
                                               ((240, 320), (300, 400)), ((8, 8), (150, 200))])
def test_large_jpegs_decode_reduced_but_never_below_min_size(min_size, decoded):
    big = cv2.resize(random_image("bgr8", 12, 16), (1600, 1200), interpolation=cv2.INTER_NEAREST)
    image = compressed_to_numpy(compressed(encoded(".jpg", big)), min_size)
    assert image.shape == (*decoded, 3)
    np.testing.assert_allclose(image.mean(axis=(0, 1)), big.mean(axis=(0, 1)), atol=4)


def corrupt_jpeg(seed: int = 0) -> bytes:
    """A JPEG whose entropy-coded data is broken by stray restart markers: libjpeg decodes it with a warning."""
    data = encoded(".jpg", random_image("mono8", 240, 320, seed))
    return data[:1000] + b"\xff\xd0" * 50 + data[1100:]


def test_corrupt_jpeg_decodes_without_libjpeg_lines_on_stderr(capfd):
    cv2.imdecode(np.frombuffer(corrupt_jpeg(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert "Corrupt JPEG data" in capfd.readouterr().err, "the sample makes OpenCV's libjpeg warn"
    assert compressed_to_numpy(compressed(corrupt_jpeg())).shape == (240, 320)
    truncated = encoded(".jpg", random_image("mono8", 240, 320))[:3000]
    with pytest.raises(ConversionError, match="cannot decode compressed image"):
        compressed_to_numpy(compressed(truncated))
    assert capfd.readouterr().err == ""

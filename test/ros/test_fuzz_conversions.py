"""Fuzz tests (hypothesis) of the message conversions: whatever arrives, the result is a valid array or
message, or a ConversionError; never another exception, never a crash.

Inputs are legal messages as rclpy would deliver them (field types enforced by rosidl) with hostile
contents: unknown encodings, absurd sizes and steps, byte counts that disagree with them, truncated and
corrupted JPEG/PNG, feature arrays of inconsistent lengths, NaN and inf. The examples are derandomised,
so a failure reproduces on every run.
"""
import array

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from usp_core.geometry.match_result import MatchResult
from usp_core.inference.features import Features
from usp_ros.bridge.images import (ENCODINGS, MAX_IMAGE_SIDE, ConversionError, compressed_to_numpy, image_to_numpy,
                                   to_bgr8, to_gray)
from usp_ros.bridge.messages import features_to_msg, frame_match_to_msg, homography_from_msg, msg_to_features
from usp_ros.msg import Features as FeaturesMsg

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
ANY_FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
SIDES = st.one_of(st.integers(0, 24), st.sampled_from([MAX_IMAGE_SIDE + 1, 2**32 - 1]))


def _encoded_samples() -> list[bytes]:
    """Small valid JPEG and PNG files: grey, colour, with alpha, 16-bit."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (12, 16), dtype=np.uint8)
    colour = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (12, 16, 4), dtype=np.uint8)
    deep = rng.integers(0, 65536, (12, 16), dtype=np.uint16)
    images = [(".jpg", grey), (".jpg", colour), (".png", grey), (".png", alpha), (".png", deep)]
    return [cv2.imencode(extension, image)[1].tobytes() for extension, image in images]


ENCODED = _encoded_samples()


@st.composite
def raw_images(draw) -> Image:
    """sensor_msgs/Image with any encoding, size, step and byte count (often consistent, so decoding runs)."""
    encoding = draw(st.one_of(st.sampled_from(sorted(ENCODINGS)), st.text(max_size=10)))
    width, height, step = draw(SIDES), draw(SIDES), draw(st.one_of(st.integers(0, 200), st.just(2**32 - 1)))
    consistent = step * height if step * height <= 8000 else 0
    size = draw(st.one_of(st.just(consistent), st.integers(0, 8000)))
    data = draw(st.binary(min_size=size, max_size=size))
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=draw(st.integers(0, 1)))
    msg.data = array.array("B", data)
    return msg


@st.composite
def compressed_images(draw) -> CompressedImage:
    """CompressedImage: random bytes, or a valid JPEG/PNG truncated or with bytes overwritten."""
    data = bytearray(draw(st.sampled_from(ENCODED)))
    kind = draw(st.sampled_from(["random", "truncated", "corrupted", "valid"]))
    if kind == "random":
        data = bytearray(draw(st.binary(max_size=2000)))
    elif kind == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "corrupted":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    msg = CompressedImage(format=draw(st.sampled_from(["jpeg", "png", "", "bgr8; jpeg compressed bgr8"])))
    msg.data = array.array("B", bytes(data))
    return msg


@st.composite
def features_messages(draw) -> FeaturesMsg:
    """usp_ros/Features whose array lengths agree or not, with any float32 values."""
    count, size = draw(st.integers(0, 12)), draw(st.integers(0, 8))
    lengths = st.sampled_from([count, count, count, count + 1, max(count - 1, 0)])
    msg = FeaturesMsg()
    msg.keypoints.x = array.array("f", draw(st.lists(ANY_FLOAT32, min_size=draw(lengths), max_size=count + 1)))
    msg.keypoints.y = array.array("f", draw(st.lists(ANY_FLOAT32, min_size=len(msg.keypoints.x),
                                                     max_size=len(msg.keypoints.x) + 1)))
    msg.keypoints.score = array.array("f", [draw(ANY_FLOAT32)] * draw(lengths))
    msg.keypoints.image_width, msg.keypoints.image_height = draw(SIDES), draw(SIDES)
    msg.descriptors.size = size
    values = count * size + draw(st.sampled_from([0, 0, 0, 1, -1]))
    msg.descriptors.data = array.array("f", [draw(ANY_FLOAT32)] * max(values, 0))
    return msg


def _float_arrays(shape) -> st.SearchStrategy:
    return st.lists(ANY_FLOAT32, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))).map(
        lambda values: np.array(values, np.float32).reshape(shape))


@FUZZ
@given(raw_images())
def test_raw_images_decode_or_raise_conversion_error(msg):
    try:
        image = image_to_numpy(msg)
        grey, bgr = to_gray(image, msg.encoding), to_bgr8(image, msg.encoding)
    except ConversionError:
        return
    dtype, channels = ENCODINGS[msg.encoding]
    assert image.shape == ((msg.height, msg.width, channels) if channels > 1 else (msg.height, msg.width))
    assert image.dtype == dtype
    assert grey.shape == (msg.height, msg.width) and grey.dtype in (np.uint8, np.float32)
    assert np.isfinite(grey).all() and grey.min() >= 0 and grey.max() <= (255 if grey.dtype == np.uint8 else 1)
    assert bgr.shape == (msg.height, msg.width, 3) and bgr.dtype == np.uint8


@FUZZ
@given(compressed_images())
def test_compressed_images_decode_or_raise_conversion_error(msg):
    try:
        image = compressed_to_numpy(msg)
    except ConversionError:
        return
    assert image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    assert image.size > 0 and image.dtype in (np.uint8, np.uint16)


@FUZZ
@given(features_messages())
def test_features_messages_convert_or_raise_conversion_error(msg):
    try:
        features = msg_to_features(msg)
    except ConversionError:
        return
    count = len(msg.keypoints.x)
    assert isinstance(features, Features) and len(features) == count
    assert features.keypoints.shape == (count, 2) and features.scores.shape == (count,)
    assert features.descriptors.shape == (count, msg.descriptors.size)
    assert features.image_size == (msg.keypoints.image_width, msg.keypoints.image_height)
    assert features.finite_rows().shape == (count,)


@FUZZ
@given(count=st.integers(0, 10), size=st.integers(1, 6), data=st.data())
def test_features_round_trip_unchanged(count, size, data):
    keypoints, scores = data.draw(_float_arrays((count, 2))), data.draw(_float_arrays((count,)))
    features = Features(keypoints, scores, data.draw(_float_arrays((count, size))), (640, 480))
    back = msg_to_features(features_to_msg(Header(), features))
    for name in ("keypoints", "scores", "descriptors"):  # NaN == NaN here: values pass through unchanged
        np.testing.assert_array_equal(getattr(back, name), getattr(features, name))
    assert back.image_size == (640, 480)
    np.testing.assert_array_equal(back.finite_rows(), features.finite_rows())


@FUZZ
@given(homography=st.one_of(st.none(), _float_arrays((3, 3))), count=st.integers(0, 6), data=st.data())
def test_frame_matches_round_trip(homography, count, data):
    indices = data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=count, max_size=count))
    points = data.draw(_float_arrays((count, 2)))
    track_ids = data.draw(st.lists(st.integers(0, 2**64 - 1), max_size=12))
    result = MatchResult(reference_stamp=Header().stamp, homography=homography, num_matches=count,
                         reference_indices=np.array(indices, np.int64), current_indices=np.array(indices, np.int64),
                         reference_points=points, current_points=points,
                         current_track_ids=np.array(track_ids, np.uint64))
    msg = frame_match_to_msg(Header(), result)
    assert msg.valid == (homography is not None) and msg.num_inliers == count
    expected = np.eye(3) if homography is None else homography.astype(np.float64)
    np.testing.assert_array_equal(homography_from_msg(msg), expected)
    assert list(msg.reference_indices) == indices
    assert list(msg.current_track_ids) == track_ids


def test_the_samples_are_valid_images():
    """The fuzzer's seeds decode, so "truncated" and "corrupted" start from real files."""
    for data in ENCODED:
        msg = CompressedImage(format="png")
        msg.data = array.array("B", data)
        assert compressed_to_numpy(msg).shape[:2] == (12, 16)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_depth_pixels_become_valid_grey(value):
    depth = np.full((4, 5), 0.5, np.float32)
    depth[1, 2] = value
    grey = to_gray(image_to_numpy(_image(depth, "32FC1")), "32FC1")
    assert np.isfinite(grey).all() and 0.0 <= grey[1, 2] <= 1.0


def _image(values: np.ndarray, encoding: str) -> Image:
    msg = Image(height=values.shape[0], width=values.shape[1], encoding=encoding, step=values.shape[1] * 4)
    msg.data = array.array("B", values.tobytes())
    return msg

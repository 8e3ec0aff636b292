"""usp_ros messages (Features, FrameMatch) <-> numpy (usp_core's Features and MatchResult), without a running node.

Fields are filled from numpy through ``array.array`` built from bytes, the fast path of rosidl's
setters (about 1 ms for 1000 keypoints x 256 floats, against 33 ms when assigning numpy arrays
directly). Every malformed message raises ``ConversionError`` with a message naming the problem.
"""
from __future__ import annotations

import array

import numpy as np
from std_msgs.msg import Header

from usp_core.geometry.match_result import MatchResult
from usp_core.inference.features import Features
from usp_ros.bridge.images import ConversionError
from usp_ros.msg import Descriptors, FrameMatch, Keypoints
from usp_ros.msg import Features as FeaturesMsg

__all__ = ["features_to_msg", "msg_to_features", "frame_match_to_msg", "homography_from_msg"]


def features_to_msg(header: Header, features: Features) -> FeaturesMsg:
    """Features (keypoints in the pixels of an image of features.image_size) -> usp_ros/Features.

    ``header`` (the source image's) is copied into the message and its Keypoints. Descriptors keep their
    length D even for no keypoints.
    """
    width, height = features.image_size
    msg = FeaturesMsg(header=header)
    msg.keypoints = Keypoints(header=header, image_width=int(width), image_height=int(height))
    msg.keypoints.x = _float32_array(features.keypoints[:, 0])
    msg.keypoints.y = _float32_array(features.keypoints[:, 1])
    msg.keypoints.score = _float32_array(features.scores)
    msg.descriptors = Descriptors(size=features.descriptors.shape[1])
    msg.descriptors.data = _float32_array(features.descriptors)
    return msg


def msg_to_features(msg: FeaturesMsg) -> Features:
    """usp_ros/Features -> Features: keypoints (N, 2) float32 (a copy), scores (N,) and descriptors (N, D)
    float32 (views on the message's buffers), image_size (width, height).

    Raises ConversionError when the arrays disagree in length. Values are not checked (NaN and inf pass
    through: see Features.finite_rows).
    """
    x = _as_float32(msg.keypoints.x)
    y = _as_float32(msg.keypoints.y)
    scores = _as_float32(msg.keypoints.score)
    data = _as_float32(msg.descriptors.data)
    count, size = len(x), msg.descriptors.size
    if len(y) != count or len(scores) != count:
        raise ConversionError(f"keypoint arrays differ in length: x {count}, y {len(y)}, score {len(scores)}")
    if len(data) != count * size or (count and size == 0):
        raise ConversionError(f"descriptor data has {len(data)} values, expected {count} x {size}")
    image_size = (msg.keypoints.image_width, msg.keypoints.image_height)
    try:
        return Features(np.stack([x, y], axis=1), scores, data.reshape(count, size), image_size)
    except ValueError as error:
        raise ConversionError(f"features message: {error}") from None


def frame_match_to_msg(header: Header, result: MatchResult) -> FrameMatch:
    """MatchResult -> usp_ros/FrameMatch; no homography (None) gives valid=false and the identity.

    ``header`` is the current image's. Indices and track ids are rows of the Features messages, as in
    ``result``; a result without matches (MatchResult.from_homography: ground truth) gives empty arrays.
    """
    msg = FrameMatch(header=header, reference_stamp=result.reference_stamp, valid=result.homography is not None)
    homography = np.eye(3) if result.homography is None else result.homography
    msg.homography = np.asarray(homography, np.float64).ravel()
    msg.num_matches = int(result.num_matches)
    msg.num_inliers = len(result.reference_indices)
    msg.reference_indices = array.array("I", np.asarray(result.reference_indices, np.uint32).tobytes())
    msg.current_indices = array.array("I", np.asarray(result.current_indices, np.uint32).tobytes())
    reference_points = np.asarray(result.reference_points, np.float32).reshape(-1, 2)
    current_points = np.asarray(result.current_points, np.float32).reshape(-1, 2)
    msg.reference_x = _float32_array(reference_points[:, 0])
    msg.reference_y = _float32_array(reference_points[:, 1])
    msg.current_x = _float32_array(current_points[:, 0])
    msg.current_y = _float32_array(current_points[:, 1])
    msg.current_track_ids = array.array("Q", np.asarray(result.current_track_ids, np.uint64).tobytes())
    return msg


def homography_from_msg(msg: FrameMatch) -> np.ndarray:
    """usp_ros/FrameMatch -> (3, 3) float64 homography (reference pixels -> current pixels)."""
    return np.asarray(msg.homography, dtype=np.float64).reshape(3, 3)


def _float32_array(values: np.ndarray) -> array.array:
    return array.array("f", np.ascontiguousarray(values, dtype=np.float32).tobytes())


def _as_float32(values) -> np.ndarray:
    if isinstance(values, array.array):
        return np.frombuffer(values, dtype=np.float32)
    return np.asarray(values, dtype=np.float32)

"""usp_ros messages (Features, FrameMatch) <-> numpy (usp_core's Features and MatchResult), sensor_msgs/CameraInfo ->
usp_core's CameraModel, and the relative motion as geometry_msgs/TransformStamped, without a running node.

Fields are filled from numpy through ``array.array`` built from bytes, the fast path of rosidl's
setters (about 1 ms for 1000 keypoints x 256 floats, against 33 ms when assigning numpy arrays
directly). Every malformed message raises ``ConversionError`` with a message naming the problem.
"""
from __future__ import annotations

import array

import numpy as np
from geometry_msgs.msg import Point32, Quaternion, Transform, TransformStamped, Vector3
from sensor_msgs.msg import ChannelFloat32, PointCloud
from std_msgs.msg import Header

from usp_core.geometry.camera import CameraError, CameraModel
from usp_core.geometry.match_result import MatchResult
from usp_core.geometry.rotation import quaternion_to_rotation as quaternion_to_rotation_xyzw
from usp_core.geometry.rotation import rotation_to_quaternion as rotation_to_quaternion_xyzw
from usp_core.geometry.tracks import TrackedPoints
from usp_core.inference.features import Features
from usp_ros.bridge.images import ConversionError
from usp_ros.msg import Descriptors, FrameMatch, Keypoints, Tracks
from usp_ros.msg import Features as FeaturesMsg

__all__ = ["features_to_msg", "msg_to_features", "frame_match_to_msg", "homography_from_msg", "camera_from_info",
           "rotation_to_quaternion", "quaternion_to_rotation", "rotation_from_msg", "motion_transform", "tracks_to_msg",
           "vins_feature_cloud", "VINS_CHANNELS"]

VINS_ID_MODULUS = np.uint64(1 << 24)  # track ids wrap here in the float32 id channel (exact below 2**24)
# sensor_msgs/PointCloud channels in the order VINS-Fusion's estimator reads them (feature_callback: by index)
VINS_CHANNELS = ("id_of_point", "camera_id", "u_of_point", "v_of_point", "velocity_x_of_point",
                 "velocity_y_of_point")


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
    """MatchResult -> usp_ros/FrameMatch; an invalid result gives valid=false and identity matrices.

    ``header`` is the current image's. Indices and track ids are rows of the Features messages, as in
    ``result``; a result without matches (MatchResult.from_homography: ground truth) gives empty arrays.
    The pose fields are set when the result has a rotation (see msg/FrameMatch.msg).
    """
    msg = FrameMatch(header=header, reference_stamp=result.reference_stamp, valid=result.valid, model=result.model)
    homography = np.eye(3) if result.homography is None else result.homography
    msg.homography = np.asarray(homography, np.float64).ravel()
    matrix = result.matrix if result.matrix is not None else np.eye(3)
    msg.matrix = np.asarray(matrix, np.float64).ravel()
    msg.num_matches = int(result.num_matches)
    msg.num_inliers = len(result.reference_indices)
    msg.reference_indices = _uint32_array(result.reference_indices)
    msg.current_indices = _uint32_array(result.current_indices)
    reference_points = np.asarray(result.reference_points, np.float32).reshape(-1, 2)
    current_points = np.asarray(result.current_points, np.float32).reshape(-1, 2)
    msg.reference_x = _float32_array(reference_points[:, 0])
    msg.reference_y = _float32_array(reference_points[:, 1])
    msg.current_x = _float32_array(current_points[:, 0])
    msg.current_y = _float32_array(current_points[:, 1])
    msg.current_track_ids = array.array("Q", np.asarray(result.current_track_ids, np.uint64).tobytes())
    pairs = np.asarray(result.match_pairs, np.int64).reshape(-1, 2)
    msg.match_reference_indices = _uint32_array(pairs[:, 0])
    msg.match_current_indices = _uint32_array(pairs[:, 1])
    msg.match_inliers = np.asarray(result.match_inliers, bool).tolist()
    msg.has_pose = result.valid and result.rotation is not None
    if msg.has_pose:
        msg.rotation = rotation_to_quaternion(result.rotation)
        x, y, z = np.asarray(result.translation, np.float64).reshape(3).tolist()
        msg.translation_direction = Vector3(x=x, y=y, z=z)
    return msg


def rotation_to_quaternion(rotation: np.ndarray) -> Quaternion:
    """(3, 3) rotation matrix -> geometry_msgs/Quaternion (unit, w >= 0)."""
    x, y, z, w = rotation_to_quaternion_xyzw(rotation)
    return Quaternion(x=x, y=y, z=z, w=w)


def quaternion_to_rotation(quaternion: Quaternion) -> np.ndarray:
    """geometry_msgs/Quaternion -> (3, 3) float64 rotation matrix (normalised first)."""
    return quaternion_to_rotation_xyzw(quaternion.x, quaternion.y, quaternion.z, quaternion.w)


def rotation_from_msg(msg: FrameMatch) -> np.ndarray | None:
    """The (3, 3) rotation reference -> current of a FrameMatch, None when it has no pose."""
    return quaternion_to_rotation(msg.rotation) if msg.has_pose else None


def motion_transform(msg: FrameMatch, child_suffix: str = "_current") -> TransformStamped:
    """The relative motion of a FrameMatch with a pose, for tf and RViz: the current camera's pose in the reference
    camera's frame, inv([R | t]) = [R^T | -R^T t], with the unit translation (the scale is unknown).

    header: the current frame's stamp, frame_id the camera's frame (standing for the reference camera);
    child_frame_id: that frame with ``child_suffix`` (the current camera).
    """
    rotation = quaternion_to_rotation(msg.rotation)
    direction = np.array([msg.translation_direction.x, msg.translation_direction.y, msg.translation_direction.z])
    x, y, z = (-rotation.T @ direction).tolist()
    transform = Transform(translation=Vector3(x=x, y=y, z=z), rotation=rotation_to_quaternion(rotation.T))
    return TransformStamped(header=msg.header, child_frame_id=msg.header.frame_id + child_suffix, transform=transform)


def camera_from_info(msg) -> CameraModel:
    """sensor_msgs/CameraInfo -> CameraModel (K, D, distortion_model, size); CameraError (one line) for an
    uncalibrated camera (K all zero), an unknown model, or binning/ROI, which this bridge does not apply."""
    if max(msg.binning_x, msg.binning_y) > 1 or msg.roi.width or msg.roi.height:
        raise CameraError("CameraInfo with binning or a region of interest is not supported")
    return CameraModel.from_fields(msg.width, msg.height, list(msg.k), list(msg.d), msg.distortion_model)


def homography_from_msg(msg: FrameMatch) -> np.ndarray:
    """usp_ros/FrameMatch -> (3, 3) float64 homography (reference pixels -> current pixels)."""
    return np.asarray(msg.homography, dtype=np.float64).reshape(3, 3)


def tracks_to_msg(header: Header, points: TrackedPoints, has_camera: bool) -> Tracks:
    """TrackedPoints of one frame -> usp_ros/Tracks (see msg/Tracks.msg); ``header`` is the current image's."""
    msg = Tracks(header=header, has_camera=bool(has_camera))
    msg.id = array.array("Q", np.asarray(points.ids, np.uint64).tobytes())
    msg.row = _uint32_array(points.rows)
    msg.u, msg.v = _float32_array(points.pixels[:, 0]), _float32_array(points.pixels[:, 1])
    msg.x, msg.y = _float32_array(points.normalised[:, 0]), _float32_array(points.normalised[:, 1])
    msg.velocity_u = _float32_array(points.pixel_velocity[:, 0])
    msg.velocity_v = _float32_array(points.pixel_velocity[:, 1])
    velocity = points.velocity if has_camera else np.full_like(points.velocity, np.nan)
    msg.velocity_x, msg.velocity_y = _float32_array(velocity[:, 0]), _float32_array(velocity[:, 1])
    msg.age = _uint32_array(points.age)
    return msg


def vins_feature_cloud(header: Header, points: TrackedPoints, camera_id: int = 0) -> PointCloud:
    """The points seen more than once (age > 1) as VINS-Mono/Fusion's feature message: sensor_msgs/PointCloud with
    points (x, y, 1) undistorted normalised and channels VINS_CHANNELS (id, camera id, u, v, velocity x, velocity y
    in normalised units per second). ``points`` must have normalised coordinates (a camera model).

    The id channel holds ``id % 2**24``: float32 is exact only up to 2**24, which a matcher handing out ~500 new ids
    a frame at 30 Hz passes after ~19 minutes; ids 2**24 apart are never alive at once, so the live ones stay
    distinct (VINS reads the id as an int of the float)."""
    seen = points.take(points.age > 1)
    cloud = PointCloud(header=header)
    cloud.points = [Point32(x=float(x), y=float(y), z=1.0) for x, y in seen.normalised.tolist()]
    values = ((seen.ids % VINS_ID_MODULUS).astype(np.float64), np.full(len(seen), float(camera_id)), seen.pixels[:, 0],
              seen.pixels[:, 1], seen.velocity[:, 0], seen.velocity[:, 1])
    cloud.channels = [ChannelFloat32(name=name, values=_float32_array(column))
                      for name, column in zip(VINS_CHANNELS, values)]
    return cloud


def _uint32_array(values: np.ndarray) -> array.array:
    return array.array("I", np.asarray(values, np.uint32).tobytes())


def _float32_array(values: np.ndarray) -> array.array:
    return array.array("f", np.ascontiguousarray(values, dtype=np.float32).tobytes())


def _as_float32(values) -> np.ndarray:
    if isinstance(values, array.array):
        return np.frombuffer(values, dtype=np.float32)
    return np.asarray(values, dtype=np.float32)

"""One camera image message -> Features in the source image's pixels: the detector node's and process_bag's path.

The frame's size is read first (a compressed image's header alone), the network's input size follows
from the detector's config (usp_core.inference.detector.inference_size), a JPEG larger than that is decoded
reduced (libjpeg's DCT scaling), the decoded image is converted to grey and detected in, keypoints or
descriptors or scores with NaN or inf are dropped, and the keypoints are mapped to the source image's pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from usp_core.inference.detector import KeypointDetector, inference_size
from usp_core.inference.features import Features
from usp_ros.bridge.images import compressed_size, compressed_to_numpy, image_to_numpy, to_gray

__all__ = ["Detection", "input_size", "detect_image_message"]


@dataclass(frozen=True)
class Detection:
    """One image message's result.

    features: keypoints in the source image's pixels (image_size = the message's (width, height)), rows
    with NaN or inf dropped; image: the decoded array, (h, w) or (h, w, 3), a JPEG possibly reduced;
    encoding: the decoded array's encoding ("bgr8", "mono8", ... as sensor_msgs names them);
    non_finite: how many rows were dropped.
    """

    features: Features
    image: np.ndarray
    encoding: str
    non_finite: int


def input_size(msg: Image | CompressedImage) -> tuple[int, int]:
    """(width, height) of the frame without decoding it (a compressed image's header); ConversionError for a broken
    header."""
    return compressed_size(msg) if isinstance(msg, CompressedImage) else (msg.width, msg.height)


def _decode(msg: Image | CompressedImage, size: tuple[int, int] | None) -> tuple[np.ndarray, str]:
    """Message -> (array, encoding); a JPEG comes reduced when the network runs at ``size`` (h, w) anyway."""
    if isinstance(msg, CompressedImage):
        image = compressed_to_numpy(msg, min_size=size)
        return image, "bgr8" if image.ndim == 3 else ("mono16" if image.dtype == np.uint16 else "mono8")
    return image_to_numpy(msg), msg.encoding


def detect_image_message(detector: KeypointDetector, msg: Image | CompressedImage) -> Detection:
    """Decode, grey, detect, drop non-finite rows, map to the message's pixels.

    ConversionError (or cv2.error) for a frame that cannot be used. The caller checks the size first
    (:func:`input_size`) where frames may be too large to decode.
    """
    width, height = input_size(msg)
    image, encoding = _decode(msg, inference_size(height, width, detector.config))
    (features,) = detector.detect(to_gray(image, encoding))
    finite = features.finite_rows()
    non_finite = len(finite) - int(finite.sum())
    if non_finite:
        features = features.take(finite)
    return Detection(features.resized((width, height)), image, encoding, non_finite)

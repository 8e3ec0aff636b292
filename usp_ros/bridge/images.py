"""sensor_msgs images <-> numpy arrays (our cv_bridge), tested without a running node.

Image <-> (H, W) or (H, W, C) arrays, zero-copy views where the row layout allows; CompressedImage
(JPEG or PNG, as compressed_image_transport sends) <-> arrays, with the size read from the header
before any pixel is decoded. JPEGs are decoded by Pillow, PNGs by OpenCV: OpenCV's libjpeg prints
its warnings ("Corrupt JPEG data: ...") straight to stderr, once per frame, and no OpenCV log level
reaches them; Pillow's libjpeg error manager keeps them quiet (it costs about 2 ms more per 640x480
frame). Message data is filled through ``array.array`` built from bytes, the fast path of rosidl's
setters. Every malformed input raises ``ConversionError`` (also raised by usp_ros.bridge.messages)
with a message naming the problem.
"""
from __future__ import annotations

import array
import io
import sys

import cv2
import numpy as np
import PIL.Image
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

MAX_IMAGE_SIDE = 1 << 15  # 32768 px: larger sides are treated as corrupt headers
MAX_IMAGE_BYTES = 1 << 30  # 1 GiB: no camera frame is larger

# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "bayer_rggb8": (np.dtype(np.uint8), 1),
    "bayer_bggr8": (np.dtype(np.uint8), 1),
    "bayer_gbrg8": (np.dtype(np.uint8), 1),
    "bayer_grbg8": (np.dtype(np.uint8), 1),
}

# OpenCV names a Bayer pattern by its second row, so ROS rggb is OpenCV's BG (as in cv_bridge).
_BAYER_TO_GRAY = {
    "bayer_rggb8": cv2.COLOR_BayerBG2GRAY,
    "bayer_bggr8": cv2.COLOR_BayerRG2GRAY,
    "bayer_gbrg8": cv2.COLOR_BayerGR2GRAY,
    "bayer_grbg8": cv2.COLOR_BayerGB2GRAY,
}
_BAYER_TO_BGR = {
    "bayer_rggb8": cv2.COLOR_BayerBG2BGR,
    "bayer_bggr8": cv2.COLOR_BayerRG2BGR,
    "bayer_gbrg8": cv2.COLOR_BayerGR2BGR,
    "bayer_grbg8": cv2.COLOR_BayerGB2BGR,
}
_COLOR_TO_GRAY = {
    "rgb8": cv2.COLOR_RGB2GRAY,
    "bgr8": cv2.COLOR_BGR2GRAY,
    "8UC3": cv2.COLOR_BGR2GRAY,
    "rgba8": cv2.COLOR_RGBA2GRAY,
    "bgra8": cv2.COLOR_BGRA2GRAY,
}
_COLOR_TO_BGR = {
    "rgb8": cv2.COLOR_RGB2BGR,
    "rgba8": cv2.COLOR_RGBA2BGR,
    "bgra8": cv2.COLOR_BGRA2BGR,
}
_HOST_IS_BIGENDIAN = sys.byteorder == "big"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# JPEG frame headers (SOF0..SOF15 but DHT C4, JPG C8, DAC CC) and the markers that carry no length
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD9)])
_JPEG_SCAN_MARKER = 0xDA


class ConversionError(ValueError):
    """A message or array that cannot be converted; the message names the problem."""


def image_to_numpy(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> array (H, W) or (H, W, C) in the encoding's dtype and channel order.

    A view on ``msg.data`` (no copy) whenever the data is in host byte order; row padding
    (``step`` larger than a row) is skipped through strides, also without a copy.
    """
    dtype, channels = _encoding_layout(msg.encoding)
    _check_size(msg.width, msg.height)
    row_bytes = msg.width * channels * dtype.itemsize
    if msg.step < row_bytes:
        raise ConversionError(f"step {msg.step} is smaller than width*channels*bytes = {row_bytes}")
    if msg.step * msg.height > MAX_IMAGE_BYTES:
        raise ConversionError(f"step*height = {msg.step * msg.height} bytes is absurd (limit {MAX_IMAGE_BYTES})")
    if len(msg.data) < msg.step * msg.height:
        raise ConversionError(f"data has {len(msg.data)} bytes, step*height needs {msg.step * msg.height}")
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != _HOST_IS_BIGENDIAN:
        dtype = dtype.newbyteorder()
    shape = (msg.height, msg.width, channels) if channels > 1 else (msg.height, msg.width)
    strides = (msg.step, channels * dtype.itemsize, dtype.itemsize)[: len(shape)]
    view = np.ndarray(shape, dtype=dtype, buffer=memoryview(msg.data).cast("B"), strides=strides)
    return view.astype(dtype.newbyteorder("="), copy=False) if not dtype.isnative else view


def numpy_to_image(
    array_: np.ndarray, encoding: str | None = None, header: Header | None = None, step: int | None = None
) -> Image:
    """Array (H, W) or (H, W, C) -> sensor_msgs/Image in host byte order.

    ``encoding`` defaults from dtype and channels (mono8, bgr8, bgra8, mono16, 32FC1).
    ``step`` larger than a row pads every row with zeros (for tests of padded input).
    """
    encoding = encoding or _default_encoding(array_)
    dtype, channels = _encoding_layout(encoding)
    if array_.dtype != dtype or _channels(array_) != channels:
        raise ConversionError(
            f"array of {array_.dtype} with {_channels(array_)} channels does not fit encoding {encoding}"
        )
    height, width = array_.shape[:2]
    _check_size(width, height)
    row_bytes = width * channels * dtype.itemsize
    step = row_bytes if step is None else step
    if step < row_bytes:
        raise ConversionError(f"step {step} is smaller than width*channels*bytes = {row_bytes}")
    rows = np.ascontiguousarray(array_).reshape(height, row_bytes // dtype.itemsize).view(np.uint8)
    if step > row_bytes:
        rows = np.pad(rows, ((0, 0), (0, step - row_bytes)))
    msg = Image(header=header or Header(), height=height, width=width, encoding=encoding, step=step)
    msg.is_bigendian = int(_HOST_IS_BIGENDIAN)
    msg.data = array.array("B", rows.tobytes())
    return msg


def compressed_size(msg: CompressedImage) -> tuple[int, int]:
    """(width, height) of a JPEG or PNG CompressedImage, from its header alone (no pixel is decoded).

    Raises ConversionError for other formats, truncated or garbled headers and absurd sizes.
    """
    data = memoryview(msg.data).cast("B")
    if data[:8] == _PNG_SIGNATURE:
        width, height = _png_size(data)
    elif data[:2] == _JPEG_SOI:
        width, height = _jpeg_size(data)
    else:
        raise ConversionError(f"compressed image is neither JPEG nor PNG (format '{msg.format}', "
                              f"{len(data)} bytes)")
    _check_size(width, height)
    return width, height


def compressed_to_numpy(msg: CompressedImage, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> (H, W) grey, (H, W) uint16 or (H, W, 3) BGR array.

    min_size (h, w): a JPEG may be decoded reduced by 2, 4 or 8 (libjpeg's DCT scaling: memory and time
    shrink with the square of the factor) as long as both sides stay at least this large; None decodes
    in full. PNGs always decode in full. The header is checked first (see compressed_size).
    """
    compressed_size(msg)
    data = memoryview(msg.data).cast("B")
    if data[:2] == _JPEG_SOI:
        return _decode_jpeg(data, min_size)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ConversionError(f"cannot decode compressed image (format '{msg.format}', {len(data)} bytes)")
    if decoded.ndim == 3 and decoded.shape[2] == 4:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGRA2BGR)
    return decoded


def numpy_to_compressed(
    array_: np.ndarray, image_format: str = "jpeg", header: Header | None = None, quality: int = 90
) -> CompressedImage:
    """(H, W) grey or (H, W, 3) BGR uint8 array -> sensor_msgs/CompressedImage ("jpeg" or "png")."""
    extension = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(image_format)
    if extension is None:
        raise ConversionError(f"unknown compressed format '{image_format}' (use jpeg or png)")
    ok, encoded = cv2.imencode(extension, array_, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ConversionError(f"cannot encode array of shape {array_.shape} as {image_format}")
    kind = "bgr8" if array_.ndim == 3 else "mono8"
    msg = CompressedImage(header=header or Header(), format=f"{kind}; {image_format} compressed {kind}")
    msg.data = array.array("B", encoded.tobytes())
    return msg


def to_gray(image: np.ndarray, encoding: str) -> np.ndarray:
    """Image array in ``encoding`` -> (H, W) grey: uint8 for 8-bit encodings, float32 in [0, 1] otherwise.

    Bayer mosaics are demosaiced; 16-bit images are divided by 65535; 32FC1 is taken as
    intensity in [0, 1] and clipped.
    """
    _encoding_layout(encoding)
    if encoding in _BAYER_TO_GRAY:
        return cv2.cvtColor(image, _BAYER_TO_GRAY[encoding])
    if encoding in _COLOR_TO_GRAY:
        return cv2.cvtColor(image, _COLOR_TO_GRAY[encoding])
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype == np.float32:
        return np.clip(np.nan_to_num(image), 0.0, 1.0)
    return image


def to_bgr8(image: np.ndarray, encoding: str) -> np.ndarray:
    """Image array in ``encoding`` -> (H, W, 3) BGR uint8, for drawing debug images."""
    _encoding_layout(encoding)
    if encoding in _BAYER_TO_BGR:
        return cv2.cvtColor(image, _BAYER_TO_BGR[encoding])
    if encoding in _COLOR_TO_BGR:
        return cv2.cvtColor(image, _COLOR_TO_BGR[encoding])
    if image.ndim == 3:
        return np.ascontiguousarray(image)
    gray = to_gray(image, encoding)
    if gray.dtype != np.uint8:
        gray = (gray * 255.0 + 0.5).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def _encoding_layout(encoding: str) -> tuple[np.dtype, int]:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ConversionError(
            f"unknown image encoding '{encoding}' (supported: {', '.join(ENCODINGS)})"
        ) from None


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ConversionError(f"image size {width}x{height} is empty")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise ConversionError(f"image size {width}x{height} is absurd (largest side allowed {MAX_IMAGE_SIDE})")


def _png_size(data: memoryview) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which must come first."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ConversionError(f"compressed image: PNG header is truncated or has no IHDR chunk ({len(data)} bytes)")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _jpeg_size(data: memoryview) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header (SOF), walking the marker segments that precede it."""
    position = 2
    while position + 9 <= len(data):  # a frame header needs 9 bytes from its marker on
        if data[position] != 0xFF:
            raise ConversionError(f"compressed image: JPEG header has no marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF or marker in _JPEG_STANDALONE_MARKERS:  # fill byte, or a marker without a length
            position += 1 if marker == 0xFF else 2
            continue
        if marker in _JPEG_FRAME_MARKERS:
            height = data[position + 5] << 8 | data[position + 6]
            return data[position + 7] << 8 | data[position + 8], height
        if marker == _JPEG_SCAN_MARKER:
            raise ConversionError("compressed image: JPEG scan starts before any frame header (SOF)")
        position += 2 + (data[position + 2] << 8 | data[position + 3])
    raise ConversionError(f"compressed image: JPEG header is truncated before its frame header ({len(data)} bytes)")


def _decode_jpeg(data: memoryview, min_size: tuple[int, int] | None) -> np.ndarray:
    """JPEG bytes -> (H, W) grey or (H, W, 3) BGR uint8, reduced by up to 8 while at least min_size (h, w)."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as picture:
            if min_size is not None:
                picture.draft(picture.mode, (min_size[1], min_size[0]))
            decoded = np.asarray(picture if picture.mode in ("L", "RGB") else picture.convert("RGB"))
    except Exception as error:  # noqa: BLE001  Pillow raises OSError, SyntaxError, ValueError, ... on hostile bytes
        raise ConversionError(f"cannot decode compressed image (JPEG, {len(data)} bytes): {error}") from None
    return decoded if decoded.ndim == 2 else cv2.cvtColor(decoded, cv2.COLOR_RGB2BGR)


def _channels(array_: np.ndarray) -> int:
    return 1 if array_.ndim == 2 else array_.shape[2]


def _default_encoding(array_: np.ndarray) -> str:
    defaults = {("uint8", 1): "mono8", ("uint8", 3): "bgr8", ("uint8", 4): "bgra8",
                ("uint16", 1): "mono16", ("float32", 1): "32FC1"}
    key = (array_.dtype.name, _channels(array_))
    if array_.ndim not in (2, 3) or key not in defaults:
        raise ConversionError(f"no image encoding for an array of {array_.dtype} with shape {array_.shape}")
    return defaults[key]

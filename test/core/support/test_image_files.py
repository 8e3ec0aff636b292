"""Tests of usp_core.support.image_files: reading grey and resizing as the detector and int8 calibration do."""
import cv2
import numpy as np
import pytest

from usp_core.inference.calibration import CalibrationError, calibration_set
from usp_core.support.image_files import read_grey, resize_image


def _photo(path, height=60, width=80):
    """A smooth grey ramp with a bright square, written as PNG. Returns the array."""
    ramp = np.add.outer(np.arange(height) * 2, np.arange(width) * 3).astype(np.uint8)
    ramp[20:30, 30:45] = 255
    cv2.imwrite(str(path), ramp)
    return ramp


def test_read_grey_reads_the_pixels_and_refuses_what_is_no_image(tmp_path):
    photo = _photo(tmp_path / "a.png")
    assert np.array_equal(read_grey(tmp_path / "a.png"), photo)
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match="cannot read image"):
        read_grey(tmp_path / "b.png")


def test_resize_shrinks_by_area_and_enlarges_bilinearly(tmp_path):
    photo = _photo(tmp_path / "a.png")
    assert np.array_equal(resize_image(photo, (30, 40)), cv2.resize(photo, (40, 30), interpolation=cv2.INTER_AREA))
    assert np.array_equal(resize_image(photo, (120, 160)),
                          cv2.resize(photo, (160, 120), interpolation=cv2.INTER_LINEAR))


@pytest.mark.parametrize("size", [(30, 40), (120, 160)])
def test_calibration_photos_are_resized_as_the_detector_resizes(tmp_path, size):
    photo = _photo(tmp_path / "a.png")
    (image,) = calibration_set(tmp_path).images(*size)
    assert image.shape == (1, 1, *size) and image.dtype == np.float32
    assert np.array_equal(image[0, 0], resize_image(photo, size).astype(np.float32) / 255.0)


def test_a_calibration_photo_that_does_not_decode_is_refused_when_the_set_is_chosen(tmp_path):
    _photo(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(CalibrationError, match=r"calibration photo .*b\.jpg cannot be decoded"):
        calibration_set(tmp_path)
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(CalibrationError, match=r"b\.jpg cannot be decoded"):
        calibration_set(tmp_path)

"""The virtual camera: frames are exact homographies of one photo, along a smooth, seeded path."""
import itertools

import cv2
import numpy as np
import pytest

from usp_core.synthetic.virtual_camera import VirtualCamera, VirtualCameraConfig

SMALL = VirtualCameraConfig(width=160, height=120)


def textured_photo(height=300, width=400, seed=0):
    """A photo-like BGR image: smoothed noise at two scales plus a few rectangles."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.random((height // 16, width // 16, 3)).astype(np.float32), (width, height))
    fine = cv2.GaussianBlur(rng.random((height, width, 3)).astype(np.float32), (0, 0), 2)
    image = (0.6 * coarse + 0.4 * fine) * 255
    for _ in range(12):
        x, y = rng.integers(0, width - 40), rng.integers(0, height - 40)
        cv2.rectangle(image, (int(x), int(y)), (int(x) + 30, int(y) + 20), rng.integers(0, 255, 3).tolist(), -1)
    return image.astype(np.uint8)


def corners(config):
    w, h = config.width - 1, config.height - 1
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)


def warp(points, homography):
    mapped = np.c_[points, np.ones(len(points))] @ homography.T
    return mapped[:, :2] / mapped[:, 2:]


def test_frames_have_the_configured_size_and_are_repeatable():
    photo = textured_photo()
    camera = VirtualCamera(photo, SMALL)
    frame = camera.render(5)
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, VirtualCamera(photo, SMALL).render(5))
    other_seed = VirtualCameraConfig(width=160, height=120, seed=1)
    assert not np.array_equal(frame, VirtualCamera(photo, other_seed).render(5))


def test_ground_truth_homography_maps_one_frame_onto_the_next():
    photo = textured_photo()
    config = VirtualCameraConfig(width=160, height=120, period_frames=30.0)  # fast motion: a visible change
    camera = VirtualCamera(photo, config)
    inside = np.full(photo.shape[:2], 255, np.uint8)
    inside[:4], inside[-4:], inside[:, :4], inside[:, -4:] = 0, 0, 0, 0  # keep away from the photo's edge
    for index in (0, 7, 40):
        previous, current = camera.render(index), camera.render(index + 1)
        homography = camera.homography_between(index, index + 1)
        predicted = cv2.warpPerspective(previous, homography, (160, 120), flags=cv2.INTER_LINEAR)
        in_photo = cv2.warpPerspective(inside, camera.photo_to_frame(index + 1), (160, 120), flags=cv2.INTER_NEAREST)
        seen_before = cv2.warpPerspective(np.full((120, 160), 255, np.uint8), homography, (160, 120),
                                          flags=cv2.INTER_NEAREST)
        valid = cv2.erode(np.minimum(in_photo, seen_before), np.ones((5, 5), np.uint8)) > 0
        assert valid.mean() > 0.7
        error = np.abs(predicted.astype(float) - current.astype(float))[valid].mean()
        unmoved = np.abs(previous.astype(float) - current.astype(float))[valid].mean()
        assert error < 2.0, f"frame {index}: warped previous differs from current by {error:.2f} grey levels"
        assert unmoved > 3 * error, "the camera must actually move between frames"


def test_homographies_compose_along_the_path():
    camera = VirtualCamera(textured_photo(), SMALL)
    direct = camera.homography_between(3, 5)
    chained = camera.homography_between(4, 5) @ camera.homography_between(3, 4)
    np.testing.assert_allclose(direct, chained / chained[2, 2], atol=1e-9)
    np.testing.assert_allclose(camera.homography_between(4, 4), np.eye(3), atol=1e-12)


def test_path_is_smooth_and_keeps_moving():
    config = VirtualCameraConfig(width=160, height=120)
    camera = VirtualCamera(textured_photo(), config)
    steps, positions = [], []
    for index in range(0, 300):
        steps.append(np.linalg.norm(warp(corners(config), camera.homography_between(index, index + 1))
                                    - corners(config), axis=1).max())
        positions.append(warp(corners(config), camera.frame_to_photo(index)))
    steps = np.array(steps)
    travel = np.ptp(np.array(positions), axis=0).max()
    assert steps.max() < 6.0, f"largest corner jump between frames {steps.max():.1f} px is not smooth"
    assert steps.min() > 0.0
    assert travel > 40.0, f"the view only travels {travel:.1f} px of the photo in 300 frames"
    second_difference = np.abs(np.diff(steps, 2)).max()
    assert second_difference < 1.0, "frame-to-frame motion must change gradually"


def test_frames_iterator_pairs_each_frame_with_the_homography_from_the_previous():
    camera = VirtualCamera(textured_photo(), SMALL)
    pairs = list(itertools.islice(camera.frames(start=10), 3))
    assert pairs[0][1] is None
    np.testing.assert_array_equal(pairs[0][0], camera.render(10))
    np.testing.assert_array_equal(pairs[2][0], camera.render(12))
    np.testing.assert_allclose(pairs[2][1], camera.homography_between(11, 12))


def test_grey_photo_is_accepted_and_bad_inputs_refused():
    grey = cv2.cvtColor(textured_photo(), cv2.COLOR_BGR2GRAY)
    assert VirtualCamera(grey, SMALL).render(0).shape == (120, 160, 3)
    with pytest.raises(ValueError, match="uint8"):
        VirtualCamera(np.zeros((50, 50, 3), np.float32), SMALL)
    with pytest.raises(ValueError, match="coverage"):
        VirtualCameraConfig(coverage=0.0)
    with pytest.raises(ValueError, match="frame size"):
        VirtualCameraConfig(width=4)

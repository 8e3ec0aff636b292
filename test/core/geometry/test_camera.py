"""Camera models: undistortion inverts projection for every model; YAML layouts load; bad cameras get one error."""
import numpy as np
import pytest

from usp_core.geometry.camera import CameraError, CameraModel, load_camera_yaml

K = [[500.0, 0.0, 320.0], [0.0, 505.0, 240.0], [0.0, 0.0, 1.0]]
CAMERAS = {
    "pinhole": CameraModel(640, 480, K, [], "plumb_bob"),
    "plumb_bob": CameraModel(640, 480, K, [0.231222, -0.784899, -0.003257, -0.000105, 0.917205], "plumb_bob"),
    "rational_polynomial": CameraModel(640, 480, K, [-0.3, 0.1, 0.001, -0.002, 0.02, 0.05, -0.02, 0.01],
                                       "rational_polynomial"),
    "equidistant": CameraModel(640, 480, [[280.0, 0, 320.0], [0, 280.0, 240.0], [0, 0, 1]],
                               [0.02, -0.01, 0.004, -0.001], "equidistant"),
}


def rays(count: int, half_angle_deg: float, seed: int = 0) -> np.ndarray:
    """(count, 3) points at depth 1..5 within a cone around the optical axis."""
    rng = np.random.default_rng(seed)
    tangent = np.tan(np.radians(half_angle_deg))
    xy = rng.uniform(-tangent, tangent, (count, 2))
    depth = rng.uniform(1.0, 5.0, (count, 1))
    return np.hstack([xy, np.ones((count, 1))]) * depth


@pytest.mark.parametrize("name", CAMERAS)
def test_undistort_inverts_projection(name):
    camera = CAMERAS[name]
    half_angle = 60.0 if name == "equidistant" else 30.0  # the fisheye sees wider than a pinhole
    points = rays(500, half_angle)
    pixels = camera.project(points)
    normalised = camera.undistort(pixels)
    np.testing.assert_allclose(normalised, points[:, :2] / points[:, 2:], atol=2e-6)
    if camera.distorted:  # the distortion is not a no-op: pinhole pixels differ from the distorted ones
        assert np.abs(camera.to_pixels(normalised) - pixels).max() > 1.0


def test_yaml_layouts(tmp_path):
    calibration = tmp_path / "ost.yaml"
    calibration.write_text(
        "image_width: 752\nimage_height: 480\ncamera_name: cam0\n"
        "camera_matrix: {rows: 3, cols: 3, data: [458.6, 0, 367.2, 0, 457.3, 248.4, 0, 0, 1]}\n"
        "distortion_model: equidistant\ndistortion_coefficients: {rows: 1, cols: 4, data: [0.1, -0.2, 0.01, 0.0]}\n")
    camera = load_camera_yaml(calibration)
    assert (camera.width, camera.height, camera.model) == (752, 480, "equidistant")
    np.testing.assert_allclose(camera.matrix[:2, 2], [367.2, 248.4])
    np.testing.assert_allclose(camera.distortion, [0.1, -0.2, 0.01, 0.0])
    flat = tmp_path / "camera.yaml"
    flat.write_text("width: 640\nheight: 480\nfx: 520.9\nfy: 521.0\ncx: 325.1\ncy: 249.7\n"
                    "distortion_model: plumb_bob\ndistortion: [0.23, -0.78, -0.003, -0.0001, 0.91]\n")
    camera = load_camera_yaml(flat)
    assert camera.focal == pytest.approx(520.95)
    assert camera.distortion.shape == (5,)


def test_shared_sequences_cameras_load(shared_data):
    tum = load_camera_yaml(shared_data / "sequences" / "tum_fr2" / "camera.yaml")
    kitti = load_camera_yaml(shared_data / "sequences" / "kitti_odometry" / "camera.yaml")
    assert tum.distorted and not kitti.distorted
    assert (kitti.width, kitti.height) == (1241, 376)


@pytest.mark.parametrize("text, fragment", [
    ("width: 640\nheight: 480\nfx: 500\nfy: 500\ncx: 320\n", "lacks 'cy'"),
    ("width: 640\nheight: 480\nfx: 500\nfy: 500\ncx: 320\ncy: 240\ndistortion: [0.1, 0.2, 0.3]\n", "4 or 5"),
    ("width: 640\nheight: 480\nfx: 500\nfy: 500\ncx: 320\ncy: 240\ndistortion_model: kb8\n", "unknown distortion"),
    ("width: 640\nheight: 480\nfx: -5\nfy: 500\ncx: 320\ncy: 240\n", "positive fx"),
    ("[1, 2", "not YAML"),
])
def test_bad_yaml_gets_one_clear_error(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CameraError, match=fragment) as info:
        load_camera_yaml(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_uncalibrated_camera_info_is_refused():
    with pytest.raises(CameraError, match="uncalibrated"):
        CameraModel.from_fields(640, 480, [0.0] * 9, [], "plumb_bob")


@pytest.mark.parametrize("last_row", [[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.001, 0.0, 1.0]])
def test_a_camera_matrix_whose_last_row_is_not_0_0_1_is_refused(last_row):
    k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, *last_row]
    with pytest.raises(CameraError, match="last row must be 0 0 1"):
        CameraModel.from_fields(640, 480, k, [0.0] * 5, "plumb_bob")

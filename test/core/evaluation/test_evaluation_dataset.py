"""HPatches-layout loader: sequence discovery, per-image sizes, homography rescaling on resize."""
import cv2
import numpy as np
import pytest

from usp_core.evaluation.dataset import (
    DatasetError,
    find_sequences,
    load_sequence,
    rescale_homography,
)
from usp_core.evaluation.metrics import warp_points

VIEW = np.array([[0.85, 0.1, 30.0], [-0.08, 0.9, 20.0], [2e-4, -1e-4, 1.0]])  # maps image 1 to image 2 pixels


def blob_image(size: tuple[int, int], centre: tuple[float, float], sigma: float = 6.0) -> np.ndarray:
    """(h, w) uint8 image of one Gaussian blob at centre (x, y), OpenCV pixel-centre coordinates."""
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float64)
    blob = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
    return np.round(255 * blob).astype(np.uint8)


def centroid(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted (x, y) centre of an image."""
    ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float64)
    weights = image.astype(np.float64)
    return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()


def write_sequence(folder, size_a=(300, 400), size_b=(280, 360), ext=".png"):
    """A two-image sequence whose image 2 is image 1 warped by VIEW, at a different size."""
    folder.mkdir(parents=True)
    image_a = blob_image(size_a, (180.3, 140.7), sigma=10.0)
    image_b = cv2.warpPerspective(image_a, VIEW, (size_b[1], size_b[0]), flags=cv2.INTER_LINEAR)
    for name, image in (("1", image_a), ("2", image_b)):
        cv2.imwrite(str(folder / f"{name}{ext}"), cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if ext == ".ppm" else image)
    np.savetxt(folder / "H_1_2", VIEW)
    return folder


def test_rescaled_homography_commutes_with_resizing():
    size_a, size_b, size_to = (700, 1000), (680, 880), (240, 320)
    scaled = rescale_homography(VIEW, size_a, size_b, size_to)
    points = np.array([[0.0, 0.0], [999.0, 699.0], [412.5, 300.25]])

    def to_eval(p, size):
        sx, sy = size_to[1] / size[1], size_to[0] / size[0]
        return (p + 0.5) * [sx, sy] - 0.5

    np.testing.assert_allclose(warp_points(to_eval(points, size_a), scaled), to_eval(warp_points(points, VIEW), size_b))
    assert scaled[2, 2] == pytest.approx(1.0)


@pytest.mark.parametrize("size_from,size_to", [((350, 500), (240, 320)), ((120, 160), (240, 320))])
def test_rescaling_follows_cv2_resize_pixel_centres(size_from, size_to):
    centre = np.array([201.3, 97.6]) * [size_from[1] / 500, size_from[0] / 350]
    image = blob_image(size_from, tuple(centre), sigma=8.0)
    resized = cv2.resize(image, (size_to[1], size_to[0]), interpolation=cv2.INTER_AREA)
    resize_map = rescale_homography(np.eye(3), size_to, size_from, size_to)  # S_from->to @ I @ inv(S_to->to = I)
    expected = warp_points(centre[None], resize_map)[0]
    np.testing.assert_allclose(centroid(resized), expected, atol=0.05)


def test_load_sequence_reads_each_size_and_maps_the_blob(tmp_path):
    folder = write_sequence(tmp_path / "seq")
    (pair,) = load_sequence(folder, (240, 320))
    assert pair.sequence == "seq" and pair.index == 2
    assert pair.image_a.shape == pair.image_b.shape == (240, 320) and pair.image_a.dtype == np.uint8
    mapped = warp_points(centroid(pair.image_a)[None], pair.homography)[0]
    np.testing.assert_allclose(mapped, centroid(pair.image_b), atol=0.3)


def test_find_sequences_in_a_folder_or_a_single_sequence(tmp_path):
    write_sequence(tmp_path / "b_seq", ext=".ppm")
    write_sequence(tmp_path / "a_seq")
    (tmp_path / "not_a_sequence").mkdir()
    assert [p.name for p in find_sequences(tmp_path)] == ["a_seq", "b_seq"]
    assert find_sequences(tmp_path / "b_seq") == [tmp_path / "b_seq"]


def test_homography_files_define_the_pairs(tmp_path):
    folder = write_sequence(tmp_path / "seq")
    cv2.imwrite(str(folder / "3.png"), np.zeros((10, 10), np.uint8))  # no H_1_3: not a pair
    assert [p.index for p in load_sequence(folder, (64, 64))] == [2]


@pytest.mark.parametrize("missing", ["1.png", "2.png"])
def test_a_missing_image_is_named(tmp_path, missing):
    folder = write_sequence(tmp_path / "data" / "seq")
    (folder / missing).unlink()
    assert find_sequences(tmp_path / "data") == [folder]
    with pytest.raises(DatasetError, match=f"missing image {folder / missing} "):
        list(load_sequence(folder, (64, 64)))


@pytest.mark.parametrize("setup", ["missing", "empty", "bad_h", "singular_h"])
def test_bad_data_raises_dataset_error(tmp_path, setup):
    if setup == "empty":
        (tmp_path / "data").mkdir()
    if setup in ("bad_h", "singular_h"):
        folder = write_sequence(tmp_path / "data" / "seq")
        (folder / "H_1_2").write_text("1 0 0\n0 1\n" if setup == "bad_h" else "0 0 0\n0 0 0\n0 0 0\n")
    with pytest.raises(DatasetError):
        for folder in find_sequences(tmp_path / "data"):
            list(load_sequence(folder, (64, 64)))

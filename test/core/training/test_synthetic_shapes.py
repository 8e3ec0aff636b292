"""Tests of usp_core.training.synthetic_shapes: determinism, every primitive, and labels that sit on visible corners."""
import cv2
import numpy as np
import pytest

from usp_core.training.synthetic_shapes import PRIMITIVES, ShapesConfig, render_shapes

CORNER_KINDS = ("lines", "polygon", "multiple_polygons", "star", "checkerboard", "stripes", "cube")
BOARDS = ("checkerboard", "stripes")  # may extend past the image; their outside points are dropped
POINT_COUNTS = {  # (min, max) labels per image
    "lines": (2, 10), "polygon": (3, 8), "multiple_polygons": (3, 30), "ellipses": (0, 0), "star": (4, 6),
    "checkerboard": (4, 49), "stripes": (4, 20), "cube": (7, 7), "gaussian_noise": (0, 0),
}
SEEDS = range(50)


def _only(kind: str, **changes) -> ShapesConfig:
    """The default config restricted to one primitive."""
    return ShapesConfig(primitives=(kind,), **changes)


def _window_max(response: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """(N,) largest value of response (H, W) within a (2 radius + 1)^2 window around each point (N, 2)."""
    rounded = np.rint(points).astype(int)
    return np.array([response[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1].max()
                     for x, y in rounded])


def _on_corner(response: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) bool: a Shi-Tomasi corner at each point: the response within 2 px is >= 2 % of the image's
    maximum and >= half of the strongest response within 5 px (a stronger corner is not 3+ px away)."""
    near = _window_max(response, points, 2)
    return (near >= 0.02 * response.max()) & (near >= 0.5 * _window_max(response, points, 5))


def test_same_seed_same_render_and_different_seeds_differ():
    for seed in range(20):
        image, points = render_shapes(seed)
        again_image, again_points = render_shapes(seed, ShapesConfig())
        assert np.array_equal(image, again_image) and np.array_equal(points, again_points)
    renders = [render_shapes(seed, _only("polygon")) for seed in range(5)]
    assert all(not np.array_equal(renders[0][0], other[0]) for other in renders[1:])
    assert all(not np.array_equal(renders[0][1], other[1]) for other in renders[1:])


@pytest.mark.parametrize("kind", PRIMITIVES)
def test_each_primitive_renders_with_plausible_point_counts(kind):
    counts = []
    for seed in range(30):
        image, points = render_shapes(seed, _only(kind, noise_std=0.0, background_range=0))
        assert image.shape == (120, 160) and image.dtype == np.uint8
        assert points.dtype == np.float32 and points.ndim == 2 and points.shape[1] == 2
        background = np.bincount(image.ravel()).argmax()  # flat background: the commonest level
        assert (np.abs(image.astype(int) - background) >= 15).mean() > 0.002  # something drawn on it
        counts.append(len(points))
    low, high = POINT_COUNTS[kind]
    assert low <= min(counts) and max(counts) <= high
    if kind == "lines":
        assert all(count % 2 == 0 for count in counts)


@pytest.mark.parametrize("kind", PRIMITIVES)
def test_points_inside_image_and_distinct(kind):
    config = _only(kind, image_size=(96, 128))
    for seed in range(30):
        _, points = render_shapes(seed, config)
        low = 0.0 if kind in BOARDS else config.margin
        assert (points >= low).all() and (points[:, 0] <= 127 - low).all() and (points[:, 1] <= 95 - low).all()
        gaps = np.linalg.norm(points[:, None] - points[None], axis=-1) + 1e9 * np.eye(len(points))
        assert len(points) < 2 or gaps.min() >= 0.05 * 96  # each label a separate corner


def test_polygons_contrast_with_the_background():
    for seed in range(30):
        image, points = render_shapes(seed, _only("polygon", noise_std=0.0, blur_sigma=0.0))
        fill = int(image[tuple(np.rint(points.mean(0)).astype(int)[::-1])])  # centroid of a convex polygon
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(int)  # background
        assert np.abs(border - fill).min() >= 30


@pytest.mark.parametrize("kind", CORNER_KINDS)
def test_labels_sit_on_shi_tomasi_corners(kind):
    hits, shifted_hits = [], []
    for seed in SEEDS:
        image, points = render_shapes(seed, _only(kind, noise_std=0.0))
        response = cv2.cornerMinEigenVal(image.astype(np.float32), 3, 3)
        hits.append(_on_corner(response, points))
        angles = np.random.default_rng(seed).uniform(0.0, 2 * np.pi, len(points))
        shifted = points + 6.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        shifted_hits.append(_on_corner(response, np.clip(shifted, 0, [159, 119])))
    assert np.concatenate(hits).mean() >= 0.95
    assert np.concatenate(shifted_hits).mean() <= 0.3  # the check can fail: labels 6 px off mostly do


@pytest.mark.parametrize("kind", CORNER_KINDS)
def test_detected_corners_match_labels(kind):
    """goodFeaturesToTrack on clean renders: >= 80 % of its corners are labelled and >= 80 % of labels found.

    Detections within 4 px of the border are left out (the detector's reflected border turns an edge
    leaving the image into a corner); a star's junction of thin rays is detected at the concave corners
    between rays, up to 5 px from its centre, so stars are matched within 5 px.
    """
    radius = 5.0 if kind == "star" else 3.0
    precise, found = [], []
    for seed in SEEDS:
        image, points = render_shapes(seed, _only(kind, noise_std=0.0))
        detected = cv2.goodFeaturesToTrack(image, 100, 0.05, 3)[:, 0]
        detected = detected[((detected >= 4) & (detected <= [155, 115])).all(1)]
        inner = points[((points >= 3) & (points <= [156, 116])).all(1)]
        distances = np.linalg.norm(detected[:, None] - points[None], axis=-1)
        precise.append(distances.min(1) <= radius)
        found.append(np.linalg.norm(inner[:, None] - detected[None], axis=-1).min(1) <= radius)
    assert np.concatenate(precise).mean() >= 0.8
    assert np.concatenate(found).mean() >= 0.8


def test_config_validation_and_yaml_lists():
    config = ShapesConfig(image_size=[64, 80], primitives=["cube", "star"])
    assert config.image_size == (64, 80) and config.primitives == ("cube", "star")
    image, _ = render_shapes(3, config)
    assert image.shape == (64, 80)
    for bad in ({"primitives": ()}, {"primitives": ("circle",)}, {"image_size": (16, 16)},
                {"min_contrast": 60}, {"noise_std": -1.0}, {"supersampling": 0}):
        with pytest.raises(ValueError):
            ShapesConfig(**bad)

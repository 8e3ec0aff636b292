"""OpenCV baselines behind the method interface, and fair descriptor matching (Hamming for binary)."""
import sys

import cv2
import numpy as np
import pytest

from usp_core.evaluation.dataset import resize_grey
from usp_core.evaluation.match import descriptor_vectors, mutual_matches, nearest_neighbour_matches
from usp_core.evaluation.methods import MethodError, available_methods, build_method, top_k
from usp_core.evaluation.metrics import matching_score, mutual_matching_score
from usp_core.geometry.matching import mutual_nearest_neighbours
from usp_core.inference.features import Features


def mutual(descriptors_a, descriptors_b, binary):
    """Mutual nearest-neighbour matches (K, 2) as the evaluation derives them."""
    return mutual_matches(*nearest_neighbour_matches(descriptors_a, descriptors_b, binary))


def pair_set(matches: np.ndarray) -> set[tuple[int, int]]:
    return {tuple(m) for m in matches.tolist()}


def textured_image(size=(240, 320), seed=0) -> np.ndarray:
    """(h, w) uint8 image of random blurred blocks: plenty of corners and blobs."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[0] // 8, size[1] // 8), dtype=np.uint8)
    image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return cv2.GaussianBlur(image, (3, 3), 0)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) Hamming distances between packed-bit descriptors."""
    return np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=2).sum(axis=2)


def test_available_methods_follow_the_installed_opencv():
    names = available_methods()
    assert names[:5] == ("usp", "superpoint", "superpoint-ha", "orb", "sift")
    contrib = getattr(cv2, "xfeatures2d", None)
    assert ("akaze" in names) == (hasattr(cv2, "AKAZE_create") or hasattr(contrib, "AKAZE_create"))
    assert ("brisk" in names) == (hasattr(cv2, "BRISK_create") or hasattr(contrib, "BRISK_create"))


def test_usp_runs_in_the_chosen_backend_and_a_missing_runtime_is_a_method_error(monkeypatch):
    assert build_method("usp", 20, backend="torch").detector.backend == "torch"
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes "import openvino" fail
    with pytest.raises(MethodError, match="pip install openvino"):
        build_method("usp", 20, backend="openvino")


@pytest.mark.parametrize("name,binary,width,dtype", [
    ("orb", True, 32, np.uint8), ("sift", False, 128, np.float32), ("akaze", True, 61, np.uint8),
    ("brisk", True, 64, np.uint8),
])
def test_opencv_method_keeps_top_k_sorted_by_score(name, binary, width, dtype):
    method = build_method(name, 50)
    image = textured_image()
    features = method.extract(image)
    assert method.binary == binary
    assert isinstance(features, Features) and features.image_size == (image.shape[1], image.shape[0])
    assert 0 < len(features) <= 50
    assert features.keypoints.shape == (len(features.scores), 2) and features.keypoints.dtype == np.float32
    assert features.descriptors.shape == (len(features.scores), width) and features.descriptors.dtype == dtype
    assert np.all(np.diff(features.scores) <= 0)


@pytest.mark.parametrize("name", ["akaze", "brisk"])
@pytest.mark.parametrize("size,k", [((240, 320), 300), ((480, 640), 1000)])
def test_methods_without_a_point_budget_fill_top_k_on_a_low_texture_photo(shared_data, name, size, k):
    """HPatches v_soldiers/1: OpenCV's default thresholds give AKAZE 44 / 143 and BRISK 149 / 211 points here."""
    photo = resize_grey(cv2.imread(str(shared_data / "eval" / "hpatches" / "v_soldiers" / "1.png"), 0), size)
    assert len(build_method(name, k).extract(photo).keypoints) == k


def test_top_k_keeps_the_best_scores_with_their_rows():
    points = np.arange(10, dtype=np.float32).reshape(5, 2)
    kept = top_k(Features(points, np.array([0.1, 0.9, 0.5, 0.7, 0.2]), np.arange(5)[:, None], (20, 10)), 3)
    assert kept.descriptors.ravel().tolist() == [1, 3, 2] and kept.image_size == (20, 10)
    np.testing.assert_array_equal(kept.keypoints, points[[1, 3, 2]])


def test_unknown_method_and_bad_top_k_are_rejected():
    with pytest.raises(MethodError, match="unknown method"):
        build_method("surf_plus", 100)
    with pytest.raises(MethodError, match="top-k"):
        build_method("orb", 0)


def test_binary_vectors_give_four_times_the_hamming_distance():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 256, (20, 61), dtype=np.uint8), rng.integers(0, 256, (30, 61), dtype=np.uint8)
    difference = descriptor_vectors(a, True).numpy()[:, None] - descriptor_vectors(b, True).numpy()[None]
    np.testing.assert_array_equal(np.square(difference).sum(axis=2), 4 * hamming(a, b))


def test_float_vectors_are_scale_free():
    rng = np.random.default_rng(2)
    descriptors = rng.random((10, 128)).astype(np.float32)
    scaled = descriptor_vectors(descriptors * 512, False)
    np.testing.assert_allclose(scaled, descriptor_vectors(descriptors, False), atol=1e-6)


def test_hamming_matching_finds_noisy_copies():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (100, 32), dtype=np.uint8)
    flips = np.packbits(rng.random((100, 256)) < 0.05, axis=1)  # about 13 of 256 bits flipped per row
    order = rng.permutation(100)
    matches = mutual(a, (a ^ flips)[order], binary=True)
    assert len(matches) == 100
    np.testing.assert_array_equal(order[matches[:, 1]], matches[:, 0])


def test_random_descriptors_give_matching_scores_near_zero():
    rng = np.random.default_rng(4)
    xs, ys = np.meshgrid(np.arange(10, 310, 15.0), np.arange(10, 230, 15.0))
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    identity, size = np.eye(3), (240, 320)
    same = rng.normal(size=(len(points), 64)).astype(np.float32)
    other = rng.normal(size=(len(points), 64)).astype(np.float32)
    for descriptors_b, low, high in ((same, 1.0, 1.0), (other, 0.0, 0.05)):
        published = matching_score(points, points, *nearest_neighbour_matches(same, descriptors_b, False),
                                    identity, size, size)
        score_mutual = mutual_matching_score(points, points, mutual(same, descriptors_b, False), identity, size, size)
        assert low <= published <= high and low <= score_mutual <= high


def test_orb_matches_equal_opencv_hamming_cross_check():
    image = textured_image(seed=5)
    rotation = cv2.getRotationMatrix2D((160, 120), 15, 0.9)
    method = build_method("orb", 300)
    a, b = method.extract(image), method.extract(cv2.warpAffine(image, rotation, (320, 240)))
    ours = pair_set(mutual(a.descriptors, b.descriptors, binary=True))
    reference = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a.descriptors, b.descriptors)
    assert len(ours) > 50
    assert ours == {(m.queryIdx, m.trainIdx) for m in reference}


@pytest.mark.parametrize("name,norm", [("orb", cv2.NORM_HAMMING), ("brisk", cv2.NORM_HAMMING), ("sift", cv2.NORM_L2)])
def test_nearest_neighbours_equal_opencv_brute_force_without_cross_check(name, norm):
    """Both directions, ties included (binary), against cv2.BFMatcher(crossCheck=False) as KP2D matches."""
    image = textured_image(seed=6)
    rotation = cv2.getRotationMatrix2D((160, 120), 20, 1.1)
    method = build_method(name, 300)
    a, b = method.extract(image), method.extract(cv2.warpAffine(image, rotation, (320, 240)))
    a_to_b, b_to_a = nearest_neighbour_matches(a.descriptors, b.descriptors, method.binary)
    unit = (lambda d: d) if method.binary else (lambda d: d / np.linalg.norm(d, axis=1, keepdims=True))
    matcher = cv2.BFMatcher(norm, crossCheck=False)
    forward = matcher.match(unit(a.descriptors), unit(b.descriptors))
    backward = matcher.match(unit(b.descriptors), unit(a.descriptors))
    assert a_to_b.tolist() == [[m.queryIdx, m.trainIdx] for m in forward]
    assert b_to_a.tolist() == [[m.trainIdx, m.queryIdx] for m in backward]
    both_ways = mutual_matches(a_to_b, b_to_a)
    assert pair_set(both_ways) == pair_set(a_to_b) & pair_set(b_to_a)
    assert both_ways[:, 0].tolist() == sorted(both_ways[:, 0].tolist()) and 0 < len(both_ways) < len(a_to_b)
    ros_matcher = mutual_nearest_neighbours(descriptor_vectors(a.descriptors, method.binary),
                                            descriptor_vectors(b.descriptors, method.binary))
    np.testing.assert_array_equal(both_ways, ros_matcher.numpy())  # the pairs the ROS matcher finds

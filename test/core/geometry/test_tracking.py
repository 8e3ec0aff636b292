"""Frame tracking without ROS: keyframe policy decisions, match results against known homographies, track ids."""
import cv2
import numpy as np
import pytest
import torch

from usp_core.evaluation.metrics import corner_error
from usp_core.geometry.match_result import MatchResult
from usp_core.geometry.tracking import (Frame, FrameTracker, KeyframeConfig, KeyframePolicy, MatchConfig, TrackTrails,
                                        match_frames)
from usp_core.inference.detector import KeypointDetector
from usp_core.inference.features import Features
from usp_core.inference.weights import BUNDLED_WEIGHTS
from usp_core.synthetic.sequence import synthetic_sequence
from usp_core.synthetic.virtual_camera import VirtualCamera

SIZE = (320, 240)


@pytest.fixture(scope="module")
def sequence():
    return synthetic_sequence(8, keypoints=300, dim=64, size=SIZE, seed=3)


def frame(synthetic, stamp) -> Frame:
    return Frame(stamp, synthetic.keypoints, torch.from_numpy(synthetic.descriptors))


def chained(sequence, start: int, end: int) -> np.ndarray:
    """Ground-truth homography from frame ``start`` to frame ``end`` (product of the steps)."""
    homography = np.eye(3)
    for index in range(start + 1, end + 1):
        homography = sequence[index].homography @ homography
    return homography


def test_previous_mode_always_replaces_the_reference():
    policy = KeyframePolicy(KeyframeConfig("previous"))
    assert all(policy.replace_reference(True, n) for n in (100, 100, 5))


def test_keyframe_mode_replaces_below_the_fraction_of_the_first_match():
    policy = KeyframePolicy(KeyframeConfig("keyframe", inlier_fraction=0.5))
    assert not policy.replace_reference(True, 200)  # first match of the keyframe: sets its count
    assert not policy.replace_reference(True, 101)
    assert not policy.replace_reference(True, 100)  # exactly half is not below
    assert policy.replace_reference(True, 99)
    assert not policy.replace_reference(True, 40)  # the new keyframe counts from its own first match
    assert policy.replace_reference(True, 19)


def test_keyframe_mode_resets_on_an_invalid_match():
    policy = KeyframePolicy(KeyframeConfig("keyframe", inlier_fraction=0.9))
    assert not policy.replace_reference(True, 300)
    assert policy.replace_reference(False, 0)
    assert not policy.replace_reference(True, 10)  # after the reset, 10 is the new keyframe's count


@pytest.mark.parametrize("method", ["ransac", "magsac"])
def test_match_recovers_the_known_homography(sequence, method):
    result = match_frames(frame(sequence[0], "a"), frame(sequence[1], "b"), MatchConfig(method=method))
    assert result.valid and result.reference_stamp == "a"
    assert corner_error(result.homography, sequence[1].homography, SIZE[::-1]) < 1.0
    assert result.num_matches >= result.num_inliers > 0.5 * len(sequence[1].keypoints)
    np.testing.assert_array_equal(result.reference_points, sequence[0].keypoints[result.reference_indices])
    np.testing.assert_array_equal(result.current_points, sequence[1].keypoints[result.current_indices])
    moved = (result.homography @ np.c_[result.reference_points, np.ones(result.num_inliers)].T).T
    assert np.abs(moved[:, :2] / moved[:, 2:] - result.current_points).max() < 3.0


def test_ratio_test_keeps_fewer_matches(sequence):
    plain = match_frames(frame(sequence[0], 0), frame(sequence[1], 1), MatchConfig())
    strict = match_frames(frame(sequence[0], 0), frame(sequence[1], 1), MatchConfig(ratio_test=0.7))
    assert 0 < strict.num_matches < plain.num_matches
    assert strict.valid


def test_too_few_inliers_is_invalid_with_counts(sequence):
    unrelated = synthetic_sequence(1, keypoints=300, dim=64, size=SIZE, seed=99)[0]
    result = match_frames(frame(sequence[0], 0), frame(unrelated, 1), MatchConfig(min_inliers=15))
    assert not result.valid and result.homography is None
    assert result.num_matches > 0 and result.num_inliers < 15


def test_different_descriptor_lengths_give_an_invalid_match(sequence):
    short = Frame(1, sequence[1].keypoints, torch.from_numpy(sequence[1].descriptors[:, :32].copy()))
    result = match_frames(frame(sequence[0], 0), short, MatchConfig())
    assert not result.valid and result.num_matches == 0 and result.num_inliers == 0


def test_tracker_previous_mode_matches_consecutive_frames(sequence):
    tracker = FrameTracker(MatchConfig(), KeyframeConfig("previous"))
    assert tracker.track(frame(sequence[0], 0)) is None
    for index in range(1, len(sequence)):
        result = tracker.track(frame(sequence[index], index))
        assert result.reference_stamp == index - 1
        assert corner_error(result.homography, sequence[index].homography, SIZE[::-1]) < 1.0


def test_tracker_keyframe_mode_holds_the_keyframe_until_inliers_drop(sequence):
    tracker = FrameTracker(MatchConfig(), KeyframeConfig("keyframe", inlier_fraction=0.6))
    tracker.track(frame(sequence[0], 0))
    references, inliers = [], []
    for index in range(1, len(sequence)):
        result = tracker.track(frame(sequence[index], index))
        references.append(result.reference_stamp)
        inliers.append(result.num_inliers)
        reference = result.reference_stamp
        assert corner_error(result.homography, chained(sequence, reference, index), SIZE[::-1]) < 1.5
    assert references[:2] == [0, 0]  # frame 2 still shares ~0.7^2 of frame 0's points: above 0.6 of the first match
    switch = next(i for i, r in enumerate(references) if r != 0)
    assert inliers[switch - 1] < 0.6 * inliers[0]  # the frame that fell below the fraction became the keyframe
    assert references[switch] == switch  # that frame (index switch, stamp switch) is the new reference


def test_tracker_reset_starts_a_new_track(sequence):
    tracker = FrameTracker()
    tracker.track(frame(sequence[0], 0))
    tracker.reset()
    assert tracker.track(frame(sequence[1], 1)) is None
    assert tracker.track(frame(sequence[2], 2)).reference_stamp == 1


def test_track_ids_never_repeat_and_inliers_inherit_the_reference_id(sequence):
    unrelated = synthetic_sequence(1, keypoints=300, dim=64, size=SIZE, seed=99)[0]
    frames = [frame(s, i) for i, s in enumerate(sequence[:4])] + [frame(unrelated, 4)] + [
        frame(s, i + 5) for i, s in enumerate(sequence[4:6])]  # 4 and 5 match unrelated frames: the track is lost
    tracker = FrameTracker(MatchConfig(), KeyframeConfig("previous"))
    tracker.track(frames[0])
    reference_ids = tracker.reference_track_ids
    seen = set(reference_ids.tolist())
    assert 0 not in seen and len(seen) == len(frames[0].keypoints)
    for current in frames[1:]:
        result = tracker.track(current)
        ids = result.current_track_ids
        assert ids.dtype == np.uint64 and len(ids) == len(current.keypoints) == len(set(ids.tolist()))
        inherited = np.zeros(len(ids), bool)
        if result.valid:
            np.testing.assert_array_equal(ids[result.current_indices], reference_ids[result.reference_indices])
            inherited[result.current_indices] = True
        assert result.valid == (current.stamp not in (4, 5))  # invalid: no inliers to inherit, all ids fresh
        assert not seen & set(ids[~inherited].tolist()) and 0 not in ids
        seen |= set(ids.tolist())
        reference_ids = ids
    tracker.reset()
    tracker.track(frames[1])
    assert not seen & set(tracker.reference_track_ids.tolist())  # a new track after a reset: fresh ids


def test_keyframe_mode_keeps_the_keyframe_ids(sequence):
    tracker = FrameTracker(MatchConfig(), KeyframeConfig("keyframe", inlier_fraction=0.6))
    tracker.track(frame(sequence[0], 0))
    keyframe_ids = {0: tracker.reference_track_ids}
    kept_by_all = set(keyframe_ids[0].tolist())
    for index in range(1, len(sequence)):
        result = tracker.track(frame(sequence[index], index))
        ids = result.current_track_ids
        np.testing.assert_array_equal(ids[result.current_indices],
                                      keyframe_ids[result.reference_stamp][result.reference_indices])
        if result.reference_stamp == 0:
            kept_by_all &= set(ids.tolist())
        if tracker.reference.stamp == index:
            keyframe_ids[index] = ids
    assert len(keyframe_ids) > 1  # the keyframe changed, and frames after the change inherited the new one's ids
    assert len(kept_by_all) > 50  # keyframe points followed with one id through every frame matched against it


def poisoned(synthetic, rows: dict[int, str]) -> Features:
    """The synthetic frame's Features with NaN or inf written into the keypoint ("keypoint"), descriptor
    ("descriptor") or score ("score") of the given rows."""
    features = synthetic.features(SIZE)
    features = Features(features.keypoints.copy(), features.scores.copy(), features.descriptors.copy(), SIZE)
    for row, where in rows.items():
        getattr(features, f"{where}s")[row] = np.nan if row % 2 else np.inf
    return features


def test_from_features_leaves_out_non_finite_keypoints_and_descriptors_but_not_scores(sequence):
    features = poisoned(sequence[0], {3: "keypoint", 8: "descriptor", 11: "score"})
    frame_ = Frame.from_features("a", features, "cpu")
    assert frame_.stamp == "a" and frame_.num_rows == 300 and frame_.dropped == 2 and len(frame_.keypoints) == 298
    assert 3 not in frame_.rows and 8 not in frame_.rows and 11 in frame_.rows
    np.testing.assert_array_equal(frame_.keypoints, features.keypoints[frame_.rows])
    np.testing.assert_array_equal(frame_.descriptors.numpy(), features.descriptors[frame_.rows])
    clean = Frame.from_features("b", sequence[0].features(SIZE), "cpu")
    assert clean.rows is None and clean.dropped == 0 and clean.num_rows == 300
    assert Frame(0, np.zeros((3, 2), np.float32), torch.zeros(3, 4)).num_rows == 3


def test_results_index_source_rows_and_rows_left_out_get_no_track(sequence):
    reference = poisoned(sequence[0], {row: "keypoint" for row in range(0, 40, 4)})
    current = poisoned(sequence[1], {row: "descriptor" for row in range(1, 60, 3)})
    tracker = FrameTracker()
    tracker.track(Frame.from_features(0, reference, "cpu"))
    reference_ids = tracker.reference_track_ids
    assert len(reference_ids) == 300 and (reference_ids[0:40:4] == 0).all() and np.count_nonzero(reference_ids) == 290
    result = tracker.track(Frame.from_features(1, current, "cpu"))
    assert result.valid and result.num_inliers > 100
    np.testing.assert_array_equal(result.reference_points, reference.keypoints[result.reference_indices])
    np.testing.assert_array_equal(result.current_points, current.keypoints[result.current_indices])
    assert not set(result.reference_indices.tolist()) & set(range(0, 40, 4))
    ids = result.current_track_ids
    assert ids.dtype == np.uint64 and len(ids) == 300 and (ids[1:60:3] == 0).all() and np.count_nonzero(ids) == 280
    np.testing.assert_array_equal(ids[result.current_indices], reference_ids[result.reference_indices])
    assert corner_error(result.homography, sequence[1].homography, SIZE[::-1]) < 1.0


def test_a_result_from_a_known_homography_has_no_matches():
    truth = np.diag([1.0, 1.0, 2.0])
    result = MatchResult.from_homography("a", truth)
    assert result.valid and result.reference_stamp == "a" and result.num_matches == result.num_inliers == 0
    np.testing.assert_array_equal(result.homography, truth)
    assert result.reference_indices.dtype == np.int64 and result.current_points.shape == (0, 2)
    assert not MatchResult.from_homography("b", None).valid


@pytest.mark.skipif(not BUNDLED_WEIGHTS.is_file(), reason=f"no trained weights at {BUNDLED_WEIGHTS}")
def test_tracks_on_the_virtual_camera_follow_the_ground_truth(real_photos, record_property):
    """Bundled detector + tracker over 10 virtual-camera frames: every point with the same id in all 10 sits
    where the exact homographies from frame 0 put it. Keyframe mode with a 1 px inlier threshold: in previous
    mode (or at 3 px) a track can step to a neighbouring point at each frame and drift a few pixels."""
    camera, detector = VirtualCamera(real_photos[0]), KeypointDetector.from_pretrained(None)
    tracker = FrameTracker(MatchConfig(reprojection_threshold=1.0), KeyframeConfig("keyframe"))
    positions = []  # per frame: {track id: (x, y)}
    for index in range(10):
        features = detector.detect(camera.render(index))[0]
        result = tracker.track(Frame.from_features(index, features, "cpu"))
        ids = tracker.reference_track_ids if result is None else result.current_track_ids
        positions.append(dict(zip(ids.tolist(), features.keypoints)))
    tracks = sorted(set.intersection(*(set(frame_positions) for frame_positions in positions)))
    record_property("tracks over 10 frames", len(tracks))
    assert len(tracks) >= 100  # 180 measured
    start = np.array([positions[0][track] for track in tracks], np.float64)
    errors = [np.linalg.norm(cv2.perspectiveTransform(start[None], camera.homography_between(0, index))[0]
                             - np.array([positions[index][track] for track in tracks]), axis=1)
              for index in range(1, 10)]
    record_property("max error px", float(np.max(errors)))
    assert np.max(errors) < 2.0  # 1.2 px measured


def test_configs_refuse_bad_values():
    with pytest.raises(ValueError, match="method"):
        MatchConfig(method="lmeds")
    with pytest.raises(ValueError, match="min_inliers"):
        MatchConfig(min_inliers=3)
    with pytest.raises(ValueError, match="ratio_test"):
        MatchConfig(ratio_test=1.5)
    with pytest.raises(ValueError, match="mode"):
        KeyframeConfig(mode="sometimes")
    for threshold in (0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="reprojection_threshold must be positive and finite"):
            MatchConfig(reprojection_threshold=threshold)


def test_track_trails_keep_the_last_positions_of_live_tracks_only():
    trails = TrackTrails(length=3)
    for step in range(5):  # track 7 moves right one pixel a frame; track 9 appears at step 3; 0 is no track
        ids = np.array([7, 0] + ([9] if step >= 3 else []), np.uint64)
        trails.update(ids, np.array([[step, 0.0], [np.nan, np.nan]] + ([[50.0, step]] if step >= 3 else [])))
    seven, nine, unknown = trails.trails(np.array([7, 9, 0], np.uint64))
    np.testing.assert_array_equal(seven, [[2, 0], [3, 0], [4, 0]])  # the last three, oldest first
    np.testing.assert_array_equal(nine, [[50, 3], [50, 4]])
    assert unknown.shape == (0, 2)
    trails.update(np.array([9], np.uint64), np.array([[50.0, 5.0]]))  # 7 missing from a frame: forgotten
    assert trails.trails(np.array([7], np.uint64))[0].shape == (0, 2)
    assert len(trails.trails(np.array([9], np.uint64))[0]) == 3

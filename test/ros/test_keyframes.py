"""Frame tracking without ROS: keyframe policy decisions, match results against known homographies."""
import numpy as np
import pytest
import torch

from usp_core.evaluation.metrics import corner_error
from usp_ros.bench_matcher import synthetic_sequence
from usp_ros.keyframes import Frame, FrameTracker, KeyframeConfig, KeyframePolicy, MatchConfig, match_frames

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


def test_configs_refuse_bad_values():
    with pytest.raises(ValueError, match="method"):
        MatchConfig(method="lmeds")
    with pytest.raises(ValueError, match="min_inliers"):
        MatchConfig(min_inliers=3)
    with pytest.raises(ValueError, match="ratio_test"):
        MatchConfig(ratio_test=1.5)
    with pytest.raises(ValueError, match="mode"):
        KeyframeConfig(mode="sometimes")

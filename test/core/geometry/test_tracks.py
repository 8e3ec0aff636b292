"""Track history for estimators: ids carried over, velocities per second, ages, forgotten tracks."""
import numpy as np

from usp_core.geometry.tracks import TrackHistory


def test_velocity_and_age_follow_the_ids():
    history = TrackHistory()
    first = history.update(10.0, [5, 0, 7], [[100, 50], [1, 1], [200, 80]], [[0.1, 0.2], [0, 0], [0.3, 0.4]])
    assert first.ids.tolist() == [5, 7] and first.age.tolist() == [1, 1]  # row 1 (id 0) has no track
    assert first.rows.tolist() == [0, 2]
    assert not first.velocity.any() and not first.pixel_velocity.any()  # first frame: no velocity
    second = history.update(10.1, [7, 9, 5], [[210, 80], [5, 5], [100, 40]], [[0.32, 0.4], [0, 0], [0.1, 0.18]])
    assert second.ids.tolist() == [7, 9, 5] and second.age.tolist() == [2, 1, 2]
    np.testing.assert_allclose(second.pixel_velocity, [[100, 0], [0, 0], [0, -100]], atol=1e-9)
    np.testing.assert_allclose(second.velocity, [[0.2, 0.0], [0, 0], [0.0, -0.2]], atol=1e-9)
    third = history.update(10.2, [9, 7], [[5, 5], [210, 80]])  # 5 missed this frame: forgotten
    assert third.age.tolist() == [2, 3] and np.isnan(third.normalised).all()
    fourth = history.update(10.3, [5], [[100, 40]])
    assert fourth.age.tolist() == [1]  # a track that missed a frame starts again


def test_seen_more_than_once_selects_continued_tracks():
    history = TrackHistory()
    history.update(0.0, np.arange(1, 6), np.zeros((5, 2)))
    points = history.update(0.05, np.array([3, 4, 11, 12]), np.ones((4, 2)))
    continued = points.take(points.age > 1)
    assert continued.ids.tolist() == [3, 4]
    np.testing.assert_allclose(continued.pixel_velocity, 20.0)

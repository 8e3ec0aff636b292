"""usp_core.support.drawing: keypoints coloured by score rank, capped and spread flow tracks, the caption band."""
import cv2
import numpy as np
import pytest

from usp_core.support.drawing import (BACKDROP_BRIGHTNESS, CAPTION_HEIGHT, KEYPOINT_LEVELS, MAX_TRACKS, TRACK_COLOUR,
                                      caption, draw_keypoints, draw_tracks, score_colours, score_ranks, spread_sample)

SIZE = (640, 480)


def uniform_tracks(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(count, 2) reference and current points over a 640x480 frame below the caption, moved by 4 to 8 px."""
    rng = np.random.default_rng(seed)
    current = rng.uniform((0, CAPTION_HEIGHT + 8), (SIZE[0] - 1, SIZE[1] - 1), (count, 2))
    return current - rng.uniform(4.0, 8.0, (count, 2)), current


def track_pixels(canvas: np.ndarray) -> np.ndarray:
    """(H, W) bool: where the tracks' green is (the backdrop is grey, so any strong green is a track)."""
    blue, green, red = (canvas[..., channel].astype(int) for channel in range(3))
    return (green - np.maximum(blue, red)) > 60


def test_score_colours_run_from_blue_to_red():
    colours = score_colours(np.array([0.95, 0.05]))
    assert colours.shape == (2, 3) and colours.dtype == np.uint8
    assert colours[0][2] > colours[0][0] and colours[1][0] > colours[1][2], "high scores red, low scores blue"


def test_score_ranks_share_ties_and_ignore_the_scale():
    np.testing.assert_allclose(score_ranks(np.array([0.99, 0.90, 0.95, 0.95, 0.91])), [1.0, 0.0, 0.625, 0.625, 0.25])
    np.testing.assert_allclose(score_ranks(np.array([0.9991, 0.9990])), [1.0, 0.0])
    assert score_ranks(np.array([0.3])).tolist() == [0.5] and len(score_ranks(np.zeros(0))) == 0


def test_keypoints_are_ringed_in_the_colour_of_their_rank_on_a_grey_backdrop():
    image = np.full((60, 80, 3), (200, 40, 40), np.uint8)  # strong blue, so any colour left would show
    drawn = draw_keypoints(image, np.array([[20.0, 30.0], [60.0, 30.0]]), np.array([0.9991, 0.9990]))
    assert drawn.shape == (60, 80, 3) and (image == (200, 40, 40)).all(), "the input is not modified"
    best, weakest = score_colours(np.array(KEYPOINT_LEVELS[::-1]))
    high, low = drawn[30, 17], drawn[30, 57]  # on each circle (radius 3)
    assert np.abs(high.astype(int) - best).max() < 60 and np.abs(low.astype(int) - weakest).max() < 60
    assert high[2] > high[0] and low[0] > low[2], "the better of two close scores red, the other blue"
    backdrop = drawn[5, 5]
    assert backdrop[0] == backdrop[1] == backdrop[2] <= BACKDROP_BRIGHTNESS * 255, "the frame is dimmed grey"
    grey = draw_keypoints(np.full((60, 80), 100, np.uint8), np.zeros((0, 2)), np.zeros(0))
    assert grey.shape == (60, 80, 3) and (grey == round(100 * BACKDROP_BRIGHTNESS)).all()


def test_spread_sample_caps_the_count_and_reaches_every_part_of_the_image():
    _, points = uniform_tracks(700)
    chosen = spread_sample(points, SIZE, 150)
    assert 0.8 * 150 <= len(chosen) <= 150 and (np.diff(chosen) > 0).all()
    cluster = np.random.default_rng(1).uniform(0, 50, (600, 2))
    far = np.array([[600.0, 450.0], [600.0, 40.0], [40.0, 450.0], [320.0, 240.0]])
    chosen = spread_sample(np.concatenate([cluster, far]), SIZE, 150)
    assert set(range(600, 604)) <= set(chosen.tolist()), "a few points far from a dense cluster are all drawn"
    assert len(chosen) < 20, "the cluster gives one point per cell"
    np.testing.assert_array_equal(spread_sample(far, SIZE, 150), np.arange(4))
    assert len(spread_sample(points, SIZE, 0)) == 0


def drawn_dots(canvas: np.ndarray) -> int:
    """Separate green marks: one per track when the tracks have not moved (a dot without a line)."""
    return cv2.connectedComponents(track_pixels(canvas).astype(np.uint8), connectivity=8)[0] - 1


def test_draw_tracks_draws_a_capped_spread_sample_of_700_inliers():
    reference, current = uniform_tracks(700)
    frame = np.full((SIZE[1], SIZE[0]), 128, np.uint8)
    canvas = draw_tracks(frame, np.stack([reference, current], axis=1), "valid | inliers 700")
    assert canvas.shape == (SIZE[1], SIZE[0], 3) and (frame == 128).all()
    rows = (SIZE[1] - CAPTION_HEIGHT) // 8
    green = track_pixels(canvas)[CAPTION_HEIGHT:CAPTION_HEIGHT + 8 * rows]
    assert green.reshape(8, rows, 8, SIZE[0] // 8).any(axis=(1, 3)).all(), "every cell of an 8x8 grid has tracks"
    assert 100 <= drawn_dots(draw_tracks(frame, current[:, None], "")) <= MAX_TRACKS
    assert drawn_dots(draw_tracks(frame, current[:, None], "", max_tracks=20)) <= 20
    assert drawn_dots(draw_tracks(frame, current[:30, None], "")) >= 28, "few inliers: all drawn"


def test_a_track_runs_through_its_positions_to_a_dot_at_the_current_one():
    frame = np.full((120, 160, 3), (30, 30, 200), np.uint8)  # red: the backdrop turns it grey
    canvas = draw_tracks(frame, [np.array([[20.0, 80.0], [60.0, 80.0], [100.0, 80.0]])], "")
    green = track_pixels(canvas)
    assert green[80, 20:101].all(), "the line runs from the reference point to the current one"
    assert green[77:84, 98:103].sum() > green[77:84, 58:63].sum(), "a dot marks the current end"
    assert not green[:70].any() and not green[90:].any()
    assert np.abs(canvas[80, 40].astype(int) - TRACK_COLOUR).max() < 20
    bent = track_pixels(draw_tracks(frame, [np.array([[20.0, 40.0], [60.0, 80.0], [100.0, 40.0]])], ""))
    assert bent[80, 58:63].any() and bent[40, 20].any() and not bent[80, 20:40].any(), "through the middle position"
    with pytest.raises(ValueError, match="at least its current position"):
        draw_tracks(frame, [np.zeros((0, 2))], "")


def test_caption_writes_white_text_on_a_dark_band_in_place():
    canvas = np.full((100, 300, 3), 230, np.uint8)
    assert caption(canvas, "inliers 714 / matches 742") is canvas
    band = canvas[:CAPTION_HEIGHT]
    text = (band == 255).all(axis=2)
    assert np.median(band) < 80 and 30 < text.sum(), "white text on a dark band"
    assert text[:, :150].any() and not text[:, 250:].any(), "the text starts at the left"
    assert (canvas[CAPTION_HEIGHT:] == 230).all(), "the rest of the image is untouched"
    tracks = draw_tracks(np.full((100, 300), 230, np.uint8), [], "nothing matched")
    assert np.median(tracks[:CAPTION_HEIGHT]) < 80 and (tracks[:CAPTION_HEIGHT] > 200).any()

"""Keyframe mode and track ids with every geometry model (usp_core.geometry.tracking over usp_core.geometry)."""
import cv2
import numpy as np
import pytest
import torch

from usp_core.geometry.camera import CameraModel
from usp_core.geometry.tracking import Frame, FrameTracker, KeyframeConfig, MatchConfig

CAMERA = CameraModel(640, 480, [[500.0, 0, 320.0], [0, 500.0, 240.0], [0, 0, 1]], [0.1, -0.2, 0.001, 0.0, 0.05])


def frames(count: int = 3, points: int = 600, seed: int = 0) -> list[Frame]:
    """A camera moving sideways and turning past a random 3D scene: one Frame per view, rows shuffled per frame,
    descriptors of a point equal up to noise."""
    rng = np.random.default_rng(seed)
    world = rng.uniform([-4, -3, 5], [4, 3, 12], (points, 3))
    descriptors = rng.standard_normal((points, 64)).astype(np.float32)
    views = []
    for index in range(count):
        rotation = cv2.Rodrigues(np.radians([0.0, 2.0 * index, 0.5 * index]))[0]
        camera_points = world @ rotation.T + np.array([-0.3 * index, 0.0, 0.0])
        pixels = CAMERA.project(camera_points) + rng.normal(0, 0.3, (points, 2))
        order = rng.permutation(points)
        noisy = descriptors + 0.1 * rng.standard_normal(descriptors.shape).astype(np.float32)
        views.append((pixels[order].astype(np.float32), torch.from_numpy(noisy[order]), order))
    return [Frame(i, p, d, camera=CAMERA) for i, (p, d, _) in enumerate(views)], [o for *_, o in views]


@pytest.mark.parametrize("model", ["homography", "essential", "fundamental", "auto"])
@pytest.mark.parametrize("mode", ["previous", "keyframe"])
def test_track_ids_follow_the_points_with_every_model(model, mode):
    sequence, orders = frames()
    tracker = FrameTracker(MatchConfig(reprojection_threshold=1.0, model=model), KeyframeConfig(mode, 0.1))
    assert tracker.track(sequence[0]) is None
    world_id = dict(zip(orders[0].tolist(), tracker.reference_track_ids.tolist()))  # scene point -> id in the reference
    for index in (1, 2):
        result = tracker.track(sequence[index])
        assert result.model in ("homography", "essential", "fundamental")
        if model == "homography":
            continue  # a 3D scene: the homography's inliers are few, tracks mostly restart
        assert result.valid and result.num_inliers > 400
        if model in ("essential", "auto"):
            assert result.rotation is not None
        # inliers carry the id the same scene point has in the reference frame (the keyframe, or the previous frame)
        kept = result.current_indices
        same = [world_id[orders[index][row]] == result.current_track_ids[row] for row in kept.tolist()]
        assert np.mean(same) > 0.98
        assert result.reference_stamp == (0 if mode == "keyframe" else index - 1)
        if mode == "previous":
            world_id = dict(zip(orders[index].tolist(), result.current_track_ids.tolist()))

"""Relative-pose evaluation: ground-truth loading (TUM nearest stamp, KITTI lines), motion, AUC (usp-eval-pose's
command line: test/core/cli/test_eval_pose_cli.py)."""
import cv2
import numpy as np
import pytest

from usp_core.evaluation.pose import PoseDataError, load_pose_sequence, pose_auc, relative_motion

CAMERA = "width: 64\nheight: 48\nfx: 50\nfy: 50\ncx: 32\ncy: 24\ndistortion_model: plumb_bob\ndistortion: []\n"


def pose(rotvec, position) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = cv2.Rodrigues(np.asarray(rotvec, np.float64).reshape(3, 1))[0]
    matrix[:3, 3] = position
    return matrix


def write_frames(folder, names):
    folder.mkdir(exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / name), np.zeros((48, 64), np.uint8))
    (folder / "camera.yaml").write_text(CAMERA)


def test_relative_motion_maps_points_of_camera_i_into_camera_j():
    pose_i, pose_j = pose([0.1, -0.2, 0.05], [1.0, 2.0, 0.5]), pose([-0.1, 0.3, 0.0], [0.5, 2.5, 1.0])
    world = np.array([0.3, -0.4, 5.0])
    in_i = np.linalg.inv(pose_i) @ np.append(world, 1.0)
    in_j = np.linalg.inv(pose_j) @ np.append(world, 1.0)
    rotation, translation = relative_motion(pose_i, pose_j)
    np.testing.assert_allclose(rotation @ in_i[:3] + translation, in_j[:3], atol=1e-12)


def test_pose_auc_integrates_the_recall_curve():
    # recall steps 0.25 at errors 1, 2, 3, 4: area up to 5 = 0.125 + 0.375 + 0.625 + 0.875 + 1 = 3.0 -> 0.6
    assert pose_auc([4.0, 1.0, 3.0, 2.0], (5.0,))[0] == pytest.approx(0.6)
    assert pose_auc([0.0, np.inf], (5.0, 10.0)) == pytest.approx([0.5, 0.5])  # a failed pair never counts
    assert pose_auc([2.0], (1.0,))[0] == 0.0


def test_tum_frames_take_the_nearest_ground_truth_line(tmp_path):
    folder = tmp_path / "tum"
    write_frames(folder, ["100.000000.png", "100.100000.png"])
    lines = ["# timestamp tx ty tz qx qy qz qw",
             "99.990 0 0 0 0 0 0 1", "100.004 1 0 0 0 0 0 1", "100.095 2 0 0 0 0 0 1", "100.102 3 0 0 0 0 0 1"]
    (folder / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    sequence = load_pose_sequence(folder)
    assert sequence.poses[:, 0, 3].tolist() == [1.0, 3.0]  # nearest, before or after: 100.004 and 100.102
    (folder / "groundtruth.txt").write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(PoseDataError, match="no ground truth within"):
        load_pose_sequence(folder)
    for bad, problem in (("100.004 1 0 0 0 0 0 0", "zero quaternion"), ("100.004 1 0 0 nan 0 0 1", "NaN or inf")):
        (folder / "groundtruth.txt").write_text("\n".join([*lines[:2], bad, lines[3], lines[4]]) + "\n")
        with pytest.raises(PoseDataError, match=problem):
            load_pose_sequence(folder)
    (folder / "groundtruth.txt").write_bytes("# ground truth\n".encode("utf-16"))
    with pytest.raises(PoseDataError, match="not UTF-8"):
        load_pose_sequence(folder)


def test_kitti_lines_are_frames_in_order(tmp_path):
    folder = tmp_path / "kitti"
    write_frames(folder, ["000007.png", "000008.png"])
    rows = [pose([0, 0.1 * n, 0], [0, 0, n])[:3].ravel() for n in range(3)]
    (folder / "poses.txt").write_text("# comment\n" + "\n".join(" ".join(map(str, r)) for r in rows) + "\n")
    sequence = load_pose_sequence(folder)
    np.testing.assert_allclose(sequence.poses[1], pose([0, 0.1, 0], [0, 0, 1]))
    (folder / "poses.txt").write_text("1 2 3\n")
    with pytest.raises(PoseDataError, match="3 values, expected 12"):
        load_pose_sequence(folder)
    (folder / "poses.txt").write_text("\n".join(["0 " * 12, *(" ".join(map(str, r)) for r in rows[1:])]) + "\n")
    with pytest.raises(PoseDataError, match="pose 1 is not a rotation"):
        load_pose_sequence(folder)


def test_shared_sequences_ground_truth(shared_data):
    tum = load_pose_sequence(shared_data / "sequences" / "tum_fr2")
    kitti = load_pose_sequence(shared_data / "sequences" / "kitti_odometry")
    assert len(tum.frames) == len(kitti.frames) == 20
    steps = [np.linalg.norm(relative_motion(tum.poses[i], tum.poses[i + 1])[1]) for i in range(19)]
    assert 0.003 < np.median(steps) < 0.05  # the README's ~1.5 cm a frame
    rotation, translation = relative_motion(kitti.poses[0], kitti.poses[1])
    assert translation[2] < -0.2 and abs(translation[2]) > 5 * np.abs(translation[:2]).max()  # the car drives along z

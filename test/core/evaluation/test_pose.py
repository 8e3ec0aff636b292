"""Relative-pose evaluation: ground-truth loading (TUM nearest stamp, KITTI lines), motion, AUC; usp-eval-pose end
to end on the shared sequences (skipped without ../shared/data)."""
import json

import cv2
import numpy as np
import pytest

from usp_core.cli.eval_pose import main
from usp_core.evaluation.pose import PoseDataError, load_pose_sequence, pose_auc, relative_motion
from usp_core.geometry.rotation import quaternion_to_rotation, rotation_to_quaternion

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


def test_quaternion_matches_rodrigues():
    axis, angle = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5]), 0.7
    qx, qy, qz = axis * np.sin(angle / 2)
    np.testing.assert_allclose(quaternion_to_rotation(qx, qy, qz, np.cos(angle / 2)),
                               cv2.Rodrigues(axis * angle)[0], atol=1e-12)
    np.testing.assert_allclose(rotation_to_quaternion(cv2.Rodrigues(axis * angle)[0]), [qx, qy, qz, np.cos(angle / 2)],
                               atol=1e-12)


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


def test_shared_sequences_ground_truth(shared_data):
    tum = load_pose_sequence(shared_data / "sequences" / "tum_fr2")
    kitti = load_pose_sequence(shared_data / "sequences" / "kitti_odometry")
    assert len(tum.frames) == len(kitti.frames) == 20
    steps = [np.linalg.norm(relative_motion(tum.poses[i], tum.poses[i + 1])[1]) for i in range(19)]
    assert 0.003 < np.median(steps) < 0.05  # the README's ~1.5 cm a frame
    rotation, translation = relative_motion(kitti.poses[0], kitti.poses[1])
    assert translation[2] < -0.2 and abs(translation[2]) > 5 * np.abs(translation[:2]).max()  # the car drives along z


@pytest.mark.parametrize("argv, fragment", [
    (["/nonexistent/seq"], "is not a folder"),
    (["{tmp}", "--gaps", "0,2"], "bad --gaps"),
    (["{tmp}"], "neither groundtruth.txt"),
    (["{tmp}", "--methods", "nope"], "unknown method"),
    (["{tmp}", "--threshold", "-1"], "threshold must be positive"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, one_error_line, argv, fragment):
    write_frames(tmp_path, ["1.png", "2.png"])
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    one_error_line("usp-eval-pose", fragment)


def test_sift_on_kitti_end_to_end(shared_data, tmp_path, capsys):
    """Eight KITTI frames, gap 3, SIFT: the rotation of every pair within a degree, the JSON has every pair."""
    source, folder = shared_data / "sequences" / "kitti_odometry", tmp_path / "kitti8"
    folder.mkdir()
    for path in sorted(source.glob("*.png"))[:8]:
        (folder / path.name).symlink_to(path)
    for name in ("camera.yaml", "poses.txt"):
        (folder / name).symlink_to(source / name)
    out = tmp_path / "pose.json"
    assert main([str(folder), "--methods", "sift", "--gaps", "3", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| kitti8" in table and "AUC@10" in table
    summary = json.loads(out.read_text())["methods"]["kitti8/gap3/sift"]
    assert summary["pairs"] == 5 and summary["failed"] == 0
    assert all(rotation < 1.0 for _, _, rotation, *_ in summary["pair_errors"])
    assert summary["median_inliers"] > 100 and summary["auc"]["20"] > 50.0

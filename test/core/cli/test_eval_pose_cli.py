"""usp-eval-pose end to end: bad input exits 2 with one line; SIFT on eight KITTI frames (skipped without
../shared/data)."""
import json

import cv2
import numpy as np
import pytest

from usp_core.cli.eval_pose import main

CAMERA = "width: 64\nheight: 48\nfx: 50\nfy: 50\ncx: 32\ncy: 24\ndistortion_model: plumb_bob\ndistortion: []\n"


@pytest.mark.parametrize("argv, fragment", [
    (["/nonexistent/seq"], "is not a folder"),
    (["{tmp}", "--gaps", "0,2"], "bad --gaps"),
    (["{tmp}"], "neither groundtruth.txt"),
    (["{tmp}", "--methods", "nope"], "unknown method"),
    (["{tmp}", "--threshold", "-1"], "threshold must be positive"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, one_error_line, argv, fragment):
    for name in ("1.png", "2.png"):  # two black frames and a camera for the cases that name {tmp}
        cv2.imwrite(str(tmp_path / name), np.zeros((48, 64), np.uint8))
    (tmp_path / "camera.yaml").write_text(CAMERA)
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

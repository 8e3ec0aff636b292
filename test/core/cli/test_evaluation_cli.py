"""usp-eval end to end: bad input exits 2 with one line; a real pair gives the JSON, plot and pictures."""
import json

import cv2
import numpy as np
import pytest
import torch

from usp_core.cli.eval import build_parser, main
from usp_core.evaluation.methods import available_methods
from usp_core.models.build import build_model
from usp_core.models.layers import ModelConfig
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_core.support.checkpoint import save_checkpoint

METRIC_KEYS = {
    "repeatability", "localization_error", "homography_accuracy", "matching_score", "matching_score_mutual",
    "keypoints_per_image", "ms_per_image",
}
SMALL_MODEL = {"widths": [8, 8, 8, 8, 16, 16, 16, 16], "descriptor_dim": 16}  # fast random network


@pytest.fixture
def real_pair(shared_data, tmp_path):
    """A one-pair sequence (Oxford wall 1-2: images of different sizes) linked into tmp_path."""
    source = shared_data / "eval" / "oxford" / "wall"
    folder = tmp_path / "wall"
    folder.mkdir()
    for name in ("1.png", "2.png", "H_1_2"):
        (folder / name).symlink_to(source / name)
    return folder


@pytest.fixture
def random_checkpoint(tmp_path):
    """A randomly initialised small UnsuperPoint checkpoint in the agreed format."""
    torch.manual_seed(0)
    model = UnsuperPoint(ModelConfig(**SMALL_MODEL))
    state = {"model": model.state_dict(), "config": {"model": dict(SMALL_MODEL)}}
    return save_checkpoint(tmp_path / "random.pt", state)


@pytest.fixture
def synthetic_sequence(tmp_path):
    """A one-pair sequence of a random texture and its identity homography."""
    seq = tmp_path / "seq"
    seq.mkdir()
    image = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (96, 128), dtype=np.uint8), (3, 3), 0)
    cv2.imwrite(str(seq / "1.png"), image)
    cv2.imwrite(str(seq / "2.png"), image)
    np.savetxt(seq / "H_1_2", np.eye(3))
    return seq


def run_main(capsys, argv):
    """Exit status, stdout and stderr lines of one usp-eval call."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "case,extra,message",
    [
        ("missing", [], "does not exist"),
        ("empty", [], "no sequences"),
        ("no_image_2", [], "no_image_2/2.png"),
        ("seq", ["--methods", "orb,nope"], "unknown method"),
        ("seq", ["--resolution", "240by320"], "bad resolution"),
        ("seq", ["--top-k", "0"], "top-k"),
        ("seq", ["--top-k", "many"], "invalid int"),
        ("seq", ["--methods", "usp", "--weights", "{tmp}/absent.pt"], "absent.pt"),
        ("seq", ["--methods", "usp", "--weights", "{tmp}/garbage.pt"], "garbage.pt"),
        ("seq", ["--methods", "usp", "--backend", "tensorrt"], "invalid choice: 'tensorrt'"),
        ("seq", ["--methods", "usp", "--nms-radius", "-1"], "nms_radius must be"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, synthetic_sequence, capsys, case, extra, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_image_2").mkdir()
    for name in ("1.png", "H_1_2"):
        (tmp_path / "no_image_2" / name).symlink_to(synthetic_sequence / name)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    status, out, err = run_main(capsys, [tmp_path / case, *(e.format(tmp=tmp_path) for e in extra)])
    assert status == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("usp-eval: error:") and message in err[0]


def test_whole_command_on_a_real_pair(real_pair, random_checkpoint, tmp_path, capsys):
    json_path, plot_path, pictures = tmp_path / "out" / "eval.json", tmp_path / "out" / "eval.png", tmp_path / "pics"
    status, out, _ = run_main(capsys, [
        real_pair, "--methods", "orb,sift,akaze,brisk,usp", "--weights", random_checkpoint, "--resolution", "240x320",
        "--top-k", "200", "--device", "cpu", "--json", json_path, "--plot", plot_path, "--visualize", pictures,
    ])
    assert status == 0
    assert all(f"| {name}" in out for name in ("orb", "sift", "akaze", "brisk", "usp"))
    assert "| M-score | M-score mutual |" in out

    results = json.loads(json_path.read_text())
    assert list(results["methods"]) == ["orb", "sift", "akaze", "brisk", "usp"]
    for name, summary in results["methods"].items():
        assert set(summary) == METRIC_KEYS | {"sequences"}
        assert set(summary["homography_accuracy"]) == {"1", "3", "5"}
        assert list(summary["sequences"]) == ["wall"]
        assert set(summary["sequences"]["wall"]) == METRIC_KEYS
        assert 0 < summary["keypoints_per_image"] <= 200 and summary["ms_per_image"] > 0
        for key in ("repeatability", "matching_score", "matching_score_mutual"):
            assert 0.0 <= summary[key] <= 1.0
    for name in ("orb", "sift", "akaze", "brisk"):  # wall 1-2 is an easy pair: every baseline finds the homography
        assert results["methods"][name]["homography_accuracy"]["5"] == 1.0
        assert results["methods"][name]["repeatability"] > 0.4
    assert results["settings"]["resolution"] == [240, 320] and results["settings"]["top_k"] == 200

    plot = cv2.imread(str(plot_path))
    assert plot is not None and plot.shape[0] > 400 and plot.shape[1] > 600
    assert sorted(p.name for p in pictures.iterdir()) == [
        f"{name}_wall_1-2.png" for name in ("akaze", "brisk", "orb", "sift", "usp")]
    assert not list(json_path.parent.glob(".*.tmp"))


def test_nms_radius_thins_usp_points_and_is_recorded(synthetic_sequence, random_checkpoint, tmp_path, capsys):
    counts = {}
    for radius in (0, 12):
        path = tmp_path / f"nms{radius}.json"
        status, _, _ = run_main(capsys, [synthetic_sequence, "--methods", "usp", "--weights", random_checkpoint,
                                         "--backend", "torch", "--resolution", "96x128", "--top-k", "150",
                                         "--nms-radius", radius, "--json", path])
        results = json.loads(path.read_text())
        assert status == 0 and results["settings"]["nms_radius"] == radius
        counts[radius] = results["methods"]["usp"]["keypoints_per_image"]
    assert counts[0] == 150 and counts[12] < 100  # 12 px apart: at most about one point per 12x12 block


def test_methods_default_to_every_available_one_but_test_time_adaptation():
    assert build_parser().parse_args(["data"]).methods.split(",") == [
        name for name in available_methods() if name != "superpoint-ha"]
    assert {"usp", "orb", "sift", "akaze", "brisk"} <= set(available_methods())  # setup.py installs opencv-contrib


def test_usp_without_bundled_weights_exits_2_while_baselines_run(synthetic_sequence, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("usp_core.inference.weights.BUNDLED_WEIGHTS", tmp_path / "no_weights" / "unsuperpoint.pt")
    status, out, err = run_main(capsys, [synthetic_sequence, "--methods", "usp"])
    assert status == 2 and out == "" and len(err) == 1 and "unsuperpoint.pt" in err[0]
    status, out, _ = run_main(capsys, [synthetic_sequence, "--methods", "orb", "--top-k", "100"])
    assert status == 0 and "| orb" in out


@pytest.fixture
def random_superpoint(tmp_path):
    """A randomly initialised small SuperPoint checkpoint."""
    torch.manual_seed(0)
    section = {**SMALL_MODEL, "architecture": "superpoint"}
    state = {"model": build_model(ModelConfig(**section)).state_dict(), "config": {"model": section}}
    return save_checkpoint(tmp_path / "superpoint.pt", state)


def test_superpoint_with_and_without_test_time_adaptation_in_one_run(synthetic_sequence, random_superpoint,
                                                                     random_checkpoint, tmp_path, capsys):
    path = tmp_path / "eval.json"
    status, out, _ = run_main(capsys, [synthetic_sequence, "--methods", "usp,superpoint,superpoint-ha",
                                       "--weights", random_checkpoint, "--superpoint-weights", random_superpoint,
                                       "--adaptation-warps", 3, "--top-k", 50, "--device", "cpu", "--json", path])
    results = json.loads(path.read_text())
    assert status == 0 and all(f"| {name} " in out for name in ("usp", "superpoint", "superpoint-ha"))
    assert results["settings"]["weights"] == {"usp": str(random_checkpoint), "superpoint": str(random_superpoint),
                                              "superpoint-ha": str(random_superpoint)}
    assert results["settings"]["adaptation_warps"] == 3
    for name in ("superpoint", "superpoint-ha"):  # identical images: every point repeats
        assert 0 < results["methods"][name]["keypoints_per_image"] <= 50
        assert results["methods"][name]["repeatability"] == 1.0


def test_superpoint_ha_refuses_an_unsuperpoint_checkpoint(synthetic_sequence, random_checkpoint, capsys):
    status, out, err = run_main(capsys, [synthetic_sequence, "--methods", "superpoint-ha",
                                         "--superpoint-weights", random_checkpoint])
    assert status == 2 and out == "" and len(err) == 1 and "architecture unsuperpoint, this needs superpoint" in err[0]

"""usp-label end to end on tiny photos with a tiny random SuperPoint: label files, resume, settings, errors."""
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from usp_core.cli import label
from usp_core.models.build import build_model
from usp_core.models.layers import ModelConfig
from usp_core.models.superpoint import heatmap_points
from usp_core.support.checkpoint import save_checkpoint
from usp_core.training.superpoint_data import label_path, read_labels

TINY = {"widths": (4, 4, 8, 8, 8, 8, 16, 16), "descriptor_dim": 8}
PHOTO_SIZES = {"a.png": (40, 56), "b.jpg": (37, 45), "sub/c.png": (30, 36)}  # (H, W): none a multiple of 8 but 40
FAST = ["--warps", "3", "--short-side", "24", "--threshold", "0", "--max-points", "40", "--device", "cpu"]


def _checkpoint(path: Path, architecture: str) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture=architecture, **TINY))
    save_checkpoint(path, {"model": model.state_dict(), "config": {"model": dataclasses.asdict(model.config)}})
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("label_inputs")
    photos = root / "photos"
    rng = np.random.default_rng(0)
    for name, size in PHOTO_SIZES.items():
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        image = cv2.GaussianBlur(rng.random(size).astype(np.float32), (0, 0), 1.5)
        cv2.imwrite(str(photos / name), (image * 255 / image.max()).astype(np.uint8))
    return {"photos": photos, "superpoint": _checkpoint(root / "superpoint.pt", "superpoint"),
            "unsuperpoint": _checkpoint(root / "unsuperpoint.pt", "unsuperpoint")}


def _run(inputs, out: Path, *extra: str, weights: str = "superpoint") -> int:
    return label.main(["--weights", str(inputs[weights]), "--data", str(inputs["photos"]), "--out", str(out),
                       *FAST, *extra])


def _label_files(inputs, out: Path) -> dict[str, Path]:
    return {name: label_path(out, inputs["photos"], inputs["photos"] / name) for name in PHOTO_SIZES}


def test_labels_every_photo_then_a_rerun_skips_them(inputs, tmp_path, capsys):
    out = tmp_path / "labels"
    assert _run(inputs, out) == 0
    assert "labelled 3 photos, skipped 0" in capsys.readouterr().out
    files = _label_files(inputs, out)
    assert files["sub/c.png"] == out / "sub" / "c.png.npz"
    for name, path in files.items():
        points = read_labels(path)
        height, width = PHOTO_SIZES[name]
        assert 0 < len(points) <= 40
        assert (points >= 0).all() and (points[:, 0] <= width - 1).all() and (points[:, 1] <= height - 1).all()
        with np.load(path) as data:
            assert data["scores"].shape == (len(points),) and data["scores"].dtype == np.float32
            assert (np.diff(data["scores"]) <= 0).all()  # best first
            assert data["image_size"].tolist() == [height, width] and int(data["warps"]) == 3
            assert min(data["label_size"]) == 24
    settings = json.loads((out / "labels.json").read_text())
    assert settings["weights_sha256"] == hashlib.sha256(inputs["superpoint"].read_bytes()).hexdigest()
    assert settings["warps"] == 3 and settings["short_side"] == 24 and settings["seed"] == 0

    stamps = {name: path.stat().st_mtime_ns for name, path in files.items()}
    assert _run(inputs, out) == 0
    assert "labelled 0 photos, skipped 3" in capsys.readouterr().out
    assert stamps == {name: path.stat().st_mtime_ns for name, path in files.items()}


def test_labels_are_reproducible_and_a_truncated_file_is_rewritten(inputs, tmp_path, capsys):
    out, twin = tmp_path / "labels", tmp_path / "twin"
    assert _run(inputs, out) == 0 and _run(inputs, twin) == 0
    files, twins = _label_files(inputs, out), _label_files(inputs, twin)
    for name in PHOTO_SIZES:
        assert np.array_equal(read_labels(files[name]), read_labels(twins[name]))
    whole = files["b.jpg"].read_bytes()
    files["b.jpg"].write_bytes(whole[: len(whole) // 2])
    stale = out / ".a.png.npz.abcd1234.tmp"  # what a killed write leaves behind
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    capsys.readouterr()
    assert _run(inputs, out) == 0
    assert "labelled 1 photos, skipped 2" in capsys.readouterr().out
    assert np.array_equal(read_labels(files["b.jpg"]), read_labels(twins["b.jpg"]))
    assert not stale.exists()


def test_one_warp_at_native_size_gives_the_networks_own_points(inputs, tmp_path):
    out = tmp_path / "labels"
    assert _run(inputs, out, "--warps", "1", "--short-side", "0") == 0
    model = build_model(ModelConfig(architecture="superpoint", **TINY))
    model.load_state_dict(torch.load(inputs["superpoint"], weights_only=True)["model"])
    grey = cv2.imread(str(inputs["photos"] / "a.png"), cv2.IMREAD_GRAYSCALE)  # 40 x 56: no resizing, no padding
    with torch.no_grad():
        heatmap = model.eval().heatmap(torch.from_numpy(grey).float().div(255.0)[None, None])[0, 0]
    points, scores = heatmap_points(heatmap, radius=4, threshold=0.0, max_points=40, border=4)
    with np.load(_label_files(inputs, out)["a.png"]) as data:
        assert np.array_equal(data["points"], points) and np.allclose(data["scores"], scores)


def test_other_settings_are_refused_unless_forced(inputs, tmp_path, capsys, one_error_line):
    out = tmp_path / "labels"
    assert _run(inputs, out) == 0
    capsys.readouterr()
    assert _run(inputs, out, "--seed", "7") == 2
    one_error_line("usp-label", "other settings", "seed 0 -> 7", "--force")
    assert _run(inputs, out, "--seed", "7", "--force") == 0
    assert "labelled 3 photos, skipped 0" in capsys.readouterr().out
    assert json.loads((out / "labels.json").read_text())["seed"] == 7
    assert _run(inputs, out, "--seed", "7") == 0  # the forced settings are now the folder's
    assert "labelled 0 photos, skipped 3" in capsys.readouterr().out


def test_an_interrupted_run_keeps_whole_files_and_resumes(inputs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "labels"
    real, calls = label.label_photo, []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(label, "label_photo", interrupt_second)
    assert _run(inputs, out) == 130
    assert "interrupted after labelling 1 photos" in capsys.readouterr().err
    written = [path for path in _label_files(inputs, out).values() if path.exists()]
    assert len(written) == 1 and len(read_labels(written[0])) > 0
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(label, "label_photo", real)
    assert _run(inputs, out) == 0
    assert "labelled 2 photos, skipped 1" in capsys.readouterr().out


def test_an_unsuperpoint_checkpoint_is_refused(inputs, tmp_path, one_error_line):
    assert _run(inputs, tmp_path / "labels", weights="unsuperpoint") == 2
    one_error_line("usp-label", "architecture unsuperpoint", "this needs superpoint")
    assert not (tmp_path / "labels" / "labels.json").exists()


@pytest.mark.parametrize("change, fragment", [
    ({"--data": "missing"}, "does not exist"),
    ({"--data": "empty"}, "no readable images"),
    ({"--weights": "missing.pt"}, "no such file"),
    ({"--weights": "garbage.pt"}, "not a checkpoint"),
    ({"--warps": "0"}, "--warps"),
    ({"--short-side": "5"}, "--short-side"),
    ({"--threshold": "nan"}, "--threshold"),
    ({"--max-points": "-1"}, "--max-points"),
    ({"--device": "tpu"}, "device"),
    ({"--warps": "many"}, "invalid int value"),
])
def test_bad_input_is_one_line_and_exit_status_2(inputs, tmp_path, change, fragment, one_error_line):
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    argv = {"--weights": str(inputs["superpoint"]), "--data": str(inputs["photos"]),
            "--out": str(tmp_path / "labels"), "--warps": "3", "--device": "cpu"}
    argv.update({key: str(tmp_path / value) if key in ("--data", "--weights") else value
                 for key, value in change.items()})
    try:
        status = label.main([item for pair in argv.items() for item in pair])
    except SystemExit as exit_:  # argparse's own errors exit
        status = exit_.code
    assert status == 2
    one_error_line("usp-label", fragment)


def test_prepare_resizes_pads_and_maps_points_back_to_the_stored_photo():
    photo = np.random.default_rng(0).integers(1, 256, (48, 70), dtype=np.uint8)
    image, size, scale = label.prepare(photo, 24)  # shrink by 2: 24 x 35, padded to 24 x 40
    assert image.shape == (1, 24, 40) and size == (24, 35) and scale == (35 / 70, 24 / 48)
    pixels = image[0].numpy()
    assert np.array_equal(pixels[:, 35:], pixels[:, 33:28:-1])  # reflected at the last column: no black edge
    # The photo's pixel (30, 20) sits at resized (14.75, 9.75); a detection there maps back exactly.
    mapped = label.to_photo(np.array([[14.75, 9.75], [34.0, 23.0]]), scale, photo.shape)
    assert np.allclose(mapped, [[30.0, 20.0], [68.5, 46.5]])
    enlarged = label.to_photo(np.array([[200.0, 0.0]]), (4.0, 4.0), (10, 12))  # past the last pixel centre
    assert np.array_equal(enlarged, [[11.0, 0.0]])

"""usp-train / usp-export / usp-bench: a tiny run end to end, and one-line errors with exit status 2."""
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from usp_core.cli import bench, export, train
from usp_core.models.layers import ModelConfig
from usp_core.models.unsuperpoint import UnsuperPoint

TINY_CONFIG = {
    "image_size": [32, 48], "batch_size": 2, "steps": 3, "val_interval": 2, "val_batches": 1,
    "checkpoint_interval": 2, "log_interval": 1, "num_workers": 0, "val_fraction": 0.25,
    "model": {"widths": [4, 4, 8, 8, 8, 8, 16, 16], "descriptor_dim": 8},
}


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        image = cv2.GaussianBlur(rng.random((40, 56)).astype(np.float32), (0, 0), 1.5)
        cv2.imwrite(str(root / f"{i}.png"), (image * 255 / image.max()).astype(np.uint8))
    return root


@pytest.fixture()
def tiny_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_CONFIG))
    return path


def test_train_then_resume_then_export(photos: Path, tiny_yaml: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert train.main(["--config", str(tiny_yaml), "--data", str(photos), "--out", str(out), "--device", "cpu"]) == 0
    assert "step 3/3" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3
    assert (out / "best.pt").is_file()
    assert "train step 3" in (out / "train.log").read_text()

    assert train.main(["--resume", str(out / "last.pt"), "--out", str(out), "--steps", "4", "--device", "cpu"]) == 0
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 4 and state["config"]["steps"] == 4 and state["config"]["image_size"] == [32, 48]

    exported = tmp_path / "exported"
    assert export.main([str(out / "last.pt"), "--out", str(exported), "--format", "torchscript,weights",
                        "--height", "32", "--width", "48"]) == 0
    printed = capsys.readouterr().out
    assert "torchscript:" in printed and "weights:" in printed
    assert (exported / "unsuperpoint.torchscript.pt").is_file()
    assert torch.load(exported / "unsuperpoint.pt", weights_only=True)["step"] == 4


def test_train_init_fine_tunes_from_exported_weights(photos: Path, tiny_yaml: Path, tmp_path: Path, capsys):
    first = tmp_path / "first"
    assert train.main(["--config", str(tiny_yaml), "--data", str(photos), "--out", str(first), "--device", "cpu"]) == 0
    assert export.main([str(first / "last.pt"), "--out", str(tmp_path / "exported"), "--format", "weights"]) == 0
    weights = tmp_path / "exported" / "unsuperpoint.pt"
    start = {k: v.float() for k, v in torch.load(weights, weights_only=True)["model"].items() if v.is_floating_point()}

    second = tmp_path / "second"
    assert train.main(["--config", str(tiny_yaml), "--data", str(photos), "--out", str(second), "--device", "cpu",
                       "--init", str(weights), "--steps", "1"]) == 0
    state = torch.load(second / "last.pt", weights_only=True)
    assert state["step"] == 1 and state["init_from"] == str(weights)
    # One step of a fresh optimizer (lr warm-up) moves the weights a little from the fp16 starting point.
    changes = [(state["model"][k].float() - v).abs().max().item() for k, v in start.items()]
    assert 0 < max(changes) < 0.1


def _tensor_bytes(state: dict) -> int:
    """Bytes of the floating tensors of a checkpoint's model and optimizer state (not the step counters)."""
    tensors = list(state["model"].values()) + [v for s in state["optimizer"]["state"].values()
                                               for k, v in s.items() if k != "step"]
    return sum(t.numel() * t.element_size() for t in tensors if t.is_floating_point())


def test_a_campaign_starts_from_init_then_resumes_from_its_compact_file_every_session(photos: Path, tiny_yaml: Path,
                                                                                       tmp_path: Path, capsys):
    campaign = tmp_path / "campaign" / "v3.pt"
    first = tmp_path / "session1"
    assert train.main(["--config", str(tiny_yaml), "--data", str(photos), "--out", str(first), "--device", "cpu",
                       "--campaign", str(campaign), "--steps", "6", "--time-limit", "1e-9"]) == 0  # one step
    compact = torch.load(campaign, weights_only=True)
    full = torch.load(first / "last.pt", weights_only=True)
    assert compact["step"] == full["step"] == 1
    assert all(v.dtype == torch.float16 for v in compact["model"].values() if v.is_floating_point())
    moments = [v for s in compact["optimizer"]["state"].values() for k, v in s.items() if k != "step"]
    assert moments and all(v.dtype == torch.bfloat16 for v in moments)
    assert _tensor_bytes(compact) == _tensor_bytes(full) // 2  # every float32 weight and moment in 16 bits

    second = tmp_path / "session2"  # the same command, another session: continues at step 1, no --config needed
    assert train.main(["--data", str(photos), "--out", str(second), "--device", "cpu", "--campaign", str(campaign),
                       "--init", "bundled"]) == 0
    assert "step 6/6" in capsys.readouterr().out
    resumed = torch.load(second / "last.pt", weights_only=True)
    assert resumed["step"] == 6 and resumed["init_from"] is None  # resumed, not re-initialised from --init
    assert torch.load(campaign, weights_only=True)["step"] == 6
    assert train.main(["--out", str(second), "--campaign", str(campaign), "--resume", str(first / "last.pt")]) == 2


def test_train_input_errors_are_one_line(photos: Path, tiny_yaml: Path, tmp_path: Path, one_error_line):
    out = ["--out", str(tmp_path / "out"), "--device", "cpu"]
    assert train.main(["--config", str(tiny_yaml), "--data", str(tmp_path / "nowhere")] + out) == 2
    one_error_line("usp-train", "does not exist")

    (tmp_path / "empty").mkdir()
    assert train.main(["--config", str(tiny_yaml), "--data", str(tmp_path / "empty")] + out) == 2
    one_error_line("usp-train", "no readable images")

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  widht: [1]\n")
    assert train.main(["--config", str(bad), "--data", str(photos)] + out) == 2
    one_error_line("usp-train", "unknown config key 'model.widht'")

    assert train.main(["--config", str(tiny_yaml)] + out) == 2
    one_error_line("usp-train", "no training data")

    assert train.main(["--data", str(photos), "--resume", str(tmp_path / "gone.pt")] + out) == 2
    one_error_line("usp-train", "cannot load checkpoint")

    assert train.main(["--config", str(tiny_yaml), "--data", str(photos), "--init", "bundled"] + out) == 2
    one_error_line("usp-train", "cannot initialise from", "does not fit this config")

    with pytest.raises(SystemExit) as info:
        train.main(["--data", str(photos)])
    assert info.value.code == 2
    one_error_line("usp-train", "--out")

    for limit in ("0", "-5", "nan"):
        with pytest.raises(SystemExit) as info:
            train.main(["--config", str(tiny_yaml), "--data", str(photos), "--time-limit", limit] + out)
        assert info.value.code == 2
        one_error_line("usp-train", "--time-limit")

    (tmp_path / "a_file").write_text("")
    assert train.main(["--config", str(tiny_yaml), "--data", str(photos), "--out", str(tmp_path / "a_file")]) == 2
    one_error_line("usp-train", "exists and is not a folder")
    (tmp_path / "campaign.pt").symlink_to(tmp_path / "absent.pt")  # a dangling link: its content not fetched
    assert train.main(["--config", str(tiny_yaml), "--data", str(photos), "--campaign", str(tmp_path / "campaign.pt")]
                      + out) == 2
    one_error_line("usp-train", "is not a readable file")
    assert (tmp_path / "campaign.pt").is_symlink(), "the campaign's link is left as it was"


def test_train_set_overrides_config_entries_or_fails_in_one_line(photos: Path, tiny_yaml: Path, tmp_path: Path,
                                                                 one_error_line, capsys):
    out = tmp_path / "run"
    assert train.main(["--config", str(tiny_yaml), "--data", str(photos), "--out", str(out), "--device", "cpu",
                       "--steps", "1", "--set", "image_size=[40,56]", "--set", "loss.a_pos=0.5"]) == 0
    saved = torch.load(out / "last.pt", weights_only=True)["config"]
    assert saved["image_size"] == [40, 56] and saved["loss"]["a_pos"] == 0.5
    capsys.readouterr()
    common = ["--config", str(tiny_yaml), "--data", str(photos), "--out", str(out), "--device", "cpu"]
    assert train.main(common + ["--set", "loss.a_pso=1"]) == 2
    one_error_line("usp-train", "unknown config key 'loss.a_pso'")
    assert train.main(common + ["--set", "image_size"]) == 2
    one_error_line("usp-train", "expected KEY=VALUE")
    assert train.main(common + ["--set", "image_size=[41,56]"]) == 2
    one_error_line("usp-train", "multiples of 8")


def test_magicpoint_trains_without_photos_and_exports_as_superpoint(tmp_path: Path, capsys):
    config = tmp_path / "magicpoint.yaml"
    config.write_text(yaml.safe_dump({**TINY_CONFIG, "task": "magicpoint", "image_size": [64, 80], "steps": 2,
                                      "model": {**TINY_CONFIG["model"], "architecture": "superpoint"},
                                      "synthetic": {"shapes": {"margin": 2.0}}}))
    assert train.main(["--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert export.main([str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "exported"),
                        "--format", "weights"]) == 0
    assert "weights: " + str(tmp_path / "exported" / "superpoint.pt") in capsys.readouterr().out


def test_superpoint_without_labels_is_a_one_line_error(photos: Path, tmp_path: Path, one_error_line):
    config = tmp_path / "superpoint.yaml"
    config.write_text(yaml.safe_dump({**TINY_CONFIG, "task": "superpoint",
                                      "model": {**TINY_CONFIG["model"], "architecture": "superpoint"}}))
    out = ["--out", str(tmp_path / "out"), "--device", "cpu"]
    assert train.main(["--config", str(config), "--data", str(photos)] + out) == 2
    one_error_line("usp-train", "task superpoint needs pseudo-labels", "--labels")
    assert train.main(["--config", str(config), "--data", str(photos), "--labels", str(tmp_path / "none")] + out) == 2
    one_error_line("usp-train", "have no labels", "run usp-label first")


def test_export_errors_are_one_line(tmp_path: Path, one_error_line):
    assert export.main([str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
    one_error_line("usp-export", "cannot load checkpoint")
    with pytest.raises(SystemExit) as info:
        export.main([str(tmp_path / "missing.pt"), "--out", str(tmp_path), "--format", "tflite"])
    assert info.value.code == 2
    one_error_line("usp-export", "unknown format tflite")


def test_bench_loads_each_backend_once_and_logs_progress_not_prints(tmp_path: Path, monkeypatch, caplog, capsys):
    torch.manual_seed(0)
    model = {"widths": [4, 4, 8, 8, 8, 8, 16, 16], "descriptor_dim": 8}
    weights = tmp_path / "tiny.pt"
    torch.save({"model": UnsuperPoint(ModelConfig(**model)).state_dict(), "config": {"model": model}}, weights)
    loads, load = [], bench.KeypointDetector.from_pretrained
    monkeypatch.setattr(bench.KeypointDetector, "from_pretrained",
                        lambda *args, **kwargs: loads.append(kwargs["backend"]) or load(*args, **kwargs))
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes "import openvino" fail
    image = bench.load_images(tmp_path / "none")[0][0]
    with caplog.at_level(logging.INFO, logger="usp_core.bench"):
        rows = bench.inference_rows([image], torch.device("cpu"), ["torch", "openvino"], weights, 1, 1,
                                    ["fp32", "auto", "bf16"], None)
    assert loads == ["torch"] * 3 + ["openvino"] * 3, "one load per backend and precision, not one per size"
    assert [(row.backend, row.size) for row in rows] == [("torch fp32", "240x320"), ("torch fp32", "480x640")], \
        "auto is fp32 in torch on the CPU (timed once); bf16 does not run there"
    assert "skipping backend torch in precision bf16: precision bf16 runs in torch on CUDA only" in caplog.text
    assert "skipping backend openvino in precision fp32: backend 'openvino' needs" in caplog.text
    assert "torch fp32 ready in" in caplog.text
    assert capsys.readouterr().out == ""


def test_bench_table_and_image_fallback(tmp_path: Path, one_error_line):
    table = bench.format_table([bench.Row("cpu", "openvino", "inference ms/image", "240x320", 20.0, 10.0, 4.0)])
    header, row = table.splitlines()
    assert header.split()[:4] == ["device", "backend", "measure", "size"]
    assert row.split()[-2:] == ["2.00", "5.00"]
    (tmp_path / "none").mkdir()
    images, source = bench.load_images(tmp_path / "none")
    assert "generated" in source and images[0].shape == (480, 640) and images[0].std() > 20
    assert bench.main(["--images", str(tmp_path / "absent")]) == 2
    one_error_line("usp-bench", "does not exist")
    for option, value in (("--iterations", "0"), ("--batch-size", "0"), ("--train-steps", "-1"), ("--threads", "-2")):
        with pytest.raises(SystemExit) as info:
            bench.main([option, value])
        assert info.value.code == 2
        one_error_line("usp-bench", option)

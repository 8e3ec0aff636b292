"""Atomic checkpoint save/load, and one-line errors that say what is wrong with a file."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from usp_core.cli import eval as eval_cli
from usp_core.inference.weights import model_from_checkpoint
from usp_core.models.layers import ModelConfig
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_core.support import checkpoint
from usp_core.support.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from usp_core.support.errors import first_line

SMALL = {"widths": [8, 8, 8, 8, 16, 16, 16, 16], "descriptor_dim": 16}
WIDER = {"widths": [16, 8, 8, 8, 16, 16, 16, 16], "descriptor_dim": 16}
REFUSED = "refused: not a plain weights file (it contains Python objects that weights_only loading does not allow)"


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "step": int(value), "config": {"a": [1, 2]}}


def test_round_trip_with_weights_only(tmp_path: Path):
    path = save_checkpoint(tmp_path / "sub" / "last.pt", _state(2.0))
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == 2
    assert torch.equal(loaded["model"]["w"], torch.full((3,), 2.0))
    assert load_checkpoint(path)["config"] == {"a": [1, 2]}


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_save_keeps_previous_file(tmp_path: Path, monkeypatch, error):
    path = save_checkpoint(tmp_path / "last.pt", _state(1.0))
    real_save = torch.save

    def save_half_then_fail(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 partial bytes of a zip archive")
        raise error

    monkeypatch.setattr(checkpoint.torch, "save", save_half_then_fail)
    with pytest.raises(type(error)):
        save_checkpoint(path, _state(5.0))
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "temporary file left behind"


def test_missing_file_raises_checkpoint_error(tmp_path: Path):
    with pytest.raises(CheckpointError, match=r"cannot load checkpoint .*nope\.pt: no such file"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("data", [b"not a checkpoint at all", b"\0" * 64, b"PK\x03\x04 half a zip archive"],
                         ids=["text", "zeros", "zip header"])
def test_corrupt_file_raises_one_line_error_without_weights_only_advice(tmp_path: Path, data: bytes):
    path = tmp_path / "bad.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"cannot load checkpoint {path}: ")
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)


def test_empty_file_says_so(tmp_path: Path):
    path = tmp_path / "empty.pt"
    path.touch()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"cannot load checkpoint {path}: empty file"


def test_pickled_objects_are_refused(tmp_path: Path):
    path = tmp_path / "obj.pt"
    torch.save({"model": {}, "thing": Path("x")}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"cannot load checkpoint {path}: {REFUSED}"


class Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.marker}",)


def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path):
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": Payload(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"cannot load checkpoint {path}: {REFUSED}"
    assert not marker.exists(), "the payload ran"


def _wrong_width(path: Path) -> Path:
    """A checkpoint whose weights are WIDER's while its config says SMALL."""
    return save_checkpoint(path, {"model": UnsuperPoint(ModelConfig(**WIDER)).state_dict(),
                                  "config": {"model": dict(SMALL)}})


def test_wrong_width_names_the_first_size_mismatch(tmp_path: Path):
    path = _wrong_width(tmp_path / "wide.pt")
    with pytest.raises(CheckpointError) as info:
        model_from_checkpoint(load_checkpoint(path), path)
    assert str(info.value) == (f"cannot load checkpoint {path}: size mismatch for backbone.0.0.weight: "
                               "checkpoint [16, 1, 3, 3], model [8, 1, 3, 3]")


def test_missing_and_unexpected_weights_are_named(tmp_path: Path):
    weights = UnsuperPoint(ModelConfig(**SMALL)).state_dict()
    missing = dict(weights)
    del missing["backbone.0.1.bias"]
    with pytest.raises(CheckpointError, match=r": missing weights for backbone\.0\.1\.bias$"):
        model_from_checkpoint({"model": missing, "config": {"model": SMALL}}, "x.pt")
    with pytest.raises(CheckpointError, match=r": unexpected weights extra\.weight \(not in the model\)$"):
        model_from_checkpoint({"model": {**weights, "extra.weight": torch.zeros(1)}, "config": {"model": SMALL}},
                              "x.pt")


def test_first_line_keeps_the_reason_after_an_introducing_line():
    error = RuntimeError("Error(s) in loading state_dict for M:\n\tsize mismatch for w: shapes differ.\n\tmore")
    assert first_line(error) == "Error(s) in loading state_dict for M: size mismatch for w: shapes differ."
    assert first_line(ValueError("bad value\nsecond line")) == "bad value"
    assert first_line(EOFError()) == "EOFError"


@pytest.fixture
def sequence(tmp_path: Path) -> Path:
    """A one-pair usp-eval sequence: a random texture twice and the identity homography."""
    folder = tmp_path / "seq"
    folder.mkdir()
    image = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    for name in ("1.png", "2.png"):
        cv2.imwrite(str(folder / name), image)
    np.savetxt(folder / "H_1_2", np.eye(3))
    return folder


@pytest.mark.parametrize("make,reason", [
    (lambda path: path.touch(), "empty file"),
    (lambda path: torch.save({"model": {}, "payload": Payload(path.parent / "pwned")}, path), REFUSED),
    (_wrong_width, "size mismatch for backbone.0.0.weight: checkpoint [16, 1, 3, 3], model [8, 1, 3, 3]"),
], ids=["empty", "malicious", "wrong width"])
def test_usp_eval_exits_2_with_the_reason(sequence: Path, tmp_path: Path, capsys, make, reason):
    path = tmp_path / "bad.pt"
    make(path)
    assert eval_cli.main([str(sequence), "--methods", "usp", "--weights", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == f"usp-eval: error: cannot load checkpoint {path}: {reason}"
    assert not (tmp_path / "pwned").exists()


def test_non_dict_is_refused(tmp_path: Path):
    path = save_checkpoint(tmp_path / "list.pt", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(path)

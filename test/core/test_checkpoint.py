"""Atomic checkpoint save/load."""
from pathlib import Path

import pytest
import torch

from usp_core import checkpoint
from usp_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


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


def test_corrupt_file_raises_one_line_error(tmp_path: Path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"cannot load checkpoint {path}: ")
    assert "\n" not in str(info.value)


def test_pickled_objects_are_refused(tmp_path: Path):
    path = tmp_path / "obj.pt"
    torch.save({"model": {}, "thing": Path("x")}, path)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(path)


def test_non_dict_is_refused(tmp_path: Path):
    path = save_checkpoint(tmp_path / "list.pt", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(path)

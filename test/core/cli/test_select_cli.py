"""usp-select: snapshots ranked by the usp-eval protocol on real pairs; the better one chosen and exported."""
import json
import shutil

import pytest
import torch

from usp_core.support.checkpoint import save_checkpoint
from usp_core.cli.select import main
from usp_core.inference.weights import resolve_weights
from usp_core.models.layers import ModelConfig
from usp_core.models.unsuperpoint import UnsuperPoint


@pytest.fixture
def run_dir(tmp_path):
    """A run folder whose snapshots are the bundled weights (step 200) and an untrained network (step 100)."""
    snapshots = tmp_path / "run" / "snapshots"
    snapshots.mkdir(parents=True)
    shutil.copy(resolve_weights("unsuperpoint"), snapshots / "step_000200.pt")
    trained = torch.load(snapshots / "step_000200.pt", weights_only=True)
    torch.manual_seed(0)
    untrained = UnsuperPoint(ModelConfig(**trained["config"]["model"]))
    save_checkpoint(snapshots / "step_000100.pt", {"model": untrained.state_dict(), "config": trained["config"]})
    return tmp_path / "run"


def test_the_trained_snapshot_is_chosen_and_exported(eval_set, run_dir, tmp_path, capsys):
    report, exported = tmp_path / "select.json", tmp_path / "chosen.pt"
    assert main([str(run_dir), "--data", str(eval_set), "--json", str(report), "--export", str(exported)]) == 0
    out = capsys.readouterr().out
    assert "step_000100.pt: eval rep" in out and "step_000200.pt: eval rep" in out
    assert f"chosen: {run_dir / 'snapshots' / 'step_000200.pt'}" in out
    figures = json.loads(report.read_text())["snapshots"]
    trained, untrained = (figures[str(run_dir / "snapshots" / f"step_000{s}00.pt")] for s in (2, 1))
    assert trained["merit"] > untrained["merit"] + 0.2
    assert trained["eval"]["matching_score"] > untrained["eval"]["matching_score"]
    weights = torch.load(exported, weights_only=True)["model"]
    reference = torch.load(run_dir / "snapshots" / "step_000200.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[k], reference[k].half()) for k in reference)


def test_bad_input_is_one_line(tmp_path, one_error_line):
    assert main([str(tmp_path / "nowhere"), "--data", str(tmp_path)]) == 2
    one_error_line("usp-select", "does not exist")
    (tmp_path / "empty_run").mkdir()
    assert main([str(tmp_path / "empty_run"), "--data", str(tmp_path)]) == 2
    one_error_line("usp-select", "no snapshots")
    assert main([str(tmp_path / "empty_run"), "--data", str(tmp_path), "--resolution", "240by320"]) == 2
    one_error_line("usp-select", "bad resolution '240by320'")
    (tmp_path / "step_000001.pt").write_bytes(b"")
    assert main([str(tmp_path / "step_000001.pt"), "--data", ","]) == 2
    one_error_line("usp-select", "--data names no folder")
    assert main([str(tmp_path / "step_000001.pt"), "--data", f"{tmp_path / 'a' / 'eval'},{tmp_path / 'b' / 'eval'}"]) == 2
    one_error_line("usp-select", "two folders named 'eval'")

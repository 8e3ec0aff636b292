"""usp-gate: fp32 and a reduced precision measured by the usp-eval protocol on real pairs at both settings; the gate
file it writes is the one precision auto reads."""
import json
import shutil

import pytest

from usp_core.cli.gate import main
from usp_core.inference.detector import KeypointDetector
from usp_core.inference.graph_cache import weights_digest
from usp_core.inference.precision import cpu_precisions
from usp_core.inference.weights import load_network, resolve_weights


@pytest.mark.skipif("bf16" not in cpu_precisions(), reason="this CPU does not run bf16 natively")
def test_the_gate_measures_bf16_against_fp32_and_is_read_by_auto(eval_set, tmp_path, capsys):
    weights = shutil.copy(resolve_weights("unsuperpoint"), tmp_path / "mine.pt")
    assert main([str(weights), "--data", str(eval_set), "--precisions", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "eval 240x320 fp32: rep" in out and "eval 480x640 bf16: rep" in out and "mean over the tables, bf16" in out
    record = json.loads((tmp_path / "mine.gate.json").read_text())
    assert record["weights"] == weights_digest(load_network(weights))
    assert sorted(record["tables"]) == ["eval 240x320", "eval 480x640"]
    for table in record["tables"].values():
        fp32, bf16 = table["figures"]["fp32"], table["figures"]["bf16"]
        assert table["deltas"]["bf16"]["repeatability"] == pytest.approx(bf16["repeatability"] - fp32["repeatability"])
        assert abs(table["deltas"]["bf16"]["localization_error"]) < 0.05 and fp32["ms_per_image"] > 0
    assert record["passed"][0] == "fp32" and set(record["milliseconds"]) == {"fp32", "bf16"}
    expected = "bf16" if "bf16" in record["passed"] and record["milliseconds"]["bf16"] < record["milliseconds"][
        "fp32"] else "fp32"
    assert KeypointDetector.from_pretrained(weights, backend="openvino").precision == expected


def test_bad_input_is_one_line(tmp_path, one_error_line):
    with pytest.raises(SystemExit) as exit_status:
        main(["--data", str(tmp_path), "--precisions", "fp32"])
    assert exit_status.value.code == 2
    one_error_line("usp-gate", "precisions must be from bf16,int8")
    assert main([str(tmp_path / "missing.pt"), "--data", str(tmp_path), "--precisions", "bf16"]) == 2
    one_error_line("usp-gate", "missing.pt")

"""usp-gate: fp32 and a reduced precision measured by the usp-eval protocol on real pairs at both settings; the gate
file it writes is the one precision auto reads."""
import json
import shutil

import pytest

from usp_core.cli.gate import main
from usp_core.inference.detector import DetectorConfig, KeypointDetector
from usp_core.inference.graph_cache import weights_digest
from usp_core.inference.precision import cpu_precisions
from usp_core.inference.weights import load_network, resolve_weights


REDUCED = [name for name in ("bf16", "int8") if name in cpu_precisions()]  # what this CPU runs natively


@pytest.mark.skipif(not REDUCED, reason="this CPU runs neither bf16 nor int8 natively")
@pytest.mark.parametrize("precision", REDUCED or ["bf16"])
def test_the_gate_measures_a_reduced_precision_against_fp32_and_is_read_by_auto(precision, eval_set, tmp_path,
                                                                                 capsys):
    weights = shutil.copy(resolve_weights("unsuperpoint"), tmp_path / "mine.pt")
    calibration = [] if precision == "bf16" else ["--calibration", str(eval_set)]  # int8: the pairs' 4 photos
    assert main([str(weights), "--data", str(eval_set), "--precisions", precision, *calibration]) == 0
    out = capsys.readouterr().out
    assert "eval 240x320 fp32: rep" in out and f"eval 480x640 {precision}: rep" in out
    assert f"mean over the tables, {precision}" in out
    record = json.loads((tmp_path / "mine.gate.json").read_text())
    assert record["weights"] == weights_digest(load_network(weights))
    assert sorted(record["tables"]) == ["eval 240x320", "eval 480x640"]
    for table in record["tables"].values():
        fp32, reduced = table["figures"]["fp32"], table["figures"][precision]
        assert table["deltas"][precision]["repeatability"] == pytest.approx(reduced["repeatability"]
                                                                           - fp32["repeatability"])
        assert abs(table["deltas"][precision]["localization_error"]) < 0.1 and fp32["ms_per_image"] > 0
    assert record["passed"][0] == "fp32" and set(record["milliseconds"]) == {"fp32", precision}
    faster = record["milliseconds"][precision] < record["milliseconds"]["fp32"]
    expected = precision if precision in record["passed"] and faster else "fp32"
    config = DetectorConfig(calibration_dir=str(eval_set) if calibration else "")
    assert KeypointDetector.from_pretrained(weights, backend="openvino", config=config).precision == expected


def test_bad_input_is_one_line(tmp_path, one_error_line):
    with pytest.raises(SystemExit) as exit_status:
        main(["--data", str(tmp_path), "--precisions", "fp32"])
    assert exit_status.value.code == 2
    one_error_line("usp-gate", "precisions must be from bf16,int8")
    assert main([str(tmp_path / "missing.pt"), "--data", str(tmp_path), "--precisions", "bf16"]) == 2
    one_error_line("usp-gate", "missing.pt")
    assert main(["unsuperpoint", "--data", ",", "--precisions", "int8"]) == 2
    one_error_line("usp-gate", "--data names no folder")

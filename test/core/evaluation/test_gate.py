"""The accuracy gate's rule: losses against fp32 within the tolerances, as the mean over the tables."""
import pytest

from usp_core.evaluation.gate import gate_record, passes

FP32 = {"repeatability": 0.60, "localization_error": 1.00, "ha3": 0.700, "matching_score": 0.40, "ms_per_image": 40.0}


def _row(ms: float, **changes) -> dict:
    return {**FP32, **{name: FP32[name] + change for name, change in changes.items()}, "ms_per_image": ms}


@pytest.mark.parametrize("change, within", [
    ({}, True),
    ({"repeatability": -0.01, "localization_error": 0.05, "ha3": -0.01, "matching_score": -0.01}, True),
    ({"ha3": -0.011}, False),
    ({"matching_score": -0.02}, False),
    ({"localization_error": 0.06}, False),
    ({"repeatability": 0.2, "ha3": 0.1, "localization_error": -0.3}, True),  # gains always pass
    ({"ha3": float("nan")}, False),
])
def test_a_precision_passes_when_no_figure_loses_more_than_its_tolerance(change, within):
    deltas = {"repeatability": 0.0, "localization_error": 0.0, "ha3": 0.0, "matching_score": 0.0, **change}
    assert passes(deltas) is within


def test_the_record_gates_on_the_mean_over_the_tables_and_keeps_each_tables_deltas():
    tables = {  # bf16 flips one pair either way (one gained, one lost: even); int8 loses in both
        "oxford 240x320": {"fp32": _row(20), "bf16": _row(8, ha3=0.025), "int8": _row(12, ha3=-0.025)},
        "oxford 480x640": {"fp32": _row(60), "bf16": _row(25, ha3=-0.025), "int8": _row(30, ha3=-0.025)},
    }
    record = gate_record("digest", tables, {"machine": "test"})
    assert record["passed"] == ["fp32", "bf16"]
    assert record["mean_deltas"]["bf16"]["ha3"] == pytest.approx(0.0)
    assert record["mean_deltas"]["int8"]["ha3"] == pytest.approx(-0.025)
    assert record["tables"]["oxford 240x320"]["deltas"]["bf16"]["ha3"] == pytest.approx(0.025)
    assert record["milliseconds"] == {"fp32": 60, "bf16": 25, "int8": 30}, "ranked by the 480x640 times"
    assert record["weights"] == "digest" and record["about"] == {"machine": "test"}

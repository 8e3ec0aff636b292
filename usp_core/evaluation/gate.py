"""The accuracy gate of a reduced precision: its usp-eval figures against fp32's on every table, within tolerances.

A table is one evaluation folder (Oxford, HPatches, ...) at one protocol setting (``SETTINGS``: 240x320
with the top 300 points, 480x640 with the top 1000). A precision passes when, over the tables, it loses
at most ``TOLERANCES`` against fp32: repeatability, HA@3 and M-score down by no more than 0.01,
localisation error up by no more than 0.05 px (gains always pass). "Over the tables" is the mean of the
tables' figures: with 40 pairs per table, one table's HA@3 moves in steps of 0.025, coarser than the
tolerance, and a reduced precision's rounding flips borderline pairs either way (bf16 here: two pairs
gained on Oxford, one to three lost on HPatches); the mean over every table's pairs (160 for Oxford and
HPatches at both settings) is the finest the evaluation sets measure. Every table's deltas are kept and
printed too. The record (:func:`gate_record`) is what usp_core.inference.precision.PrecisionGate reads:
the weights it measured, the precisions that passed, each precision's mean time per 480x640 image, and
the figures and deltas.
"""
from __future__ import annotations

__all__ = ["SETTINGS", "TOLERANCES", "figures", "deltas", "mean_deltas", "passes", "gate_record"]

SETTINGS = ((240, 320, 300), (480, 640, 1000))  # (height, width, top-k) of the protocol's two settings
TOLERANCES = {"repeatability": 0.01, "localization_error": 0.05, "ha3": 0.01, "matching_score": 0.01}
LOWER_IS_BETTER = ("localization_error",)
TIMED_SETTING = "480x640"  # the setting whose ms per image ranks the precisions


def figures(summary: dict) -> dict[str, float]:
    """The gated figures (and ms per image) of a usp-eval method summary (usp_core.evaluation.runner)."""
    return {"repeatability": summary["repeatability"], "localization_error": summary["localization_error"],
            "ha3": summary["homography_accuracy"]["3"], "matching_score": summary["matching_score"],
            "ms_per_image": summary["ms_per_image"]}


def deltas(candidate: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    """candidate - reference for each gated figure."""
    return {name: candidate[name] - reference[name] for name in TOLERANCES}


def passes(change: dict[str, float]) -> bool:
    """Whether no gated figure lost more than its tolerance (a NaN figure fails)."""
    return all((change[name] <= tolerance) if name in LOWER_IS_BETTER else (change[name] >= -tolerance)
               for name, tolerance in TOLERANCES.items())


def gate_record(weights: str, tables: dict[str, dict[str, dict[str, float]]], about: dict) -> dict:
    """The gate file's content from ``tables`` {table: {precision: figures}}, each with an "fp32" entry.

    ``weights``: the weights' digest (usp_core.inference.graph_cache.weights_digest); ``about``: where and
    how it was measured (kept as given).
    """
    precisions = list(dict.fromkeys(name for table in tables.values() for name in table if name != "fp32"))
    changes = {table: {name: deltas(row[name], row["fp32"]) for name in precisions} for table, row in tables.items()}
    overall = {name: mean_deltas([changes[table][name] for table in tables]) for name in precisions}
    passed = [name for name in precisions if passes(overall[name])]
    timed = [row for table, row in tables.items() if table.endswith(TIMED_SETTING)] or list(tables.values())
    milliseconds = {name: sum(row[name]["ms_per_image"] for row in timed) / len(timed)
                    for name in ["fp32", *precisions]}
    return {"weights": weights, "passed": ["fp32", *passed], "milliseconds": milliseconds, "tolerances": TOLERANCES,
            "mean_deltas": overall, "about": about,
            "tables": {table: {"figures": tables[table], "deltas": changes[table]} for table in tables}}


def mean_deltas(changes: list[dict[str, float]]) -> dict[str, float]:
    """The mean over tables of each figure's delta."""
    return {name: sum(change[name] for change in changes) / len(changes) for name in TOLERANCES}

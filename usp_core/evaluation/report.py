"""Readable tables of the results (Markdown, so they paste into the docs unchanged)."""
from __future__ import annotations

import math

METRIC_COLUMNS = (
    ("Rep.", lambda s: s["repeatability"], "{:.3f}"),
    ("Loc. err. (px)", lambda s: s["localization_error"], "{:.3f}"),
    ("HA@1", lambda s: s["homography_accuracy"]["1"], "{:.3f}"),
    ("HA@3", lambda s: s["homography_accuracy"]["3"], "{:.3f}"),
    ("HA@5", lambda s: s["homography_accuracy"]["5"], "{:.3f}"),
    ("M-score", lambda s: s["matching_score"], "{:.3f}"),
    ("M-score mutual", lambda s: s["matching_score_mutual"], "{:.3f}"),
)
COST_COLUMNS = (
    ("kp/image", lambda s: s["keypoints_per_image"], "{:.0f}"),
    ("ms/image", lambda s: s["ms_per_image"], "{:.1f}"),
)


def _cell(value: float, fmt: str) -> str:
    """A number formatted for the table, '-' when undefined."""
    return fmt.format(value) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with columns padded to equal width."""
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in [header, *rows]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def overall_table(methods: dict[str, dict]) -> str:
    """One row per method with every overall metric, keypoint count and time."""
    columns = METRIC_COLUMNS + COST_COLUMNS
    header = ["Method", *(name for name, _, _ in columns)]
    rows = [[method, *(_cell(get(s), fmt) for _, get, fmt in columns)] for method, s in methods.items()]
    return markdown_table(header, rows)


def sequence_table(methods: dict[str, dict]) -> str:
    """One row per sequence and method with every metric."""
    header = ["Sequence", "Method", *(name for name, _, _ in METRIC_COLUMNS)]
    sequences = list(dict.fromkeys(seq for s in methods.values() for seq in s["sequences"]))
    rows = [
        [seq, method, *(_cell(get(s["sequences"][seq]), fmt) for _, get, fmt in METRIC_COLUMNS)]
        for seq in sequences
        for method, s in methods.items()
        if seq in s["sequences"]
    ]
    return markdown_table(header, rows)

"""Summary figure of an evaluation run: one colour per method across every panel.

Built on matplotlib.figure.Figure without pyplot, so it renders with the Agg canvas and never
touches the global backend or pyplot's figure registry.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from usp_core.support.atomic import write_bytes_atomic

MAX_LABELLED_BARS = 30  # values are printed on the bars of a panel holding at most this many (more overlap)


def _grouped_bars(axis, groups: list[str], values: dict[str, list[float]], colours: dict[str, str]) -> None:
    """Bars of values[method][g] for each group g, methods side by side, values printed when there is room."""
    width = 0.8 / max(len(values), 1)
    for m, (method, heights) in enumerate(values.items()):
        positions = [g + (m - (len(values) - 1) / 2) * width for g in range(len(groups))]
        shown = [h if math.isfinite(h) else 0.0 for h in heights]
        bars = axis.bar(positions, shown, width * 0.95, color=colours[method], label=method)
        if len(groups) * len(values) <= MAX_LABELLED_BARS:
            labels = [f"{h:.2f}" if math.isfinite(h) else "-" for h in heights]
            axis.bar_label(bars, labels=labels, fontsize=7, padding=1)
    axis.set_xticks(range(len(groups)), groups)
    axis.set_ylim(0, 1.1)
    axis.grid(axis="y", alpha=0.3)
    axis.set_axisbelow(True)


def summary_figure(methods: dict[str, dict], title: str) -> Figure:
    """Figure: homography accuracy, repeatability and both matching scores per method, repeatability per sequence."""
    colours = {m: matplotlib.colormaps["tab10"](i % 10) for i, m in enumerate(methods)}
    figure = Figure(figsize=(12, 8), layout="constrained")
    grid = figure.add_gridspec(2, 2)
    accuracy, detection = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1])
    per_sequence = figure.add_subplot(grid[1, :])

    thresholds = ["1", "3", "5"]
    _grouped_bars(accuracy, [f"HA@{t}" for t in thresholds],
                  {m: [s["homography_accuracy"][t] for t in thresholds] for m, s in methods.items()}, colours)
    accuracy.set_title("Homography accuracy (mean corner error <= eps px)")
    accuracy.set_ylabel("fraction of pairs")

    _grouped_bars(detection, ["repeatability", "M-score", "M-score mutual"],
                  {m: [s["repeatability"], s["matching_score"], s["matching_score_mutual"]]
                   for m, s in methods.items()}, colours)
    detection.set_title("Repeatability and matching scores (3 px)")

    sequences = list(dict.fromkeys(seq for s in methods.values() for seq in s["sequences"]))
    _grouped_bars(per_sequence, sequences,
                  {m: [s["sequences"].get(seq, {}).get("repeatability", float("nan")) for seq in sequences]
                   for m, s in methods.items()}, colours)
    per_sequence.set_title("Repeatability per sequence")
    per_sequence.set_ylabel("repeatability")

    handles = [Rectangle((0, 0), 1, 1, color=colours[m]) for m in methods]
    labels = [f"{m}  ({s['keypoints_per_image']:.0f} kp, {s['ms_per_image']:.1f} ms / image)"
              for m, s in methods.items()]
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(methods), 4), frameon=False)
    figure.suptitle(title)
    return figure


def save_summary_plot(path: str | Path, methods: dict[str, dict], title: str) -> Path:
    """Render summary_figure to a PNG at path, atomically."""
    figure = summary_figure(methods, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return write_bytes_atomic(path, buffer.getvalue())

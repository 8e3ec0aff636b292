"""usp-gate: measure reduced precisions against fp32 with usp-eval and write the weights' precision gate.

    usp-gate [WEIGHTS] --data DIR[,DIR...] [--precisions bf16,int8] [--calibration DIR] [--out FILE]

WEIGHTS (default: the bundled unsuperpoint) runs as ``usp`` in the OpenVINO backend, in fp32 and in each
precision (default: those this CPU runs natively), by the usp-eval protocol on each HPatches-layout folder
of ``--data`` at 240x320 top-300 and 480x640 top-1000 (usp_core.evaluation.gate). One line per table and
precision (the figures' changes against fp32, ms per image), the mean changes over the tables and whether
they are within the tolerances, then the gate file: ``--out``,
default ``<stem>.gate.json`` beside the weights, which precision ``auto`` reads (usp_core.inference.precision).
Time the precisions on a quiet machine: their ms per 480x640 image rank them. Bad input: one line, exit 2.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import sys
from pathlib import Path

from usp_core.cli.eval import UsageError, parse_folders
from usp_core.cli.train import OneLineParser
from usp_core.evaluation.dataset import DatasetError, find_sequences, load_sequence
from usp_core.evaluation.gate import SETTINGS, TOLERANCES, figures, gate_record, passes
from usp_core.evaluation.methods import MethodError, build_method
from usp_core.evaluation.runner import evaluate_method, method_summary
from usp_core.inference.graph_cache import weights_digest
from usp_core.inference.precision import BF16_FLAGS, INT8_FLAGS, PRECISIONS, cpu_flags, cpu_precisions, gate_path
from usp_core.inference.weights import load_network, resolve_weights
from usp_core.support.atomic import write_bytes_atomic
from usp_core.support.checkpoint import CheckpointError
from usp_core.support.errors import first_line

logger = logging.getLogger("usp_core.gate")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="usp-gate", description="Gate reduced precisions by usp-eval against fp32.")
    parser.add_argument("weights", nargs="?", default=None, help="checkpoint or bundled name (default: unsuperpoint)")
    parser.add_argument("--data", required=True, help="comma-separated HPatches-layout folders (e.g. Oxford, HPatches)")
    parser.add_argument("--precisions", type=_precisions, default=None,
                        help="comma-separated, from bf16,int8 (default: those this CPU runs natively)")
    parser.add_argument("--calibration", type=Path, default=None, help="int8: folder of calibration photos")
    parser.add_argument("--out", type=Path, default=None,
                        help="gate file (default: <weights stem>.gate.json beside the weights)")
    return parser


def _precisions(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    wrong = [name for name in names if name not in PRECISIONS or name in ("auto", "fp32", "fp16")]
    if not names or wrong:
        raise argparse.ArgumentTypeError(f"precisions must be from bf16,int8, got {text!r}")
    return names


def measure(weights: Path, folders: list[Path], precisions: list[str], calibration: Path | None) -> dict:
    """{table: {precision: figures}} for fp32 and each precision, every folder at every setting."""
    tables: dict[str, dict[str, dict]] = {}
    for height, width, top_k in SETTINGS:
        sets = {folder.name: [list(load_sequence(s, (height, width))) for s in find_sequences(folder)]
                for folder in folders}
        for precision in ["fp32", *precisions]:
            method = build_method("usp", top_k, weights=weights, device="cpu", backend="openvino",
                                  precision=precision, calibration_dir=calibration)
            for name, sequences in sets.items():
                table = f"{name} {height}x{width}"
                tables.setdefault(table, {})[precision] = figures(method_summary(evaluate_method(method, sequences)))
                print(_line(table, precision, tables[table]), flush=True)
    return tables


def _line(table: str, precision: str, row: dict) -> str:
    got = row[precision]
    if precision == "fp32":
        return (f"{table} fp32: rep {got['repeatability']:.3f} LE {got['localization_error']:.3f} "
                f"HA@3 {got['ha3']:.3f} MS {got['matching_score']:.3f} | {got['ms_per_image']:.1f} ms")
    change = {name: got[name] - row["fp32"][name] for name in TOLERANCES}
    return (f"{table} {precision}: rep {change['repeatability']:+.3f} LE {change['localization_error']:+.3f} "
            f"HA@3 {change['ha3']:+.3f} MS {change['matching_score']:+.3f} | {got['ms_per_image']:.1f} ms")


def run(args: argparse.Namespace) -> int:
    weights = resolve_weights(args.weights)
    precisions = args.precisions or [name for name in cpu_precisions() if name != "fp32"]
    folders = parse_folders(args.data)
    model = load_network(weights)  # a missing or broken checkpoint fails here, before any measuring
    tables = measure(weights, folders, precisions, args.calibration)
    about = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
             "cpu_precisions": list(cpu_precisions()), "cpu_flags": sorted(cpu_flags() & {*BF16_FLAGS, *INT8_FLAGS}),
             "data": [str(folder) for folder in folders],
             "calibration": str(args.calibration) if args.calibration else None}
    record = gate_record(weights_digest(model), tables, about)
    for precision, change in record["mean_deltas"].items():
        print(f"mean over the tables, {precision}: rep {change['repeatability']:+.4f} "
              f"LE {change['localization_error']:+.4f} HA@3 {change['ha3']:+.4f} MS {change['matching_score']:+.4f} "
              f"| {'within' if passes(change) else 'outside'} the tolerances")
    out = args.out or gate_path(weights)
    write_bytes_atomic(out, (json.dumps(record, indent=1) + "\n").encode())
    print(f"passed: {', '.join(record['passed'])}; written: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (CheckpointError, DatasetError, MethodError, UsageError, FileNotFoundError, OSError, ValueError) as error:
        print(f"usp-gate: error: {first_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

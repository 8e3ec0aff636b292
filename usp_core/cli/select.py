"""usp-select: choose a training run's snapshot by evaluation, never by its loss.

    usp-select RUN_DIR --data DIR[,DIR...] [--resolution 240x320] [--top-k 300] [--backend torch]
               [--json FILE] [--export FILE]

Every ``RUN_DIR/snapshots/step_N.pt`` (or the checkpoint files given instead of a folder) is
evaluated as ``usp`` by the usp-eval protocol on each HPatches-layout folder of ``--data``; one line
per snapshot (repeatability, localisation error, HA@3 and M-score per folder), then the chosen one:
the highest mean over the folders of HA@3 + M-score (ties: the later step). ``--export`` writes the
chosen snapshot as compact fp16 weights (what ships in usp_core/weights). Bad input: one line on
stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from usp_core.cli.eval import UsageError, parse_folders, parse_resolution
from usp_core.cli.train import OneLineParser
from usp_core.evaluation.dataset import DatasetError, find_sequences, load_sequence
from usp_core.evaluation.methods import MethodError, build_method
from usp_core.evaluation.runner import evaluate_method, method_summary
from usp_core.inference.export import ExportError, export_weights
from usp_core.inference.weights import load_network
from usp_core.support.atomic import write_bytes_atomic
from usp_core.support.checkpoint import CheckpointError, load_checkpoint
from usp_core.support.device import resolve_device
from usp_core.support.errors import first_line


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="usp-select", description="Choose a run's snapshot by usp-eval on evaluation sets.")
    parser.add_argument("run", nargs="+", type=Path, help="a run folder (its snapshots/step_N.pt) or checkpoint files")
    parser.add_argument("--data", required=True, help="comma-separated HPatches-layout folders (e.g. Oxford, HPatches)")
    parser.add_argument("--resolution", default="240x320", help="evaluation size HxW (default 240x320)")
    parser.add_argument("--top-k", type=int, default=300, help="keypoints per image (default 300)")
    parser.add_argument("--backend", default="torch", help="inference backend (default torch: no graph cache)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--json", type=Path, help="write every snapshot's figures and the choice here")
    parser.add_argument("--export", type=Path, help="write the chosen snapshot as fp16 weights here")
    return parser


def snapshots(paths: list[Path]) -> list[Path]:
    """The checkpoint files to compare: each folder's snapshots/step_*.pt (sorted), files as given."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted((path / "snapshots").glob("step_*.pt")))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    if not found:
        raise FileNotFoundError(f"no snapshots under {', '.join(map(str, paths))} (snapshots/step_N.pt)")
    return found


def evaluate_snapshot(path: Path, sets: dict[str, list], top_k: int, backend: str, device: str) -> dict[str, dict]:
    """usp-eval's overall summary of one checkpoint on each named set of loaded sequences."""
    method = build_method("usp", top_k, weights=path, device=device, backend=backend)
    return {name: {k: v for k, v in method_summary(evaluate_method(method, sequences, set())).items()
                   if k != "sequences"} for name, sequences in sets.items()}


def merit(figures: dict[str, dict]) -> float:
    """What selection maximises: the mean over sets of HA@3 + M-score."""
    return sum(f["homography_accuracy"]["3"] + f["matching_score"] for f in figures.values()) / len(figures)


def _line(path: Path, figures: dict[str, dict]) -> str:
    cells = [f"{name} rep {f['repeatability']:.3f} LE {f['localization_error']:.3f} "
             f"HA@3 {f['homography_accuracy']['3']:.3f} MS {f['matching_score']:.3f}" for name, f in figures.items()]
    return f"{path.name}: " + " | ".join(cells) + f" | merit {merit(figures):.4f}"


def run(args: argparse.Namespace) -> int:
    size = parse_resolution(args.resolution)
    paths = snapshots(args.run)
    device = str(resolve_device(args.device))
    folders = parse_folders(args.data)
    sets = {folder.name: [list(load_sequence(s, size)) for s in find_sequences(folder)] for folder in folders}
    results = {}
    for path in paths:
        results[path] = evaluate_snapshot(path, sets, args.top_k, args.backend, device)
        print(_line(path, results[path]), flush=True)
    best = max(results, key=lambda path: (merit(results[path]), path.name))
    print(f"chosen: {best} (merit {merit(results[best]):.4f})")
    if args.json:
        data = {"resolution": list(size), "top_k": args.top_k, "chosen": str(best),
                "snapshots": {str(path): {"merit": merit(f), **f} for path, f in results.items()}}
        write_bytes_atomic(args.json, json.dumps(data, indent=1).encode())
    if args.export:
        export_weights(load_network(best), load_checkpoint(best), args.export)
        print(f"exported: {args.export}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (CheckpointError, DatasetError, ExportError, MethodError, UsageError, FileNotFoundError, OSError,
            ValueError) as error:
        print(f"usp-select: error: {first_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

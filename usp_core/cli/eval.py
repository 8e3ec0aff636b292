"""usp-eval: HPatches-protocol evaluation of UnsuperPoint, SuperPoint and OpenCV baselines on sequence folders.

    usp-eval DATA_DIR [--methods usp,superpoint,orb,sift,akaze,brisk] [--weights CKPT] [--superpoint-weights CKPT]
             [--resolution 240x320] [--top-k 300] [--device D] [--backend auto] [--precision auto]
             [--calibration DIR] [--nms-radius PX] [--json FILE] [--plot FILE.png] [--visualize DIR]

--methods defaults to both networks and every method the installed OpenCV offers (orb, sift, akaze,
brisk with opencv-contrib); "superpoint-ha" (SuperPoint with Homographic Adaptation at test time,
--adaptation-warps runs of the network per image) only when named. Tables, JSON and plot carry two
matching scores: "M-score", the published protocol (plain nearest neighbours each way), and
"M-score mutual" (mutual nearest neighbours, as the matcher node).
"""
from __future__ import annotations

import argparse
import datetime
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from usp_core.evaluation.dataset import DatasetError, find_sequences, load_sequence
from usp_core.evaluation.methods import (LEARNED, LearnedMethod, MethodError, available_methods, build_method,
                                         default_methods)
from usp_core.evaluation.output import results_json
from usp_core.evaluation.plot import save_summary_plot
from usp_core.evaluation.report import overall_table, sequence_table
from usp_core.evaluation.runner import evaluate_method, method_summary
from usp_core.evaluation.visualize import save_match_images
from usp_core.inference.backends.base import BACKENDS
from usp_core.inference.precision import PRECISIONS
from usp_core.support.atomic import write_bytes_atomic
from usp_core.support.checkpoint import CheckpointError
from usp_core.support.device import resolve_device

logger = logging.getLogger("usp_core.eval")

VISUALIZED_PAIRS = 4  # pairs drawn per method with --visualize, spread evenly over the run


class UsageError(Exception):
    """Bad command-line input; the message is the one line shown to the user."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage block) and exit status 2."""

    def error(self, message: str):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The usp-eval argument parser."""
    parser = _Parser(prog="usp-eval", description="Evaluate keypoint methods on HPatches-layout sequences.")
    parser.add_argument("data_dir", metavar="DATA_DIR",
                        help="folder of sequences (<seq>/1.png.., <seq>/H_1_k) or one sequence")
    methods = ",".join(default_methods())
    parser.add_argument("--methods", default=methods, help=f"comma-separated, from {','.join(available_methods())} "
                        f"(default: {methods})")
    parser.add_argument("--weights", default=None, help="usp: checkpoint or bundled name (default: unsuperpoint); "
                        "either architecture")
    parser.add_argument("--superpoint-weights", default=None, help="superpoint, superpoint-ha: checkpoint or "
                        "bundled name (default: superpoint)")
    parser.add_argument("--adaptation-warps", type=int, default=100, help="superpoint-ha: warps of Homographic "
                        "Adaptation at test time, the identity included (default 100)")
    parser.add_argument("--resolution", default="240x320", help="evaluation size HxW (default 240x320)")
    parser.add_argument("--top-k", type=int, default=300, help="keypoints kept per image (default 300)")
    parser.add_argument("--device", default=None, help="torch device for usp (default: cuda if available, else cpu)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="inference backend for usp (default auto: openvino on a CPU, torch on CUDA)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="what usp computes in (default auto: the fastest its weights' gate passed, else fp32)")
    parser.add_argument("--calibration", default=None, help="precision int8: folder of calibration photos")
    parser.add_argument("--nms-radius", type=int, default=None,
                        help="usp: drop points with a better one within this many pixels (default: the detector's)")
    parser.add_argument("--json", type=Path, default=None, help="write every number to this JSON file")
    parser.add_argument("--plot", type=Path, default=None, help="write a summary figure to this PNG file")
    parser.add_argument("--visualize", type=Path, default=None,
                        help="write match pictures of a few pairs to this folder")
    return parser


def parse_resolution(text: str) -> tuple[int, int]:
    """'240x320' -> (240, 320) (height, width); raises UsageError otherwise."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) < 16:
        raise UsageError(f"bad resolution {text!r}: expected HxW such as 240x320 (each at least 16)")
    return int(parts[0]), int(parts[1])


def parse_folders(text: str) -> list[Path]:
    """'a/oxford,b/hpatches' -> [Path('a/oxford'), Path('b/hpatches')]: evaluation sets, reported by their folder
    names, so UsageError when none is given or two share a name."""
    folders = [Path(item.strip()) for item in text.split(",") if item.strip()]
    names = [folder.name for folder in folders]
    if not folders:
        raise UsageError("--data names no folder")
    if len(set(names)) < len(names):
        raise UsageError(f"--data: two folders named {next(n for n in names if names.count(n) > 1)!r}; the sets are "
                         "reported by folder name")
    return folders


def parse_methods(text: str) -> list[str]:
    """'usp, orb' -> ['usp', 'orb'] (order kept, duplicates dropped); raises UsageError on unknown names."""
    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in available_methods()]
    if not names or unknown:
        given = ",".join(unknown) or "(none given)"
        raise UsageError(f"unknown method(s) {given}; available: {','.join(available_methods())}")
    return names


def _usp_device(name: str | None) -> str:
    """The torch device to use for usp ("auto" when not given); UsageError for an unknown or unavailable one."""
    try:
        return str(resolve_device(name or "auto"))
    except ValueError as error:
        raise UsageError(str(error)) from None


def _pick_examples(sequences, count: int) -> set[tuple[str, int]]:
    """(sequence, k) of count pairs spread evenly over all pairs."""
    pairs = [(p.sequence, p.index) for seq in sequences for p in seq]
    if not pairs:
        return set()
    return {pairs[i] for i in np.linspace(0, len(pairs) - 1, min(count, len(pairs))).round().astype(int)}


def _weights(args: argparse.Namespace, name: str) -> str | None:
    """The --weights option of a learned method: --superpoint-weights for the SuperPoint ones, else --weights."""
    return args.superpoint_weights if name.startswith("superpoint") else args.weights


def _build_methods(names: list[str], args: argparse.Namespace, device: str) -> list:
    """Build every method, turning load failures into UsageError."""
    methods = []
    for name in names:
        try:
            methods.append(build_method(name, args.top_k, weights=_weights(args, name), device=device,
                                        backend=args.backend, nms_radius=args.nms_radius,
                                        adaptation_warps=args.adaptation_warps, precision=args.precision,
                                        calibration_dir=args.calibration))
        except (CheckpointError, MethodError, OSError) as error:
            raise UsageError(str(error).splitlines()[0] if str(error) else repr(error)) from None
    return methods


def run(args: argparse.Namespace) -> int:
    """Validate the input, evaluate, print tables and write the requested files."""
    size = parse_resolution(args.resolution)
    names = parse_methods(args.methods)
    if args.top_k < 1:
        raise UsageError(f"--top-k must be positive, got {args.top_k}")
    device = _usp_device(args.device)
    try:
        sequences = [list(load_sequence(folder, size)) for folder in find_sequences(args.data_dir)]
    except DatasetError as error:
        raise UsageError(str(error)) from None
    methods = _build_methods(names, args, device)
    learned = next((method.detector for method in methods if isinstance(method, LearnedMethod)), None)
    backend, precision = (learned.backend, learned.precision) if learned else (None, None)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    examples = _pick_examples(sequences, VISUALIZED_PAIRS) if args.visualize else set()
    summaries, picked = {}, {}
    for method in methods:
        result = evaluate_method(method, sequences, examples)
        summaries[method.name], picked[method.name] = method_summary(result), result.examples

    num_pairs = sum(len(s) for s in sequences)
    title = f"{Path(args.data_dir).resolve().name}: {num_pairs} pairs at {size[0]}x{size[1]}, top-{args.top_k}"
    print(f"{title} (device {device}{f', backend {backend}, precision {precision}' if backend else ''})\n")
    print(overall_table(summaries))
    print("\nPer sequence:\n")
    print(sequence_table(summaries))
    nms = next((method.detector.config.nms_radius for method in methods if isinstance(method, LearnedMethod)), None)
    _write_outputs(args, summaries, picked, title, _settings(args, sequences, size, device, (backend, precision), nms,
                                                                  names))
    return 0


def _settings(args, sequences, size, device, runtime, nms_radius, names) -> dict:
    """How the run was made, stored beside the numbers in the JSON."""
    return {
        "data_dir": str(Path(args.data_dir).resolve()),
        "resolution": list(size),
        "top_k": args.top_k,
        "device": device,
        "backend": runtime[0],
        "precision": runtime[1],
        "nms_radius": nms_radius,
        "weights": {name: _weights(args, name) or LEARNED[name] for name in names if name in LEARNED},
        "adaptation_warps": args.adaptation_warps if "superpoint-ha" in names else None,
        "pairs": {s[0].sequence: len(s) for s in sequences if s},
        "opencv": cv2.__version__,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _write_outputs(args, summaries: dict, picked: dict, title: str, settings: dict) -> None:
    """JSON, plot and match pictures, each only when asked for; an unwritable path is a UsageError."""
    jobs = []
    if args.json:
        jobs.append((args.json, lambda: write_bytes_atomic(args.json, results_json(summaries, settings).encode())))
    if args.plot:
        jobs.append((args.plot, lambda: save_summary_plot(args.plot, summaries, title)))
    if args.visualize:
        jobs.append((args.visualize, lambda: [save_match_images(args.visualize, n, e) for n, e in picked.items()]))
    for path, job in jobs:
        try:
            job()
        except OSError as error:
            raise UsageError(f"cannot write {path}: {error.strerror or error}") from None
        logger.info("wrote %s", path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of usp-eval; returns the exit status (2 on bad input, with one line on stderr)."""
    try:
        return run(build_parser().parse_args(argv))
    except UsageError as error:
        print(f"usp-eval: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

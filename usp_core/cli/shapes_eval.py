"""``usp-shapes-eval``: MagicPoint vs FAST, Harris and Shi-Tomasi on held-out Synthetic Shapes (SuperPoint, Table 2).

    usp-shapes-eval --weights CKPT_OR_NAME [--images 500] [--seed 1000000] [--size 120x160] [--noise]
                    [--threshold 0.015] [--nms-radius 4] [--border 4] [--json FILE] [--device cpu]
                    [--num-threads N]

Renders --images images with seeds --seed, --seed + 1, ... (training draws its render seeds from
a separate 62-bit stream, so these are held out), and prints one Markdown table, method |
precision | recall | mAP | points/image, then the settings. The protocol (4 px matching, greedy by
score; pooled step-wise average precision; the operating points: MagicPoint at --threshold, each
classical detector at its max-F1 threshold) is in usp_core.evaluation.shapes. --noise blurs each
render (Gaussian, sigma 1 px) and adds Gaussian pixel noise (sigma 10 grey levels), seeded per image.

Bad input (unreadable checkpoint, one without a heatmap such as UnsuperPoint's, a bad --size,
--images < 1, ...) prints one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import torch

from usp_core.cli.train import OneLineParser
from usp_core.evaluation.report import markdown_table
from usp_core.evaluation.shapes import (CLASSICAL, MATCH_DISTANCE, NOISE_BLUR_SIGMA, NOISE_STD, classical_maps,
                                        evaluate_maps, network_heatmaps, render_set, summarize)
from usp_core.inference.weights import load_network, resolve_weights
from usp_core.models.superpoint import CELL, SuperPoint
from usp_core.support.atomic import write_bytes_atomic
from usp_core.support.checkpoint import CheckpointError
from usp_core.support.device import resolve_device
from usp_core.support.errors import first_line

PROG = "usp-shapes-eval"
BATCH_SIZE = 16  # images per network call
MIN_SIDE = 32  # px: the renderer's smallest image side
NETWORK = "MagicPoint"


class UsageError(Exception):
    """Bad input; the message is the one line shown to the user."""


def build_parser() -> argparse.ArgumentParser:
    """The usp-shapes-eval argument parser."""
    parser = OneLineParser(prog=PROG, description="Precision, recall and mAP of MagicPoint and FAST / Harris / "
                           "Shi-Tomasi on held-out Synthetic Shapes renders.")
    parser.add_argument("--weights", required=True, help="MagicPoint/SuperPoint checkpoint, or a shipped model's name")
    parser.add_argument("--images", type=int, default=500, help="renders evaluated (default 500)")
    parser.add_argument("--seed", type=int, default=1_000_000, help="seed of the first render (default 1000000)")
    parser.add_argument("--size", default="120x160", help="render size HxW, multiples of 8, each >= 32 "
                        "(default 120x160)")
    parser.add_argument("--noise", action="store_true", help=f"blur (sigma {NOISE_BLUR_SIGMA:g} px) and add Gaussian "
                        f"noise (sigma {NOISE_STD:g} grey levels) to every render")
    parser.add_argument("--threshold", type=float, default=0.015,
                        help="MagicPoint's heatmap threshold for precision/recall (default 0.015)")
    parser.add_argument("--nms-radius", type=int, default=4, help="NMS radius of every method, px (default 4)")
    parser.add_argument("--border", type=int, default=4, help="px at each edge where no point is evaluated (default 4)")
    parser.add_argument("--json", type=Path, default=None, help="write every number and the settings to this file")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--num-threads", type=int, default=0, help="CPU threads for torch (0: torch's default; 1 is "
                        "much faster on a CPU busy with other work)")
    return parser


def parse_size(text: str) -> tuple[int, int]:
    """'120x160' -> (120, 160) (height, width); UsageError unless both are multiples of 8 and >= MIN_SIDE."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"bad --size {text!r}: expected HxW such as 120x160")
    size = (int(parts[0]), int(parts[1]))
    if min(size) < MIN_SIDE or size[0] % CELL or size[1] % CELL:
        raise UsageError(f"bad --size {text!r}: height and width must be multiples of {CELL} and at least {MIN_SIDE}")
    return size


def check_numbers(args: argparse.Namespace, size: tuple[int, int]) -> None:
    """Raise UsageError naming the first out-of-range number."""
    checks = [(args.images >= 1, f"--images must be >= 1, got {args.images}"),
              (args.seed >= 0, f"--seed must be >= 0, got {args.seed}"),
              (0.0 <= args.threshold <= 1.0, f"--threshold must be in [0, 1], got {args.threshold}"),
              (args.nms_radius >= 0, f"--nms-radius must be >= 0, got {args.nms_radius}"),
              (0 <= args.border and 2 * args.border < min(size),
               f"--border must be >= 0 and leave pixels of a {size[0]}x{size[1]} image, got {args.border}"),
              (args.num_threads >= 0, f"--num-threads must be >= 0, got {args.num_threads}")]
    problem = next((message for ok, message in checks if not ok), None)
    if problem is not None:
        raise UsageError(problem)


def load_detector_network(weights: str, device: torch.device) -> tuple[SuperPoint, Path]:
    """The MagicPoint/SuperPoint of a checkpoint (eval mode, on ``device``) and its path; UsageError otherwise."""
    path = resolve_weights(weights)
    try:
        return load_network(path, device, architecture="superpoint"), path
    except CheckpointError as error:
        raise UsageError(first_line(error)) from None


def evaluate(args: argparse.Namespace, model: SuperPoint, size: tuple[int, int], device: torch.device) -> dict:
    """{method: summary} for MagicPoint and each classical detector on the renders of ``args``."""
    images, truths = render_set(args.images, args.seed, size, noise=args.noise)
    decode = {"radius": args.nms_radius, "border": args.border}
    heatmaps = network_heatmaps(model.heatmap, images, device, BATCH_SIZE)
    results = {NETWORK: summarize(evaluate_maps(heatmaps, truths, **decode), threshold=args.threshold)}
    for name, detector in CLASSICAL.items():
        results[name] = summarize(evaluate_maps(classical_maps(detector, images), truths, **decode))
    return results


def results_table(results: dict) -> str:
    """Markdown: method | precision | recall | mAP | points/image."""
    def cell(value, fmt: str = "{:.3f}") -> str:
        return "-" if value is None else fmt.format(value)

    rows = [[name, cell(s["precision"]), cell(s["recall"]), cell(s["map"]), cell(s["points_per_image"], "{:.1f}")]
            for name, s in results.items()]
    return markdown_table(["Method", "Precision", "Recall", "mAP", "Points/image"], rows)


def settings_line(args: argparse.Namespace, size: tuple[int, int], results: dict, weights: Path, seconds: float) -> str:
    """One line saying how the numbers were made."""
    truth = results[NETWORK]["ground_truth_points"]
    classical = ", ".join(f"{name} {results[name]['threshold']:.3g}" for name in CLASSICAL)
    last, noise = args.seed + args.images - 1, "on" if args.noise else "off"
    return (f"{args.images} Synthetic Shapes renders {size[0]}x{size[1]} (seeds {args.seed}-{last}, noise {noise}), "
            f"{truth} ground-truth points; correct within {MATCH_DISTANCE:g} px; NMS radius {args.nms_radius}, "
            f"border {args.border}; precision/recall at {NETWORK} heatmap >= {args.threshold:g}, classical at "
            f"max-F1 ({classical} of each image's max response); mAP = step-wise average precision over every "
            f"NMS maximum; weights {weights}; device {args.device}; {seconds:.1f} s")


def settings(args: argparse.Namespace, size: tuple[int, int], weights: Path, device: torch.device) -> dict:
    """The run's settings, stored beside the numbers in the JSON."""
    return {"weights": str(weights), "images": args.images, "seed": args.seed, "size": list(size),
            "noise": args.noise, "threshold": args.threshold, "nms_radius": args.nms_radius, "border": args.border,
            "match_distance": MATCH_DISTANCE, "device": str(device), "opencv": cv2.__version__,
            "torch": torch.__version__}


def run(args: argparse.Namespace) -> int:
    """Validate, evaluate, print the table and the settings, write the JSON when asked."""
    size = parse_size(args.size)
    check_numbers(args, size)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    model, weights = load_detector_network(args.weights, device)
    started = time.monotonic()
    results = evaluate(args, model, size, device)
    print(results_table(results))
    print()
    print(settings_line(args, size, results, weights, time.monotonic() - started))
    if args.json is not None:
        text = json.dumps({"settings": settings(args, size, weights, device), "methods": results}, indent=2)
        try:
            write_bytes_atomic(args.json, (text + "\n").encode())
        except OSError as error:
            raise UsageError(f"cannot write {args.json}: {error.strerror or error}") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of usp-shapes-eval; returns the exit status (2 on bad input, with one line on stderr)."""
    try:
        return run(build_parser().parse_args(argv))
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

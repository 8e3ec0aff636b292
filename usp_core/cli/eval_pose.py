"""usp-eval-pose: relative-pose accuracy of keypoint methods on real sequences with ground truth.

    usp-eval-pose SEQ [SEQ ...] [--methods usp,superpoint,orb,sift,akaze] [--gaps 1,3] [--top-k 1000]
                  [--model essential] [--estimator ransac] [--threshold 1.0] [--refine lm] [--ratio-test 0]
                  [--weights CKPT] [--superpoint-weights CKPT] [--device D] [--backend auto] [--precision auto]
                  [--calibration DIR] [--json FILE]

Each SEQ is a folder of frames with camera.yaml and groundtruth.txt (TUM) or poses.txt (KITTI)
(usp_core.evaluation.pose). Features at each frame's own size, the matcher node's matching and geometry
(usp_core.geometry.tracking.match_frames); one Markdown table for the whole run, a row per sequence, gap and method.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import sys
from pathlib import Path

import cv2
import torch

from usp_core.cli.eval import UsageError, _build_methods, _Parser, _usp_device, parse_methods
from usp_core.evaluation.output import results_json
from usp_core.evaluation.pose import PoseDataError, evaluate_pairs, load_pose_sequence, summarize
from usp_core.evaluation.report import _cell, markdown_table
from usp_core.geometry.tracking import MatchConfig
from usp_core.geometry.two_view import ESTIMATORS, MODELS, REFINEMENTS
from usp_core.inference.backends import BACKENDS
from usp_core.inference.precision import PRECISIONS
from usp_core.support.atomic import write_bytes_atomic

logger = logging.getLogger("usp_core.eval_pose")

COLUMNS = (
    ("AUC@5", lambda s: s["auc"]["5"], "{:.1f}"),
    ("AUC@10", lambda s: s["auc"]["10"], "{:.1f}"),
    ("AUC@20", lambda s: s["auc"]["20"], "{:.1f}"),
    ("rot AUC@5", lambda s: s["rotation_auc_5"], "{:.1f}"),
    ("med. rot (deg)", lambda s: s["median_rotation_error"], "{:.2f}"),
    ("med. trans (deg)", lambda s: s["median_translation_error"], "{:.2f}"),
    ("med. inliers", lambda s: s["median_inliers"], "{:.0f}"),
    ("failed", lambda s: s["failed"], "{:d}"),
)


def build_parser() -> argparse.ArgumentParser:
    """The usp-eval-pose argument parser."""
    parser = _Parser(prog="usp-eval-pose", description="Relative-pose AUC of keypoint methods on sequences with "
                     "ground truth (SuperGlue's protocol).")
    parser.add_argument("sequences", metavar="SEQ", nargs="+", type=Path,
                        help="folder of frames with camera.yaml and groundtruth.txt (TUM) or poses.txt (KITTI)")
    parser.add_argument("--methods", default="usp,superpoint,orb,sift,akaze", help="comma-separated methods, as "
                        "usp-eval's (default: usp,superpoint,orb,sift,akaze)")
    parser.add_argument("--gaps", default="1,3", help="frame gaps of the pairs, comma-separated (default 1,3)")
    parser.add_argument("--top-k", type=int, default=1000, help="keypoints kept per frame (default 1000)")
    parser.add_argument("--model", choices=MODELS, default="essential", help="geometry (default essential)")
    parser.add_argument("--estimator", choices=tuple(ESTIMATORS), default="ransac",
                        help="robust estimator (default ransac)")
    parser.add_argument("--threshold", type=float, default=1.0, help="inlier threshold in pixels (default 1.0)")
    parser.add_argument("--refine", choices=REFINEMENTS, default="lm",
                        help="essential: LM refinement of R, t on the inliers (default lm)")
    parser.add_argument("--ratio-test", type=float, default=0.0, help="Lowe's ratio both ways, 0 = off (default)")
    parser.add_argument("--min-inliers", type=int, default=15, help="fewer inliers: no pose (default 15)")
    parser.add_argument("--weights", default=None, help="usp: checkpoint or bundled name (default: unsuperpoint)")
    parser.add_argument("--superpoint-weights", default=None, help="superpoint: checkpoint or bundled name")
    parser.add_argument("--adaptation-warps", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--nms-radius", type=int, default=None, help="usp: NMS radius (default: the detector's)")
    parser.add_argument("--device", default=None, help="torch device for the networks (default: cuda if available)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend of the networks")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="what the networks compute in (default auto: the fastest their weights' gate passed)")
    parser.add_argument("--calibration", default=None, help="precision int8: folder of calibration photos")
    parser.add_argument("--json", type=Path, default=None, help="write every number (and every pair) to this file")
    return parser


def parse_gaps(text: str) -> list[int]:
    """'1,3' -> [1, 3]; UsageError unless positive integers."""
    try:
        gaps = list(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise UsageError(f"bad --gaps {text!r}: expected positive integers such as 1,3") from None
    if not gaps or min(gaps) < 1:
        raise UsageError(f"bad --gaps {text!r}: expected positive integers such as 1,3")
    return gaps


def match_config(args: argparse.Namespace) -> MatchConfig:
    """The matcher settings of the run; UsageError naming a bad one."""
    try:
        return MatchConfig(args.ratio_test, args.estimator, args.threshold, args.min_inliers, args.model, args.refine)
    except ValueError as error:
        raise UsageError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    """Validate the input, evaluate every method on every sequence, print the table, write the JSON."""
    names, gaps, config = parse_methods(args.methods), parse_gaps(args.gaps), match_config(args)
    if args.top_k < 1:
        raise UsageError(f"--top-k must be positive, got {args.top_k}")
    try:
        sequences = [load_pose_sequence(folder) for folder in args.sequences]
    except PoseDataError as error:
        raise UsageError(str(error)) from None
    device = _usp_device(args.device)
    methods = _build_methods(names, args, device)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    results = {}
    for sequence in sequences:
        for method in methods:
            logger.info("%s: %s", sequence.name, method.name)
            try:
                pairs, seconds = evaluate_pairs(method, sequence, gaps, config)
            except PoseDataError as error:
                raise UsageError(str(error)) from None
            for gap in gaps:
                summary = summarize([p for p in pairs if p.gap == gap])
                summary["ms_per_frame"] = 1000.0 * seconds
                summary["pair_errors"] = [[p.i, p.j, p.rotation_error, p.translation_error, p.num_inliers, p.model]
                                          for p in pairs if p.gap == gap]
                results[f"{sequence.name}/gap{gap}/{method.name}"] = summary
    print(f"relative pose, top-{args.top_k}, {config.model} ({config.method}, {config.reprojection_threshold:g} px, "
          f"refine {config.refine}), device {device}\n")
    print(pose_table(results))
    if args.json:
        _write_json(args, results, config, sequences, device)
    return 0


def pose_table(results: dict) -> str:
    """One Markdown row per "sequence/gapN/method" summary."""
    header = ["Sequence", "Gap", "Method", *(name for name, _, _ in COLUMNS)]
    rows = []
    for key, summary in results.items():
        sequence, gap, method = key.split("/")
        rows.append([sequence, gap[3:], method, *(_cell(get(summary), fmt) for _, get, fmt in COLUMNS)])
    return markdown_table(header, rows)


def _write_json(args, results: dict, config: MatchConfig, sequences, device: str) -> None:
    settings = {
        "sequences": [str(s.frames[0].parent) for s in sequences],
        "gaps": args.gaps, "top_k": args.top_k, "model": config.model, "estimator": config.method,
        "threshold_px": config.reprojection_threshold, "refine": config.refine, "ratio_test": config.ratio_test,
        "min_inliers": config.min_inliers, "device": device, "opencv": cv2.__version__, "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        write_bytes_atomic(args.json, results_json(results, settings).encode())
    except OSError as error:
        raise UsageError(f"cannot write {args.json}: {error.strerror or error}") from None
    logger.info("wrote %s", args.json)


def main(argv: list[str] | None = None) -> int:
    """Entry point of usp-eval-pose; returns the exit status (2 on bad input, with one line on stderr)."""
    try:
        return run(build_parser().parse_args(argv))
    except UsageError as error:
        print(f"usp-eval-pose: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

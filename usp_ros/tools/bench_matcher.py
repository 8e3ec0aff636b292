"""Benchmark: matcher ms per frame (matching + homography) beside OpenCV BFMatcher(crossCheck) + findHomography.

    python -m usp_ros.tools.bench_matcher [--keypoints 1000] [--dim 256] [--frames 50] [--device cpu] [--threads 1]
    python -m usp_ros.tools.bench_matcher --images ../shared/data/sequences/tum_fr2 --model-path CKPT

Both sides get the same descriptors in the same run. By default a synthetic sequence in which each frame keeps
a share of the previous frame's keypoints, moved by a known homography with pixel noise and with
noisy descriptors (cosine about 0.85 to their match, as learned descriptors of true matches), and
fills the rest with new points; with ``--images`` the detector's keypoints and descriptors of a folder of
consecutive frames (no ground truth: valid estimates are counted instead). Ours is the node's code,
usp_core.geometry.tracking.Frame.from_features + match_frames (torch mutual nearest neighbours + cv2.findHomography
RANSAC); OpenCV's is cv2.BFMatcher(NORM_L2, crossCheck=True).match + cv2.findHomography(RANSAC) with
the same threshold. Also prints the homography corner error of both against the truth, so a fast wrong
answer shows.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from usp_core.evaluation.metrics import corner_error
from usp_core.geometry.tracking import Frame, MatchConfig, match_frames
from usp_core.inference.detector import DetectorConfig, KeypointDetector
from usp_core.synthetic.sequence import SyntheticFrame, synthetic_sequence

__all__ = ["detected_frames", "main"]


def _ours(reference: SyntheticFrame, current: SyntheticFrame, size: tuple[int, int], config: MatchConfig,
          device: torch.device):
    """The node's path: Frame.from_features (finite rows, descriptors to the device), match_frames; returns the
    homography or None."""
    frame_a = Frame.from_features(0, reference.features(size), device)
    frame_b = Frame.from_features(1, current.features(size), device)
    return match_frames(frame_a, frame_b, config).homography


def _opencv(reference: SyntheticFrame, current: SyntheticFrame, config: MatchConfig):
    """cv2.BFMatcher(NORM_L2, crossCheck=True) + cv2.findHomography(RANSAC); the homography or None."""
    matches = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(reference.descriptors, current.descriptors)
    if len(matches) < 4:
        return None
    points_a = reference.keypoints[[m.queryIdx for m in matches]]
    points_b = current.keypoints[[m.trainIdx for m in matches]]
    homography, _ = cv2.findHomography(points_a, points_b, cv2.RANSAC, config.reprojection_threshold)
    return homography


def _time(function, pairs, repeats: int) -> tuple[list[float], list]:
    """Per-call milliseconds of function(reference, current) over all pairs, ``repeats`` times; and its results."""
    times, results = [], []
    for _ in range(repeats):
        for reference, current in pairs:
            started = time.perf_counter()
            result = function(reference, current)
            times.append(1000.0 * (time.perf_counter() - started))
            results.append(result)
    return times, results


def _quality(results, pairs, size: tuple[int, int]) -> str:
    """Share of corner errors <= 3 px against the truth, or of valid estimates when there is no truth."""
    truths = [current.homography for _, current in pairs] * (len(results) // len(pairs))
    if any(truth is None for truth in truths):
        return f"valid estimates: {np.mean([h is not None for h in results]):.0%}"
    errors = np.array([corner_error(h, t, (size[1], size[0])) for h, t in zip(results, truths)])
    return f"corner error <= 3 px: {np.mean(errors <= 3.0):.0%}"


def detected_frames(folder: Path, model_path: Path, keypoints: int) -> tuple[list[SyntheticFrame], tuple[int, int]]:
    """The detector's features of every image in ``folder`` (sorted by name), and the (w, h) of the first."""
    detector = KeypointDetector.from_pretrained(model_path, config=DetectorConfig(max_keypoints=keypoints))
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    frames, size = [], None
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        size = size or (image.shape[1], image.shape[0])
        (features,) = detector.detect(image)
        frames.append(SyntheticFrame(features.keypoints, features.scores, features.descriptors, None))
    return frames, size


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m usp_ros.tools.bench_matcher", description=__doc__.split("\n")[0])
    parser.add_argument("--keypoints", type=int, default=1000, help="keypoints per frame (default 1000)")
    parser.add_argument("--dim", type=int, default=256, help="descriptor length (default 256)")
    parser.add_argument("--frames", type=int, default=50, help="frames in the synthetic sequence (default 50)")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the sequence (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device for our matcher (default cpu)")
    parser.add_argument("--images", type=Path, help="folder of consecutive frames to detect in (needs --model-path)")
    parser.add_argument("--model-path", type=Path, help="detector checkpoint for --images")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads, 0 = torch's default (default 1, as the matcher node)")
    args = parser.parse_args(argv)
    if args.keypoints < 8 or args.dim < 1 or args.frames < 2 or args.repeats < 1:
        parser.error("need --keypoints >= 8, --dim >= 1, --frames >= 2, --repeats >= 1")
    if args.images is not None and (not args.images.is_dir() or args.model_path is None
                                    or not args.model_path.is_file()):
        parser.error("--images needs an existing folder and --model-path an existing checkpoint")
    return args


def main(argv=None) -> int:
    args = _parse(argv)
    try:
        device = torch.device(args.device)
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as error:
        print(f"bench_matcher: device {args.device!r} is not usable: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    config = MatchConfig()
    if args.images is None:
        size = (640, 480)
        sequence = synthetic_sequence(args.frames, args.keypoints, args.dim, size)
        source = "synthetic frames with known homographies"
    else:
        sequence, size = detected_frames(args.images, args.model_path, args.keypoints)
        source = f"detector features of {args.images.name} ({args.model_path.name})"
    pairs = list(zip(sequence[:-1], sequence[1:]))
    _time(lambda a, b: _ours(a, b, size, config, device), pairs[:3], 1)  # warm-up (allocations, CUDA context)
    _time(lambda a, b: _opencv(a, b, config), pairs[:3], 1)
    ours_ms, ours = _time(lambda a, b: _ours(a, b, size, config, device), pairs, args.repeats)
    opencv_ms, opencv = _time(lambda a, b: _opencv(a, b, config), pairs, args.repeats)
    ours_median, opencv_median = statistics.median(ours_ms), statistics.median(opencv_ms)
    count, dim = sequence[0].descriptors.shape
    print(f"matcher benchmark: {count} keypoints x {dim} float32 descriptors per frame, {len(pairs)} pairs x "
          f"{args.repeats} of {source}, {size[0]}x{size[1]}; "
          f"torch {torch.__version__} on {device} ({torch.get_num_threads()} threads), OpenCV {cv2.__version__}")
    for name, times, results in (("usp_ros matcher (torch MNN + RANSAC)", ours_ms, ours),
                                 ("OpenCV BFMatcher(L2, crossCheck) + findHomography", opencv_ms, opencv)):
        print(f"  {name:52s} median {statistics.median(times):7.2f} ms  mean {statistics.fmean(times):7.2f} ms  "
              f"{_quality(results, pairs, size)}")
    print(f"  ratio OpenCV / ours (median): {opencv_median / ours_median:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

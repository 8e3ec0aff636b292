"""``usp-bench``: training and inference speed of our networks beside OpenCV SIFT and ORB, in one run.

    usp-bench [--images DIR] [--weights CKPT] [--device cpu|cuda|all] [--backends torch,openvino,...]
              [--precisions fp32,auto] [--calibration DIR] [--threads N] [--iterations N] [--train-steps N]
              [--batch-size N]

Inference is ``KeypointDetector.detect`` on one grey uint8 image (network, point selection,
descriptors), at 240x320 with 300 points and 480x640 with 1000, in each inference backend available
on the device (usp_core.inference.backends; default: all) and each precision it runs of ``--precisions``
(usp_core.inference.precision; ``auto`` shown as what it resolves to, int8 calibrated on ``--calibration``),
beside ``detectAndCompute`` of SIFT and ORB asked
for the same number of points, on the same images resized the same way. The methods are timed in
turns, one pass over the images each, so that a change of machine load hits all of them alike; the
ratios to SIFT and ORB are the figures to compare between machines. Weights: --weights, else the
bundled ones (the default path of the detector node and of ``KeypointDetector.from_pretrained``).
Training is full ``Trainer.train_step``s of the default (full-width) model, random weights (both
branches, loss, backward, AdamW) on siamese pairs at 240x320; its SIFT/ORB columns give, for scale,
how many images per second each extracts at that size. OpenCV always runs on the CPU. Images:
--images, else ../shared/data/eval when present, else a generated texture.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from usp_core.cli.train import OneLineParser
from usp_core.geometry.homography import sample_homography, warp_image
from usp_core.inference.backends.base import BACKENDS, BackendError
from usp_core.inference.detector import DetectorConfig, KeypointDetector
from usp_core.inference.precision import PRECISIONS
from usp_core.inference.weights import resolve_weights, shipped_models
from usp_core.support.checkpoint import CheckpointError
from usp_core.support.image_files import IMAGE_EXTENSIONS
from usp_core.training.config import TrainConfig
from usp_core.training.data import PhotometricConfig, apply_photometric
from usp_core.training.trainer import Trainer

logger = logging.getLogger("usp_core.bench")

SIZES = ((240, 320, 300), (480, 640, 1000))  # (height, width, keypoints), the evaluation settings
TRAIN_SIZE = (240, 320)
MAX_IMAGES = 8


@dataclass
class Row:
    """One line of the table: the model's figure beside SIFT's and ORB's, in the same unit."""

    device: str
    backend: str
    task: str
    size: str
    model: float
    sift: float
    orb: float


def default_image_dirs() -> list[Path]:
    """Where evaluation photos are looked for: ../shared/data/eval beside the cwd and beside the repository."""
    repo = Path(__file__).resolve().parents[2]
    return [Path.cwd().parent / "shared" / "data" / "eval", repo.parent / "shared" / "data" / "eval"]


def load_images(folder: Path | None) -> tuple[list[np.ndarray], str]:
    """Up to MAX_IMAGES grey uint8 photos (one per sequence when possible) and a description of the source."""
    candidates = [folder] if folder is not None else default_image_dirs()
    for root in candidates:
        if root is None or not root.is_dir():
            continue
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        firsts = [p for p in paths if p.stem == "1"] or paths
        images = [img for img in (cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in firsts[:MAX_IMAGES])
                  if img is not None]
        if images:
            return images, f"{len(images)} photos from {root}"
    return [_texture()], "a generated texture (no photos found)"


def _texture(height: int = 480, width: int = 640) -> np.ndarray:
    """A deterministic grey image with blobs and edges at several scales."""
    rng = np.random.default_rng(0)
    image = np.zeros((height, width), np.float32)
    for sigma in (1.0, 3.0, 8.0):
        image += cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), sigma) * sigma
    for _ in range(40):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        cv2.circle(image, (x, y), int(rng.integers(5, 40)), float(rng.random() * 10), -1)
    return cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def timed_in_turns(methods: dict[str, Callable[[np.ndarray], object]], images: list[np.ndarray], passes: int,
                   sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Mean seconds per image of each method: ``passes`` rounds, each timing one pass over ``images`` per
    method in turn (after one untimed warm-up call each); ``sync`` ends every timed pass (CUDA)."""
    for method in methods.values():
        method(images[0])
    sync()
    totals = dict.fromkeys(methods, 0.0)
    for _ in range(passes):
        for name, method in methods.items():
            start = time.perf_counter()
            for image in images:
                method(image)
            sync()
            totals[name] += time.perf_counter() - start
    return {name: total / (passes * len(images)) for name, total in totals.items()}


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def opencv_methods(keypoints: int) -> dict[str, Callable[[np.ndarray], object]]:
    """SIFT and ORB detectAndCompute, asked for ``keypoints`` points."""
    sift = cv2.SIFT_create(nfeatures=keypoints)
    orb = cv2.ORB_create(nfeatures=keypoints)
    return {"sift": lambda im: sift.detectAndCompute(im, None), "orb": lambda im: orb.detectAndCompute(im, None)}


def inference_rows(images: list[np.ndarray], device: torch.device, backends: list[str], weights: Path | None,
                   threads: int, passes: int, precisions: list[str], calibration: Path | None) -> list[Row]:
    """ms/image of the detector in each backend and precision at each evaluation size, beside SIFT and ORB (timed
    in turns).

    Each detector is loaded and prepared once; a backend whose runtime is not installed, or a precision it
    does not run here, is skipped with a log line saying so; a precision that resolves to one already timed
    is not timed twice.
    """
    detectors = {}
    for backend, precision in itertools.product(backends, precisions):
        config = DetectorConfig(precision=precision, calibration_dir=str(calibration or ""))
        detector = KeypointDetector.from_pretrained(weights, device, config, backend=backend, num_threads=threads)
        start = time.perf_counter()
        try:
            label = f"{detector.prepare()} {detector.precision}"
        except BackendError as error:
            logger.warning("skipping backend %s in precision %s: %s", backend, precision, error)
            continue
        logger.info("%s ready in %.1f s", label, time.perf_counter() - start)
        detectors.setdefault(label, detector)
    rows = []
    for height, width, keypoints in SIZES:
        resized = [cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA) for im in images]
        for detector in detectors.values():
            detector.config = dataclasses.replace(detector.config, max_keypoints=keypoints)
        methods = {**opencv_methods(keypoints), **{name: d.detect for name, d in detectors.items()}}
        seconds = timed_in_turns(methods, resized, passes, _sync(device))
        for label in detectors:
            rows.append(Row(device.type, label, f"inference ms/image (top-{keypoints})", f"{height}x{width}",
                            seconds[label] * 1e3, seconds["sift"] * 1e3, seconds["orb"] * 1e3))
    return rows


def _pairs(images: list[np.ndarray], batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training batch (image_a, image_b, H_ab) at TRAIN_SIZE from the photos, as the dataset makes them."""
    height, width = TRAIN_SIZE
    generator = torch.Generator().manual_seed(seed)
    crops, warped, homographies = [], [], []
    for index in range(batch_size):
        photo = cv2.resize(images[index % len(images)], (width, height), interpolation=cv2.INTER_AREA)
        image_a = torch.from_numpy(photo).float()[None] / 255
        h_ab = sample_homography(height, width, generator=generator)
        image_b = warp_image(image_a[None], h_ab[None])[0]
        crops.append(apply_photometric(image_a, PhotometricConfig(), generator))
        warped.append(apply_photometric(image_b, PhotometricConfig(), generator))
        homographies.append(h_ab)
    return torch.stack(crops), torch.stack(warped), torch.stack(homographies)


def training_row(images: list[np.ndarray], device: torch.device, steps: int, batch_size: int) -> Row:
    """Training samples/s (pairs per second) at TRAIN_SIZE; SIFT/ORB columns: images/s they extract there."""
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(TrainConfig(batch_size=batch_size), out, device=device, progress=False)
        batch = _pairs(images, batch_size, seed=0)
        trainer.train_step(batch)
        _sync(device)()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)
        _sync(device)()
        seconds = time.perf_counter() - start
    resized = [cv2.resize(im, TRAIN_SIZE[::-1], interpolation=cv2.INTER_AREA) for im in images]
    opencv = timed_in_turns(opencv_methods(SIZES[0][2]), resized, 1)
    return Row(device.type, "torch", f"training samples/s (batch {batch_size})", "x".join(map(str, TRAIN_SIZE)),
               steps * batch_size / seconds, 1 / opencv["sift"], 1 / opencv["orb"])


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned text table with model/SIFT and model/ORB ratios."""
    header = ("device", "backend", "measure", "size", "network", "SIFT", "ORB", "net/SIFT", "net/ORB")
    lines = [header] + [(r.device, r.backend, r.task, r.size, f"{r.model:.1f}", f"{r.sift:.1f}", f"{r.orb:.1f}",
                         f"{r.model / r.sift:.2f}", f"{r.model / r.orb:.2f}") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="usp-bench", description="Speed of a network (UnsuperPoint or SuperPoint) beside OpenCV "
                           "SIFT and ORB.")
    parser.add_argument("--images", type=Path, help="folder of photos (default: ../shared/data/eval when present)")
    parser.add_argument("--weights", type=resolve_weights,
                        help=f"checkpoint or shipped model name ({', '.join(shipped_models())}) to time "
                        "(default: the bundled weights)")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                        help="where to run the model (default: all = cpu, plus cuda when available)")
    parser.add_argument("--backends", type=_backends, default=list(BACKENDS[1:]),
                        help="comma-separated inference backends (default: every one available on the device)")
    parser.add_argument("--precisions", type=_precisions, default=["fp32", "auto"],
                        help=f"comma-separated, from {','.join(PRECISIONS)} (default fp32,auto)")
    parser.add_argument("--calibration", type=Path, default=None, help="precision int8: folder of calibration photos")
    parser.add_argument("--threads", type=_at_least(0), default=0,
                        help="CPU threads of every backend (default 0: each runtime's default, one per core)")
    parser.add_argument("--iterations", type=_at_least(1), default=3, help="timed passes over the images (default 3)")
    parser.add_argument("--train-steps", type=_at_least(1), default=2,
                        help="timed CPU training steps (default 2; x10 on CUDA)")
    parser.add_argument("--batch-size", type=_at_least(1), default=4, help="CPU training batch (default 4; 16 on CUDA)")
    return parser


def _at_least(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        if not text.strip().lstrip("-").isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {minimum}, got {text!r}")
        return int(text)
    return parse


def _precisions(text: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in PRECISIONS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown precision {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(PRECISIONS)}")
    return names


def _backends(text: str) -> list[str]:
    names = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [name for name in names if name not in BACKENDS[1:]]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown backend {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(BACKENDS[1:])}")
    return names


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="usp-bench: %(message)s", stream=sys.stderr)
    if args.images is not None and not args.images.is_dir():
        print(f"usp-bench: error: image folder {args.images} does not exist", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("usp-bench: error: CUDA was requested but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.weights is not None and not args.weights.is_file():
        print(f"usp-bench: error: no checkpoint at {args.weights}", file=sys.stderr)
        return 2
    images, source = load_images(args.images)
    devices = [torch.device("cpu")] if args.device != "cuda" else []
    if args.device != "cpu" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    gpu = f"; GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(f"usp-bench: {source}; weights {args.weights or 'bundled'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, backend threads {args.threads or 'default'}, "
          f"OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads, {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f}{gpu}", flush=True)
    rows = []
    try:
        for device in devices:
            cuda = device.type == "cuda"
            backends = [name for name in args.backends if name == "torch" or not cuda]
            rows.extend(inference_rows(images, device, backends, args.weights, args.threads,
                                       args.iterations * (10 if cuda else 1), args.precisions, args.calibration))
            rows.append(training_row(images, device, args.train_steps * (10 if cuda else 1),
                                     16 if cuda else args.batch_size))
    except (CheckpointError, BackendError, ValueError) as error:
        print(f"usp-bench: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print("SIFT/ORB: OpenCV on the CPU. Training row: SIFT/ORB give images/s extracted at that size, for scale.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

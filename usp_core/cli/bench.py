"""``usp-bench``: training and inference speed of UnsuperPoint beside OpenCV SIFT and ORB, in one run.

    usp-bench [--images DIR] [--device cpu|cuda|all] [--iterations N] [--train-steps N] [--batch-size N]

Inference is ``KeypointDetector.detect`` on one grey uint8 image (network, top-k, descriptors),
at 240x320 with 300 points and 480x640 with 1000, beside ``detectAndCompute`` of SIFT and ORB
asked for the same number of points, on the same images resized the same way. Training is full
``Trainer.train_step``s (both branches, loss, backward, AdamW) on siamese pairs at 240x320;
its SIFT/ORB columns give, for scale, how many images per second each extracts at that size.
OpenCV always runs on the CPU. Images: --images, else ../shared/data/eval when present, else a
generated texture. Weights are random (speed does not depend on them).
"""
from __future__ import annotations

import argparse
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
from usp_core.config import TrainConfig
from usp_core.data import IMAGE_EXTENSIONS, PhotometricConfig, apply_photometric
from usp_core.homography import sample_homography, warp_image
from usp_core.inference import DetectorConfig, KeypointDetector
from usp_core.model import UnsuperPoint
from usp_core.trainer import Trainer

SIZES = ((240, 320, 300), (480, 640, 1000))  # (height, width, keypoints), the evaluation settings
TRAIN_SIZE = (240, 320)
MAX_IMAGES = 8


@dataclass
class Row:
    """One line of the table: the model's figure beside SIFT's and ORB's, in the same unit."""

    device: str
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


def _per_call_seconds(function: Callable[[np.ndarray], object], images: list[np.ndarray], iterations: int,
                      sync: Callable[[], None] = lambda: None) -> float:
    """Mean seconds per call over ``iterations`` passes of ``images``, after one untimed warm-up call."""
    function(images[0])
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        for image in images:
            function(image)
    sync()
    return (time.perf_counter() - start) / (iterations * len(images))


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def opencv_seconds(images: list[np.ndarray], keypoints: int, iterations: int) -> tuple[float, float]:
    """Seconds per image of SIFT and ORB detectAndCompute, asked for ``keypoints`` points."""
    sift = cv2.SIFT_create(nfeatures=keypoints)
    orb = cv2.ORB_create(nfeatures=keypoints)
    return (_per_call_seconds(lambda im: sift.detectAndCompute(im, None), images, iterations),
            _per_call_seconds(lambda im: orb.detectAndCompute(im, None), images, iterations))


def inference_rows(images: list[np.ndarray], device: torch.device, iterations: int) -> list[Row]:
    """ms/image of the detector at each evaluation size, beside SIFT and ORB."""
    rows = []
    for height, width, keypoints in SIZES:
        resized = [cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA) for im in images]
        detector = KeypointDetector(UnsuperPoint().to(device), DetectorConfig(max_keypoints=keypoints))
        model = _per_call_seconds(detector.detect, resized, iterations, _sync(device))
        sift, orb = opencv_seconds(resized, keypoints, iterations)
        rows.append(Row(device.type, f"inference ms/image (top-{keypoints})", f"{height}x{width}",
                        model * 1e3, sift * 1e3, orb * 1e3))
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
    sift, orb = opencv_seconds(resized, SIZES[0][2], 1)
    return Row(device.type, f"training samples/s (batch {batch_size})", "x".join(map(str, TRAIN_SIZE)),
               steps * batch_size / seconds, 1 / sift, 1 / orb)


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned text table with model/SIFT and model/ORB ratios."""
    header = ("device", "measure", "size", "UnsuperPoint", "SIFT", "ORB", "USP/SIFT", "USP/ORB")
    lines = [header] + [(r.device, r.task, r.size, f"{r.model:.1f}", f"{r.sift:.1f}", f"{r.orb:.1f}",
                         f"{r.model / r.sift:.2f}", f"{r.model / r.orb:.2f}") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="usp-bench", description="UnsuperPoint speed beside OpenCV SIFT and ORB.")
    parser.add_argument("--images", type=Path, help="folder of photos (default: ../shared/data/eval when present)")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                        help="where to run the model (default: all = cpu, plus cuda when available)")
    parser.add_argument("--iterations", type=int, default=1, help="timed passes over the images (default 1)")
    parser.add_argument("--train-steps", type=int, default=2, help="timed CPU training steps (default 2; x10 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=4, help="CPU training batch (default 4; 16 on CUDA)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.images is not None and not args.images.is_dir():
        print(f"usp-bench: error: image folder {args.images} does not exist", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("usp-bench: error: CUDA was requested but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    images, source = load_images(args.images)
    devices = [torch.device("cpu")] if args.device != "cuda" else []
    if args.device != "cpu" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"usp-bench: {source}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads"
          + (f"; GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    rows = []
    for device in devices:
        cuda = device.type == "cuda"
        rows.extend(inference_rows(images, device, args.iterations * (10 if cuda else 1)))
        rows.append(training_row(images, device, args.train_steps * (10 if cuda else 1),
                                 16 if cuda else args.batch_size))
    print(format_table(rows))
    print("SIFT/ORB: OpenCV on the CPU. Training row: SIFT/ORB give images/s extracted at that size, for scale.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

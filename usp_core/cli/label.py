"""``usp-label``: pseudo-ground-truth points for a folder of photos (Homographic Adaptation of MagicPoint/SuperPoint).

    usp-label --weights CKPT_OR_NAME --data DIR --out LABELS_DIR [--warps 100] [--short-side 240]
              [--threshold 0.015] [--nms-radius 4] [--max-points 600] [--device auto] [--seed 0]
              [--num-threads N] [--force]

Per photo of --data (searched recursively, sorted): grey, resized so its shorter side is
--short-side (INTER_AREA when shrinking, INTER_LINEAR when enlarging; 0 keeps the native size),
padded at the bottom and right to a multiple of 8 by reflection (so every pixel of the photo is
labelled and no artificial edge is added), Homographic Adaptation (usp_core.training.homographic_adaptation)
with the network's heatmap, the padding cropped off, NMS decoding (points closer than 4 px to the
resized image's edge dropped), and the points mapped back to the photo's pixels as stored on disk.

Output: ``label_path(OUT, DATA, photo)`` = OUT/<photo's path under DATA>.npz, read by
``usp_core.training.superpoint_data.read_labels`` (the trainer's ``--labels``), holding
``points`` (N, 2) float32 pixel (x, y) in the stored photo (best first), ``scores`` (N,) float32
(the adapted heatmap there), ``image_size`` (2,) int32 (height, width) of the stored photo,
``label_size`` (2,) int32 (height, width) it was labelled at, ``warps`` () int32, and
``weights_sha256`` / ``settings_sha256`` () str. OUT/labels.json records the settings.

Resumable: a photo whose label file loads and carries this run's settings digest is skipped; a
partial or corrupt file is rewritten (every file is written atomically, so an interrupted run
leaves whole files). A rerun into OUT with other settings refuses unless --force, which relabels
every photo. Warps are seeded from (--seed, photo index): a photo's labels are reproducible.
Bad input prints one line on stderr and exits with status 2; Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from usp_core.cli.train import LOG_FORMAT, OneLineParser
from usp_core.inference.weights import load_network, resolve_weights
from usp_core.models.superpoint import CELL, SuperPoint, heatmap_points
from usp_core.support.atomic import atomic_write, remove_stale_temp_files, write_bytes_atomic
from usp_core.support.checkpoint import CheckpointError
from usp_core.support.device import resolve_device
from usp_core.support.errors import first_line
from usp_core.support.image_files import read_grey, resize_image
from usp_core.training.data import ImageFolder, sample_generator
from usp_core.training.homographic_adaptation import AdaptationConfig, homographic_adaptation
from usp_core.training.superpoint_data import LabelError, label_path, read_labels

logger = logging.getLogger("usp_core.label")

SETTINGS_FILE = "labels.json"
BORDER = 4  # px of the resized image's edge where no point is kept (heatmap_points' default)
MIN_SIZE = 16  # px: the smallest short side labelled (two detector cells)
PADDING = "reflect101 bottom/right to a multiple of 8"  # recorded in the settings


class UsageError(Exception):
    """Bad input; the message is the one line shown to the user."""


@dataclasses.dataclass
class Tally:
    """What a run did so far: photos labelled, skipped (already labelled), failed, and their point counts."""

    labelled: int = 0
    skipped: int = 0
    failed: int = 0
    points: int = 0


def build_parser() -> argparse.ArgumentParser:
    """The usp-label argument parser."""
    parser = OneLineParser(prog="usp-label", description="Write pseudo-ground-truth points for a folder of photos "
                           "(Homographic Adaptation of a MagicPoint/SuperPoint checkpoint), for usp-train --labels.")
    parser.add_argument("--weights", required=True, help="MagicPoint/SuperPoint checkpoint, or a shipped model's name")
    parser.add_argument("--data", type=Path, required=True, help="folder of photos, searched recursively")
    parser.add_argument("--out", type=Path, required=True, help="labels folder (usp-train --labels)")
    parser.add_argument("--warps", type=int, default=100, help="warps per photo, the identity included (default 100)")
    parser.add_argument("--short-side", type=int, default=240,
                        help=f"label photos resized to this shorter side, px (0: native size; else >= {MIN_SIZE}; "
                        "default 240)")
    parser.add_argument("--threshold", type=float, default=0.015, help="heatmap detection threshold (default 0.015)")
    parser.add_argument("--nms-radius", type=int, default=4, help="NMS radius, px of the resized photo (default 4)")
    parser.add_argument("--max-points", type=int, default=600, help="best points kept per photo (0: all; default 600)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random warps (default 0)")
    parser.add_argument("--num-threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--force", action="store_true", help="relabel every photo when OUT holds labels made with "
                        "other settings")
    return parser


def check_numbers(args: argparse.Namespace) -> None:
    """Raise UsageError naming the first out-of-range number."""
    checks = [(args.warps >= 1, f"--warps must be >= 1, got {args.warps}"),
              (args.short_side == 0 or args.short_side >= MIN_SIZE,
               f"--short-side must be 0 (native size) or >= {MIN_SIZE}, got {args.short_side}"),
              (0.0 <= args.threshold <= 1.0, f"--threshold must be in [0, 1], got {args.threshold}"),
              (args.nms_radius >= 0, f"--nms-radius must be >= 0, got {args.nms_radius}"),
              (args.max_points >= 0, f"--max-points must be >= 0, got {args.max_points}"),
              (args.seed >= 0, f"--seed must be >= 0, got {args.seed}"),
              (args.num_threads >= 0, f"--num-threads must be >= 0, got {args.num_threads}")]
    problem = next((message for ok, message in checks if not ok), None)
    if problem is not None:
        raise UsageError(problem)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_settings(args: argparse.Namespace, weights: Path, config: AdaptationConfig) -> dict:
    """Everything the labels depend on, JSON-ready (``weights``, the path, is informative only)."""
    settings = {"weights": str(weights.resolve()), "weights_sha256": file_sha256(weights), "warps": args.warps,
                "short_side": args.short_side, "threshold": args.threshold, "nms_radius": args.nms_radius,
                "max_points": args.max_points, "seed": args.seed, "border": BORDER, "padding": PADDING,
                "erosion": config.erosion, "homography": dataclasses.asdict(config.homography)}
    return json.loads(json.dumps(settings))  # tuples -> lists, as they read back


def settings_digest(settings: dict) -> str:
    """SHA-256 of the settings that change labels (all but the weights' path)."""
    relevant = {key: value for key, value in settings.items() if key != "weights"}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def check_settings(out: Path, settings: dict, force: bool) -> None:
    """Refuse (UsageError) when OUT/labels.json records other settings, unless ``force``; then record ours."""
    path = out / SETTINGS_FILE
    if path.is_file() and not force:
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot read {path} ({first_line(error)}); pass --force to relabel") from None
        changed = sorted(key for key in set(settings) | set(previous)
                         if key != "weights" and settings.get(key) != previous.get(key))
        if changed:
            details = ", ".join(f"{key} {previous.get(key)} -> {settings.get(key)}" for key in changed[:3])
            raise UsageError(f"{out} holds labels made with other settings ({details}); pass --force to relabel "
                             "every photo, or choose another --out")
    write_bytes_atomic(path, (json.dumps(settings, indent=2, sort_keys=True) + "\n").encode())


def remove_stale_temp_files_under(out: Path) -> None:
    """Remove what interrupted writes left in OUT and its subfolders."""
    for folder in [out, *sorted(path for path in out.rglob("*") if path.is_dir())]:
        remove_stale_temp_files(folder)


def existing_points(path: Path, digest: str) -> int | None:
    """The point count of a whole label file made with these settings; None when missing, partial, corrupt or other."""
    if not path.is_file():
        return None
    try:
        points = read_labels(path)
        with np.load(path, allow_pickle=False) as data:
            same = str(data["settings_sha256"]) == digest and len(data["scores"]) == len(points)
    except (LabelError, OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    return len(points) if same else None


def prepare(grey: np.ndarray, short_side: int) -> tuple[torch.Tensor, tuple[int, int], tuple[float, float]]:
    """(H, W) uint8 photo -> (image (1, H8, W8) float in [0, 1], labelled size (h, w), scale (sx, sy)).

    Resized so the shorter side is ``short_side`` (0: as is), then padded bottom/right by reflection
    to multiples of 8 (H8, W8). A photo pixel ``x`` is the resized pixel ``(x + 0.5) sx - 0.5``.
    """
    height, width = grey.shape
    if short_side and min(height, width) != short_side:
        factor = short_side / min(height, width)
        grey = resize_image(grey, (max(1, round(height * factor)), max(1, round(width * factor))))
    if min(grey.shape) < MIN_SIZE:
        raise ValueError(f"{width}x{height} px is too small to label (shorter side under {MIN_SIZE} px)")
    h, w = grey.shape
    padded = cv2.copyMakeBorder(grey, 0, -h % CELL, 0, -w % CELL, cv2.BORDER_REFLECT_101)
    return torch.from_numpy(padded).float().div_(255.0)[None], (h, w), (w / width, h / height)


def to_photo(points: np.ndarray, scale: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
    """Points (N, 2) of the resized photo -> (N, 2) float32 pixels of the stored photo of size (H, W),
    clamped to its pixel centres (a point at the resized edge can fall past them when enlarging)."""
    photo = (points.astype(np.float64) + 0.5) / np.asarray(scale) - 0.5
    return np.clip(photo, 0.0, np.asarray([size[1] - 1, size[0] - 1])).astype(np.float32)


def label_photo(heatmap_fn: Callable[[torch.Tensor], torch.Tensor], grey: np.ndarray, args: argparse.Namespace,
                config: AdaptationConfig, generator: torch.Generator, device: torch.device) -> dict[str, np.ndarray]:
    """The label arrays of one photo (H, W) uint8 (see the module docstring), settings digests excluded."""
    image, (h, w), scale = prepare(grey, args.short_side)
    mean, _ = homographic_adaptation(heatmap_fn, image.to(device), config, generator)
    points, scores = heatmap_points(mean[:h, :w].cpu(), radius=args.nms_radius, threshold=args.threshold,
                                    max_points=args.max_points or None, border=BORDER)
    return {"points": to_photo(points, scale, grey.shape), "scores": scores.astype(np.float32),
            "image_size": np.asarray(grey.shape, dtype=np.int32), "label_size": np.asarray((h, w), dtype=np.int32),
            "warps": np.asarray(config.num_warps, dtype=np.int32)}


def write_labels(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez ``arrays`` to ``path`` atomically."""
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def label_all(photos: ImageFolder, args: argparse.Namespace, model: SuperPoint, settings: dict,
              device: torch.device, tally: Tally) -> None:
    """Label every photo not yet labelled with these settings, updating ``tally`` as it goes."""
    config = AdaptationConfig(num_warps=args.warps)
    digest = settings_digest(settings)
    channels = model.config.in_channels

    def heatmap_fn(images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) grey -> (B, 1, H, W) heatmap; grey repeated for a colour network."""
        return model.heatmap(images.expand(-1, channels, -1, -1))

    extra = {"weights_sha256": np.asarray(settings["weights_sha256"]), "settings_sha256": np.asarray(digest)}
    bar = tqdm(photos.paths, desc="label", unit="photo", dynamic_ncols=True, disable=None)  # None: off when not a TTY
    for index, photo in enumerate(bar):
        target = label_path(args.out, photos.root, photo)
        count = existing_points(target, digest)
        if count is None:
            try:
                arrays = label_photo(heatmap_fn, read_grey(photo), args, config,
                                     sample_generator(args.seed, index), device)
            except (OSError, ValueError) as error:
                logger.warning("skipping %s: %s", photo, first_line(error))
                tally.failed += 1
                continue
            write_labels(target, {**arrays, **extra})
            count, tally.labelled = len(arrays["points"]), tally.labelled + 1
        else:
            tally.skipped += 1
        tally.points += count
        bar.set_postfix(points=count)
    bar.close()


def prepare_run(args: argparse.Namespace) -> tuple[ImageFolder, SuperPoint, dict, torch.device]:
    """Check every input, record the settings in OUT: (photos, model, settings, device). Raises UsageError."""
    check_numbers(args)
    try:
        device = resolve_device(args.device)
        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        weights = resolve_weights(args.weights)
        model = load_network(weights, device, architecture="superpoint")
        photos = ImageFolder(args.data)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        raise UsageError(first_line(error)) from None
    settings = run_settings(args, weights, AdaptationConfig(num_warps=args.warps))
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files_under(args.out)
        check_settings(args.out, settings, args.force)
    except OSError as error:
        raise UsageError(f"cannot write to {args.out}: {first_line(error)}") from None
    return photos, model, settings, device


def summary(tally: Tally, seconds: float, out: Path) -> str:
    """The final one-line report."""
    photos = tally.labelled + tally.skipped
    mean = f"{tally.points / photos:.1f}" if photos else "-"
    per_photo = f" ({seconds / tally.labelled:.2f} s per labelled photo)" if tally.labelled else ""
    failed = f", {tally.failed} failed" if tally.failed else ""
    return (f"usp-label: labelled {tally.labelled} photos, skipped {tally.skipped} (already labelled){failed}; "
            f"mean {mean} points per photo; {seconds:.1f} s{per_photo}; labels in {out}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("usp_core").setLevel(logging.INFO)
    try:
        photos, model, settings, device = prepare_run(args)
    except UsageError as error:
        print(f"usp-label: error: {error}", file=sys.stderr)
        return 2
    tally, started = Tally(), time.monotonic()
    try:
        with logging_redirect_tqdm():
            label_all(photos, args, model, settings, device, tally)
    except KeyboardInterrupt:
        print(f"usp-label: interrupted after labelling {tally.labelled} photos; every label file in {args.out} is "
              "whole: rerun the same command to resume", file=sys.stderr)
        return 130
    print(summary(tally, time.monotonic() - started, args.out))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())

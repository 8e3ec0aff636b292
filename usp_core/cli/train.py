"""``usp-train``: train a network per a config's task: UnsuperPoint, MagicPoint or SuperPoint.

    usp-train [--config FILE] [--set KEY=VALUE ...] [--data DIR] [--labels DIR] --out DIR [--steps N]
              [--batch-size N] [--device cpu|cuda|auto] [--resume CKPT | --init CKPT|NAME] [--campaign FILE]
              [--time-limit SECONDS] [--num-workers N]

A campaign (``--campaign FILE``) is one run continued over many sessions: the first starts it
(``--init`` or from scratch), each later one resumes from FILE, which every ``last.pt`` also updates in
compact form (small enough to commit); the same command serves every session.

Tasks (``task:`` in the config): unsuperpoint (self-supervised, photos of --data), magicpoint
(Synthetic Shapes, rendered: no photos), superpoint (photos of --data with the pseudo-labels that
``usp-label`` wrote to --labels).

Multi-GPU: ``torchrun --nproc_per_node=N -m usp_core.cli.train ...`` (one process per GPU).
Bad input (missing or empty data folder, bad config, unreadable checkpoint) prints one line on
stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from pathlib import Path

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from usp_core.inference.weights import resolve_weights
from usp_core.support.checkpoint import CheckpointError, load_checkpoint
from usp_core.support.errors import first_line
from usp_core.training.config import ConfigError, TrainConfig, from_dict, load_config, with_overrides
from usp_core.training.trainer import Trainer, cleanup_distributed, setup_distributed

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit status 2), without the usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="usp-train", description="Train UnsuperPoint, MagicPoint or SuperPoint "
                          "(the config's task).")
    parser.add_argument("--config", type=Path, help="YAML training config (default: built-in defaults, "
                        "or the checkpoint's config with --resume)")
    parser.add_argument("--data", type=Path, help="folder of training photos, searched recursively "
                        "(overrides data_dir of the config)")
    parser.add_argument("--labels", type=Path, help="superpoint: folder of pseudo-labels for --data, written by "
                        "usp-label (overrides labels_dir of the config)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for checkpoints and logs")
    parser.add_argument("--steps", type=int, help="total optimizer steps (overrides the config)")
    parser.add_argument("--batch-size", type=int, help="pairs per step (overrides the config)")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers (overrides the config)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config "
                        "entry, dotted keys and YAML values (e.g. --set image_size=[240,320] --set loss.a_pos=0.5); "
                        "repeatable")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", type=Path, help="checkpoint to continue from (e.g. OUT/last.pt)")
    start.add_argument("--init", help="fine-tune: start from this checkpoint's weights ('bundled': the default "
                       "shipped weights; or a shipped model's name, e.g. unsuperpoint_vgg), with a fresh optimizer "
                       "and schedule")
    parser.add_argument("--campaign", type=Path, help="a training campaign's checkpoint, continued across "
                        "sessions: resumed from when it exists (then --init is not used), and rewritten in compact "
                        "form (fp16 weights, bf16 optimizer state) with every last.pt")
    parser.add_argument("--time-limit", type=positive_seconds, help="stop after this many seconds, saving last.pt "
                        "(for chunked runs; resume later with --resume)")
    return parser


def positive_seconds(text: str) -> float:
    """--time-limit: a finite number of seconds above 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0.0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return seconds


def _check_paths(args: argparse.Namespace) -> None:
    """ConfigError for an --out that is not a folder, or a --campaign that is not a regular file where one exists
    (a folder, a dangling link: the run would start afresh and then replace it)."""
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a folder")
    if args.campaign is not None and os.path.lexists(args.campaign) and not args.campaign.is_file():
        raise ConfigError(f"--campaign {args.campaign} exists but is not a readable file (a folder or a broken link)")


def _config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: --config, else the resumed checkpoint's (--resume, --campaign), else defaults; then CLI
    overrides."""
    resume = args.resume or (args.campaign if args.campaign is not None and args.campaign.is_file() else None)
    if args.config is not None:
        config = load_config(args.config)
    elif resume is not None:
        config = from_dict(load_checkpoint(resume).get("config", {}))
    else:
        config = TrainConfig()
    overrides = {"data_dir": str(args.data) if args.data is not None else None,
                 "labels_dir": str(args.labels) if args.labels is not None else None, "steps": args.steps,
                 "batch_size": args.batch_size, "num_workers": args.num_workers}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    return with_overrides(dataclasses.replace(config, **overrides), args.set)


def _prepare(args: argparse.Namespace) -> Trainer:
    """Config, device, data and resume state; every input error surfaces here, before training."""
    _check_paths(args)
    config = _config(args)
    if config.reads_photos and not config.data_dir:
        raise ConfigError("no training data: pass --data DIR or set data_dir in the config")
    if config.task == "superpoint" and not config.labels_dir:
        raise ConfigError("task superpoint needs pseudo-labels: pass --labels DIR (written by usp-label) "
                          "or set labels_dir in the config")
    device = setup_distributed(args.device)
    trainer = Trainer(config, args.out, device=device)
    if trainer.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    trainer.prepare_data()
    resume = args.resume
    if args.campaign is not None:
        if args.resume is not None:
            raise ConfigError("--campaign resumes from its own file; drop --resume")
        trainer.campaign_path = args.campaign
        resume = args.campaign if args.campaign.is_file() else None
    if resume is not None:
        trainer.resume(resume)
    elif args.init is not None:
        trainer.initialize_from(resolve_weights(args.init))
    return trainer


def _reason(error: BaseException) -> str:
    """One line: the error's, or for an error re-raised from a DataLoader worker ("Caught OSError in DataLoader
    worker process 0." and the worker's traceback) the worker's own last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if len(lines) > 1 and lines[0].startswith("Caught ") else first_line(error)


def _log_to_file(path: Path) -> logging.Handler:
    """Also write every log record to ``path`` (appending, so resumed chunks share one file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    return handler


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("usp_core").setLevel(logging.INFO)
    try:
        trainer = _prepare(args)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError, RuntimeError) as error:  # LabelError too
        print(f"usp-train: error: {first_line(error)}", file=sys.stderr)
        cleanup_distributed()
        return 2
    handler = _log_to_file(args.out / "train.log") if trainer.is_main else None
    try:
        with logging_redirect_tqdm():
            metrics = trainer.train(time_limit=args.time_limit)
    except KeyboardInterrupt:
        print(f"usp-train: interrupted at step {trainer.step}; {args.out / 'last.pt'} holds the last saved step",
              file=sys.stderr)
        return 130
    except OSError as error:  # a photo folder gone, a full disk
        saved = (f"{args.out / 'last.pt'} holds the last saved step" if (args.out / "last.pt").is_file()
                 else "no checkpoint was saved")
        print(f"usp-train: error at step {trainer.step}: {_reason(error)}; {saved}", file=sys.stderr)
        return 1
    finally:
        cleanup_distributed()
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
    if trainer.is_main:
        summary = f"step {trainer.step}/{trainer.config.steps}; checkpoints in {args.out}"
        if metrics:
            summary += f"; validation loss {metrics['total']:.4g}"
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

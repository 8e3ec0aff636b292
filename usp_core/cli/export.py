"""``usp-export``: write a trained checkpoint as TorchScript, ONNX and/or compact fp16 weights.

    usp-export CKPT --out DIR [--format torchscript,onnx] [--height 240 --width 320] [--full-precision]

Writes DIR/<architecture>.torchscript.pt, DIR/<architecture>.onnx and DIR/<architecture>.pt (format
"weights"), <architecture> being the checkpoint's network (unsuperpoint or superpoint); each is
checked against the eager model at --height x --width before it is listed.
Bad input prints one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from usp_core.cli.train import OneLineParser
from usp_core.inference.export import FORMATS, ExportError, export_onnx, export_torchscript, export_weights
from usp_core.inference.weights import model_from_checkpoint
from usp_core.support.checkpoint import CheckpointError, load_checkpoint
from usp_core.support.errors import first_line

SUFFIXES = {"torchscript": ".torchscript.pt", "onnx": ".onnx", "weights": ".pt"}  # after the architecture's name


def _formats(text: str) -> list[str]:
    formats = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in formats if item not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(FORMATS)}")
    return formats


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="usp-export", description="Export a trained UnsuperPoint or SuperPoint checkpoint.")
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by usp-train (last.pt / best.pt)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--format", type=_formats, default=["torchscript", "onnx"],
                        help=f"comma-separated subset of {','.join(FORMATS)} (default: torchscript,onnx)")
    parser.add_argument("--height", type=int, default=240, help="example input height for tracing and checks")
    parser.add_argument("--width", type=int, default=320, help="example input width for tracing and checks")
    parser.add_argument("--full-precision", action="store_true", help="keep float32 in the 'weights' format "
                        "(default: fp16)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        state = load_checkpoint(args.checkpoint)
        model = model_from_checkpoint(state, args.checkpoint).float().eval()
        for fmt in args.format:
            path = args.out / f"{model.config.architecture}{SUFFIXES[fmt]}"
            if fmt == "torchscript":
                export_torchscript(model, path, args.height, args.width)
            elif fmt == "onnx":
                export_onnx(model, path, args.height, args.width)
            else:
                export_weights(model, state, path, half=not args.full_precision)
            print(f"{fmt}: {path}")
    except (CheckpointError, ExportError, OSError) as error:
        print(f"usp-export: error: {first_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

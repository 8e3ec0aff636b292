"""Which numeric precision the network runs in: the choices, what this CPU can do, and ``auto``.

``PRECISIONS``: ``fp32``; ``fp16`` and ``bf16``, autocast in the torch backend on CUDA; ``bf16`` also in
OpenVINO on a CPU with bfloat16 instructions; ``int8`` in OpenVINO (post-training quantisation, see
usp_core.inference.backends.openvino_runner) on a CPU with int8 multiply-add instructions; ``auto``.

The CPU's instructions are read from the kernel's flags (/proc/cpuinfo, Linux x86): bfloat16 needs
``amx_bf16`` or ``avx512_bf16`` (without them OpenVINO computes bf16 in float32); int8 needs ``amx_int8``,
``avx512_vnni`` or ``avx_vnni`` (int8 dot products), or ``avx2``, whose u8 x s8 multiply-adds OpenVINO uses
without VNNI: on a 2-core AVX2 EPYC without VNNI the int8 graph took 0.63-0.89x the float32 one's time at
240x320 and 480x640 (usp-gate, weights v7 and v8, 2026-12-07). Another OS reports none, so there ``auto`` stays
fp32.

``auto``: torch on CUDA runs fp16. On the CPU, the fastest of the precisions that this CPU supports
(int8 only when calibration photos are given) and that passed the weights' accuracy gate
(:class:`PrecisionGate`: usp-gate measured them against fp32 with usp-eval and wrote
``<checkpoint>.gate.json`` beside the checkpoint); fp32 for weights without a gate, or when none passed.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "BF16_FLAGS", "INT8_FLAGS", "PrecisionGate", "cpu_flags", "cpu_precisions",
           "gate_path", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # any one: the CPU computes in bfloat16
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "avx2")  # any one: the CPU has int8 multiply-adds
GATE_SUFFIX = ".gate.json"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's first CPU (Linux /proc/cpuinfo); empty where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def cpu_precisions(flags: frozenset[str] | None = None) -> tuple[str, ...]:
    """The precisions OpenVINO runs natively on a CPU with ``flags`` (default: this one's): fp32, maybe bf16, int8."""
    flags = cpu_flags() if flags is None else flags
    return ("fp32",) + (("bf16",) if flags & set(BF16_FLAGS) else ()) + (("int8",) if flags & set(INT8_FLAGS) else ())


@dataclass(frozen=True)
class PrecisionGate:
    """What usp-gate measured for one set of weights: the precisions whose accuracy stayed within the
    tolerances of fp32, and each precision's time (ms per 480x640 image) on the machine that ran it."""

    weights: str  # usp_core.inference.graph_cache.weights_digest of the weights it measured
    passed: tuple[str, ...] = ()
    milliseconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> PrecisionGate | None:
        """The gate in ``path``, or None when there is none; ValueError (one line) for a file that is not one."""
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            return cls(str(record["weights"]), tuple(record["passed"]),
                       {name: float(ms) for name, ms in record["milliseconds"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"precision gate {path} is unreadable: {error}") from None

    def fastest(self, allowed: tuple[str, ...]) -> str:
        """The passed precision in ``allowed`` with the lowest measured time; fp32 when there is none."""
        candidates = [name for name in self.passed if name in allowed and name in self.milliseconds]
        return min(candidates, key=self.milliseconds.__getitem__, default="fp32")


def gate_path(checkpoint: Path) -> Path:
    """Where the gate of a checkpoint lives: beside it, ``<stem>.gate.json``."""
    return checkpoint.with_name(checkpoint.stem + GATE_SUFFIX)


def resolve_precision(requested: str, backend: str, device: torch.device, gate: PrecisionGate | None = None,
                      flags: frozenset[str] | None = None, calibrated: bool = False) -> str:
    """The precision a runner of ``backend`` ("torch", "openvino", "onnxruntime") on ``device`` uses.

    ``auto`` as the module docstring says (``gate`` already checked against the weights; int8 only when
    ``calibrated``: calibration photos were given). An explicit precision that this backend, device or
    CPU cannot run raises ValueError, one line.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    on_cpu = device.type == "cpu"
    if backend == "torch":
        if requested == "auto":
            return "fp32" if on_cpu else "fp16"
        if requested in ("fp16", "bf16") and on_cpu:
            raise ValueError(f"precision {requested} runs in torch on CUDA only; on the CPU use backend openvino")
        if requested == "int8":
            raise ValueError("precision int8 runs in backend openvino only")
        return requested
    natively = cpu_precisions(flags) if backend == "openvino" else ("fp32",)
    if requested == "auto":
        allowed = tuple(name for name in natively if calibrated or name != "int8")
        return gate.fastest(allowed) if gate is not None else "fp32"
    if requested not in natively:
        raise ValueError(_unsupported(requested, backend))
    return requested


def _unsupported(precision: str, backend: str) -> str:
    if backend != "openvino" or precision == "fp16":
        return f"precision {precision} does not run in backend {backend} on the CPU (openvino runs bf16 and int8)"
    needed = BF16_FLAGS if precision == "bf16" else INT8_FLAGS
    return f"precision {precision} needs a CPU with {' or '.join(needed)}; this one has none (use fp32 or auto)"

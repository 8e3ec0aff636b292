"""Soak benchmark: the virtual camera -> detector -> matcher at 30 Hz for N minutes, a line a minute.

    python -m usp_ros.tools.bench_soak [--minutes 10] [--rate 30] [--model-path CKPT] [--backend auto]

Each line covers one minute: frames the detector received, dropped (its drop-oldest queue) and
skipped as bad (from its /diagnostics), FrameMatch messages received here, latency from image stamp
to FrameMatch (p50 / p95 / max), and the resident memory of each node. What to look for: memory flat
after the first minutes, latency flat, drops steady (a 2-core CPU cannot keep up with 30 Hz, so
the queue must drop rather than queue). Not a test: it prints figures. The nodes run as child
processes, as in `make run` (usp_ros.tools.frontend).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
from ament_index_python.packages import get_package_share_directory
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from usp_core.inference.backends.base import BACKENDS
from usp_ros.msg import FrameMatch
from usp_ros.support.qos import output_qos
from usp_ros.support.stamps import stamp_ns
from usp_ros.tools.bench_detector import rss_mib
from usp_ros.tools.children import Children
from usp_ros.tools.frontend import Options, child_commands, set_dds_environment

DETECTOR_COUNTERS = ("frames received", "dropped frames", "bad frames")  # cumulative values in its /diagnostics
STARTUP_TIMEOUT_S = 120.0


class SoakMonitor(Node):
    """Latencies of FrameMatch messages and the detector's latest cumulative counters."""

    def __init__(self) -> None:
        super().__init__("soak_monitor")
        self.latencies_ms: list[float] = []
        self.detector = dict.fromkeys(DETECTOR_COUNTERS, 0)
        self.create_subscription(FrameMatch, "matches", self._on_match, output_qos())
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, output_qos())

    def _on_match(self, msg: FrameMatch) -> None:
        stamp = msg.header.stamp
        self.latencies_ms.append((time.time_ns() - stamp_ns(stamp)) / 1e6)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("keypoint detector"):
                values = {pair.key: pair.value for pair in status.values}
                self.detector = {key: int(values.get(key, 0)) for key in DETECTOR_COUNTERS}

    def take_latencies(self) -> np.ndarray:
        """(K,) latencies in ms since the last call."""
        taken, self.latencies_ms = np.array(self.latencies_ms), []
        return taken


def minute_line(minute: int, monitor: SoakMonitor, before: dict, children: Children) -> str:
    """One report line; ``before`` is the detector's counters a minute ago."""
    latencies = monitor.take_latencies()
    counts = {key: monitor.detector[key] - before[key] for key in DETECTOR_COUNTERS}
    timing = (f"{np.percentile(latencies, 50):6.1f} {np.percentile(latencies, 95):6.1f} {latencies.max():6.1f}"
              if len(latencies) else f"{'-':>6} {'-':>6} {'-':>6}")
    memory = " ".join(f"{rss_mib(process.pid):8.1f}" for process in children.processes.values())
    return (f"{minute:6d} {counts['frames received']:8d} {counts['dropped frames']:8d} {counts['bad frames']:5d} "
            f"{len(latencies):8d}  {timing}  {memory}")


def header_line(children: Children) -> str:
    short = {"image_source": "camera"}
    names = " ".join(f"{short.get(name, name.removesuffix('_node')):>8}" for name in children.processes)
    return (f"{'minute':>6} {'received':>8} {'dropped':>8} {'bad':>5} {'matches':>8}  {'p50':>6} {'p95':>6} "
            f"{'max':>6}  {names}   (latency ms image -> FrameMatch; RSS MiB)")


def soak(options: Options, minutes: int) -> int:
    """Start the nodes, print a line a minute for ``minutes`` minutes; returns the exit code."""
    share = Path(get_package_share_directory("usp_ros"))
    set_dds_environment(share)
    children = Children(Path(tempfile.mkdtemp(prefix="usp_soak_")))
    try:
        for name, args in child_commands(options, share).items():
            children.start(name, *args)
        rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
        monitor = SoakMonitor()
        if not _wait_for_first_match(monitor, children):
            return 1
        print(f"soak: {options.rate:g} Hz virtual camera, backend {options.backend}, logs in {children.folder}")
        print(header_line(children), flush=True)
        monitor.take_latencies()
        for minute in range(1, minutes + 1):
            before, end = dict(monitor.detector), time.monotonic() + 60.0
            while time.monotonic() < end:
                rclpy.spin_once(monitor, timeout_sec=0.1)
                if children.dead() is not None:
                    print(f"error: {children.death_report(children.dead())}")
                    return 1
            print(minute_line(minute, monitor, before, children), flush=True)
        return 0
    finally:
        children.stop()
        if rclpy.ok():
            rclpy.shutdown()


def _wait_for_first_match(monitor: SoakMonitor, children: Children) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not monitor.latencies_ms:
        rclpy.spin_once(monitor, timeout_sec=0.1)
        if children.dead() is not None or time.monotonic() > deadline:
            print(f"error: no FrameMatch within {STARTUP_TIMEOUT_S:.0f} s; logs in {children.folder}")
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m usp_ros.tools.bench_soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=10, help="minutes to run (default 10)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz (default 30)")
    parser.add_argument("--model-path", type=Path, help="detector checkpoint (default: the bundled weights)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="the detector's backend (default auto)")
    args = parser.parse_args(argv)
    if args.minutes < 1 or args.rate <= 0:
        parser.error("--minutes must be at least 1 and --rate positive")
    options = Options(model_path=args.model_path, rate=args.rate, backend=args.backend, device="cpu")
    try:
        return soak(options, args.minutes)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of the detector node: `python -m usp_ros.tools.bench_detector`.

Starts the detector node as its own process and talks to it over DDS from this one, at 640x480 bgr8
(frames of the virtual camera). Prints:

- model-only ms: KeypointDetector.detect on the same grey frame in this process (same model, device and
  thread count as the node), median over the latency frames;
- end-to-end ms: publish an Image -> its Features received here, one frame at a time (no queueing);
- node overhead: end-to-end minus model-only (DDS both ways, conversion, message building). On a
  loaded CPU the model time itself varies by tens of ms between runs, more than the overhead, so the
  overhead is also measured directly with a near-zero-cost probe network (1 channel per layer, same
  1000 keypoints x 256-dim descriptors, so the same messages and conversions);
- frames dropped at a 30 Hz input (the depth-1 drop-oldest queue at work), frames answered, and the
  end-to-end rate: Features received per second while the input ran;
- the node's resident memory after 100 and after 1000 input frames (no growth expected).

Model: by default the bundled weights (the node's default). `--model small` is a random-initialised
small network (widths 8..64, 256-dim descriptors), `--model full` the full architecture (random weights,
same cost as trained ones), `--model-path` a checkpoint or a shipped model's name (`unsuperpoint_v3`). `--backend` and
`--precision` pick the inference backend and precision, in
the node and in this process alike (default auto, as the node; int8 calibrates on `--calibration`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from usp_core.inference.backends.base import BACKENDS
from usp_core.inference.detector import DetectorConfig, KeypointDetector
from usp_core.inference.precision import PRECISIONS
from usp_core.inference.weights import BUNDLED_WEIGHTS, resolve_weights
from usp_core.models.layers import ModelConfig
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_core.support.checkpoint import save_checkpoint
from usp_core.synthetic.virtual_camera import VirtualCamera, VirtualCameraConfig
from usp_ros.bridge.images import numpy_to_image
from usp_ros.msg import Features
from usp_ros.nodes.image_source import default_photo
from usp_ros.support.stamps import stamp_key
from usp_ros.tools.children import Children

MODELS = {
    "small": {"widths": [8, 8, 16, 16, 32, 32, 64, 64], "descriptor_dim": 256},
    "full": {},  # ModelConfig defaults: widths 32..256, 256-dim descriptors
    "probe": {"widths": [1] * 8, "descriptor_dim": 256},  # near-zero compute: isolates the node's overhead
}
NAMESPACE = "/bench_detector"
MEMORY_CHECKPOINTS = (100, 1000)  # input frame counts at which the node's RSS is read


def save_random_model(kind: str, folder: Path) -> Path:
    """A random-initialised checkpoint of architecture ``kind`` in ``folder``."""
    torch.manual_seed(0)
    section = MODELS[kind]
    model = UnsuperPoint(ModelConfig(**section))
    return save_checkpoint(folder / f"{kind}.pt", {"model": model.state_dict(), "config": {"model": section}})


def bench_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """``count`` consecutive BGR frames of the virtual camera over the packaged photo (or a noise picture)."""
    photo_path = default_photo()
    photo = cv2.imread(str(photo_path)) if photo_path else None
    if photo is None:
        rng = np.random.default_rng(0)
        photo = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 2)
    camera = VirtualCamera(photo, VirtualCameraConfig(width=width, height=height))
    return [camera.render(index) for index in range(count)]


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


class Harness:
    """This process's ROS node, spun in a thread: publishes images, records Features arrivals and diagnostics."""

    def __init__(self) -> None:
        self.node = rclpy.create_node("bench_detector")
        self.process: subprocess.Popen | None = None
        self.arrivals: dict[tuple[int, int], float] = {}  # stamp -> perf_counter at arrival
        self.diagnostics: list[dict[str, str]] = []
        self._arrived = threading.Condition()
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.node.create_publisher(Image, f"{NAMESPACE}/image", reliable)
        self.node.create_subscription(Features, f"{NAMESPACE}/features", self._on_features, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        threading.Thread(target=self._executor.spin, daemon=True).start()

    def _on_features(self, msg) -> None:
        arrived = time.perf_counter()
        with self._arrived:
            self.arrivals[stamp_key(msg.header.stamp)] = arrived
            self._arrived.notify_all()

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NAMESPACE}/detector:"):
                self.diagnostics.append({value.key: value.value for value in status.values})

    def publish(self, msg) -> tuple[tuple[int, int], float]:
        """Stamp ``msg`` now and publish it; returns its stamp key and the perf_counter at publishing."""
        msg.header.stamp = self.node.get_clock().now().to_msg()
        key = stamp_key(msg.header.stamp)
        start = time.perf_counter()
        self.publisher.publish(msg)
        return key, start

    def wait_for(self, key, timeout: float) -> float | None:
        """perf_counter at which Features ``key`` arrived, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while key not in self.arrivals:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"the detector process exited with code {self.process.returncode}")
                if not self._arrived.wait(min(1.0, deadline - time.monotonic())) and time.monotonic() >= deadline:
                    return None
            return self.arrivals[key]

    def answered(self, keys) -> int:
        with self._arrived:
            return sum(key in self.arrivals for key in keys)

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()


@contextmanager
def detector_process(harness: Harness, model_path: Path, args: argparse.Namespace, folder: Path):
    """The detector node as a child process (usp_ros.tools.children: working directory and log in ``folder``)."""
    with Children(folder) as children:
        harness.process = children.start(
            model_path.stem, "-m", "usp_ros.nodes.detector", "--ros-args", "-r", f"__ns:={NAMESPACE}",
            "-p", f"model_path:={model_path}", "-p", f"device:={args.device}", "-p", f"precision:={args.precision}",
            *(("-p", f"calibration_dir:={args.calibration}") if args.calibration else ()),
            "-p", f"num_threads:={args.threads}", "-p", f"backend:={args.backend}", "-p", "max_keypoints:=1000")
        harness.diagnostics = []
        yield harness.process


def wait_until_serving(harness: Harness, msg, timeout: float) -> None:
    """Publish ``msg`` until a Features answer arrives (start-up, discovery, QoS matching, first inference)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        key, _ = harness.publish(msg)
        if harness.wait_for(key, timeout=5.0) is not None:
            return
    raise RuntimeError(f"the detector did not answer within {timeout:.0f} s")


def timed_detect(detector: KeypointDetector, grey: np.ndarray) -> float:
    """Milliseconds of one ``detector.detect(grey)``."""
    start = time.perf_counter()
    detector.detect(grey)
    return 1000.0 * (time.perf_counter() - start)


def measure_latency(harness: Harness, detector: KeypointDetector, messages, greys, count: int) -> dict:
    """Interleaved: model-only in this process, then publish -> Features for the same frame; ms.

    The model runs on one persistent worker thread, as in the node.
    """
    model_ms, end_to_end_ms = [], []
    with ThreadPoolExecutor(max_workers=1) as worker:
        for grey in greys[:3]:  # warm-up
            worker.submit(timed_detect, detector, grey).result()
        for index in range(count):
            model_ms.append(worker.submit(timed_detect, detector, greys[index % len(greys)]).result())
            key, sent = harness.publish(messages[index % len(messages)])
            arrived = harness.wait_for(key, timeout=120.0)
            if arrived is None:
                raise RuntimeError("a frame published alone got no Features within 120 s")
            end_to_end_ms.append(1000.0 * (arrived - sent))
    return {"model": statistics.median(model_ms), "end_to_end": statistics.median(end_to_end_ms),
            "model_p90": float(np.percentile(model_ms, 90)),
            "end_to_end_p90": float(np.percentile(end_to_end_ms, 90)),
            "paired": statistics.median(np.subtract(end_to_end_ms, model_ms).tolist())}


def measure_stream(harness: Harness, messages, count: int, rate: float) -> dict:
    """Publish ``count`` frames at ``rate`` Hz; answered/dropped counts and the node's RSS at checkpoints."""
    dropped_before = int(harness.diagnostics[-1]["dropped frames"]) if harness.diagnostics else 0
    keys, memory = [], {}
    start = time.perf_counter()
    for index in range(count):
        time.sleep(max(0.0, start + index / rate - time.perf_counter()))
        keys.append(harness.publish(messages[index % len(messages)])[0])
        if index + 1 in MEMORY_CHECKPOINTS:
            memory[index + 1] = (rss_mib(harness.process.pid), harness.answered(keys))
    elapsed = time.perf_counter() - start
    answered_in_time = harness.answered(keys)
    harness.wait_for(keys[-1], timeout=30.0)
    time.sleep(2.5)  # one more diagnostics period
    return {"published": count, "rate": count / elapsed, "answered": harness.answered(keys), "memory": memory,
            "output_rate": answered_in_time / elapsed,
            "queue_dropped": int(harness.diagnostics[-1]["dropped frames"]) - dropped_before}


def run(harness: Harness, model_path: Path, args: argparse.Namespace, folder: Path, frames, latency_frames: int,
        stream: bool) -> dict:
    """Latency (and, with ``stream``, the 30 Hz run) of one detector process with ``model_path``."""
    config = DetectorConfig(max_keypoints=1000, precision=args.precision, calibration_dir=str(args.calibration or ""))
    detector = KeypointDetector.from_pretrained(model_path, args.device, config, backend=args.backend,
                                                num_threads=args.threads)
    result = {"backend": f"{detector.prepare()} {detector.precision}"}
    messages = [numpy_to_image(frame, "bgr8") for frame in frames]
    greys = [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in frames]
    with detector_process(harness, model_path, args, folder):
        wait_until_serving(harness, messages[0], timeout=180.0)
        first = len(harness.diagnostics)
        latency = measure_latency(harness, detector, messages, greys, latency_frames)
        result.update(frames=latency_frames, latency=latency)
        time.sleep(1.5)
        inference = [float(d["inference (ms)"]) for d in harness.diagnostics[first:] if float(d["output rate (Hz)"])]
        result["node_inference"] = statistics.mean(inference) if inference else float("nan")
        if stream:
            result["stream"] = measure_stream(harness, messages, args.stream_frames, args.rate)
    return result


def print_table(setup: str, main_run: dict, probe: dict) -> None:
    latency, stream, probe_latency = main_run["latency"], main_run["stream"], probe["latency"]
    rows = [
        ("model-only (this process), median", f"{latency['model']:.1f} ms", f"p90 {latency['model_p90']:.1f}"),
        ("end-to-end publish -> Features, median", f"{latency['end_to_end']:.1f} ms",
         f"p90 {latency['end_to_end_p90']:.1f}"),
        ("difference (node overhead + model noise)", f"{latency['end_to_end'] - latency['model']:.1f} ms",
         f"median per-frame difference {latency['paired']:.1f} ms"),
        ("node's own inference time (diagnostics)", f"{main_run['node_inference']:.1f} ms", "mean, same frames"),
        ("probe network: model-only / end-to-end", f"{probe_latency['model']:.1f} / {probe_latency['end_to_end']:.1f}",
         f"ms, medians over {probe['frames']} frames"),
        ("node overhead (probe: end-to-end - model)", f"{probe_latency['end_to_end'] - probe_latency['model']:.1f} ms",
         f"target <= 5 ms; median per-frame difference {probe_latency['paired']:.1f} ms"),
        (f"frames at {stream['rate']:.1f} Hz: published / answered", f"{stream['published']} / {stream['answered']}",
         f"{stream['published'] - stream['answered']} not answered"),
        ("end-to-end rate (Features/s during the input)", f"{stream['output_rate']:.1f} Hz",
         f"backend {main_run['backend']}"),
        ("  of which dropped by the node's queue", f"{stream['queue_dropped']}", "drop-oldest, depth 1"),
    ]
    for frames, (rss, answered) in sorted(stream["memory"].items()):
        rows.append((f"node RSS after {frames} input frames", f"{rss:.1f} MiB", f"{answered} answered by then"))
    print(setup)
    width = max(len(row[0]) for row in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("bundled", "small", "full"), default="bundled",
                        help="bundled weights (default) or a random-initialised architecture")
    parser.add_argument("--model-path", type=resolve_weights,
                        help="a checkpoint (usp-train output) or a shipped model's name instead")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="inference precision (default auto)")
    parser.add_argument("--calibration", type=Path, default=None, help="precision int8: folder of calibration photos")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default auto)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads of the backend, in the node and here (default 0: the runtime's default)")
    parser.add_argument("--latency-frames", type=int, default=30)
    parser.add_argument("--probe-frames", type=int, default=100, help="latency frames of the overhead probe")
    parser.add_argument("--stream-frames", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args(argv)
    if args.model_path is not None:
        if not args.model_path.is_file():
            print(f"bench_detector: no checkpoint at {args.model_path}", file=sys.stderr)
            return 2
        args.model_path = args.model_path.resolve()  # the node runs in a folder of its own
    if args.calibration is not None:
        args.calibration = args.calibration.resolve()  # likewise
    frames = bench_frames(30, args.width, args.height)
    rclpy.init()
    harness = Harness()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_detector_") as name:
            folder = Path(name)
            model_path = args.model_path or (BUNDLED_WEIGHTS if args.model == "bundled"
                                             else save_random_model(args.model, folder))
            main_run = run(harness, model_path, args, folder, frames, args.latency_frames, stream=True)
            probe = run(harness, save_random_model("probe", folder), args, folder, frames, args.probe_frames,
                        stream=False)
    finally:
        harness.close()
        rclpy.try_shutdown()
    model = str(args.model_path) if args.model_path else (
        "bundled weights" if args.model == "bundled" else f"random-initialised {args.model} model")
    print_table(f"detector node, {args.width}x{args.height} bgr8, {model}, device {args.device}, backend "
                f"{main_run['backend']}, {args.threads or 'default'} thread(s), "
                f"{os.cpu_count()} CPU cores, "
                f"load average {os.getloadavg()[0]:.1f}; latency over {args.latency_frames} frames", main_run, probe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

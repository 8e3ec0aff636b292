"""The whole front-end in one command: image source -> detector -> matcher as ROS 2 processes over DDS.

    python -m usp_ros.tools.frontend [--video FILE] [--model-path CKPT] [--device auto] [--backend auto]
                               [--precision auto] [--calibration DIR] [--duration 20 | --frames N]
                               [--out frontend_matches.mp4]

Starts the nodes `ros2 launch usp_ros frontend.launch.py` starts as child processes (usp_ros.tools.children):
``image_source`` (a virtual camera flying over matplotlib's sample photo, or ``--video FILE``),
``detector_node`` and ``matcher_node``. This process subscribes to ``matches``, ``features`` and
``ground_truth``, prints one line per second (fps, latency from image stamp to FrameMatch received,
keypoints, inliers, median corner error of the homography against the virtual camera's ground truth) and
a summary at the end. It also subscribes to the matcher's ``matches/debug_image`` (flow tracks on the
current frame, the matcher's numbers in the caption) and writes each, with this process's figures of
that frame as a second caption line, to ``--out`` (usp_ros.tools.video). Ctrl-C, SIGTERM or an error
stops the children; so does this process dying (Linux: they get SIGTERM when their parent ends).
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rclpy
from ament_index_python.packages import get_package_share_directory
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image

from usp_core.evaluation.metrics import corner_error
from usp_core.inference.backends.base import BACKENDS
from usp_core.inference.precision import PRECISIONS
from usp_core.inference.weights import BUNDLED_WEIGHTS
from usp_core.support.drawing import CAPTION_HEIGHT, caption
from usp_ros.bridge.images import ConversionError, image_to_numpy, to_bgr8
from usp_ros.bridge.messages import homography_from_msg
from usp_ros.msg import Features, FrameMatch
from usp_ros.nodes.image_source import VIRTUAL_SIZE
from usp_ros.support.qos import input_qos, output_qos
from usp_ros.support.stamps import StampCache, stamp_key, stamp_ns
from usp_ros.tools.children import Children
from usp_ros.tools.stop_request import StopRequest
from usp_ros.tools.video import VIDEO_SUFFIXES, VideoWriter

__all__ = ["Options", "parse_args", "compose_ground_truth", "Sample", "RunStats", "child_commands",
           "set_dds_environment", "main"]

STARTUP_TIMEOUT_S = 120.0  # the detector imports torch and loads the model
GROUND_TRUTH_HISTORY = 600  # previous->current homographies kept for composing keyframe ground truth
HISTORY = 64  # frames whose keypoint count, figures or debug image wait for the rest of that frame


@dataclass(frozen=True)
class Options:
    """What to run; see parse_args for the meaning of each."""

    video: Path | None = None  # video file; None = the virtual camera
    model_path: Path | None = None  # None = the bundled weights
    device: str = "auto"  # detector and matcher torch device
    duration: float | None = 20.0  # seconds of images, or None with frames
    frames: int | None = None  # stop after this many FrameMatch messages
    out: Path = Path("frontend_matches.mp4")  # the annotated video (usp_ros.tools.video)
    rate: float = 10.0  # image rate, Hz
    width: int = 0  # image width; 0 = the source's own (virtual camera: 640; video: its frames')
    height: int = 0  # image height; 0 = the source's own (virtual camera: 480)
    keyframes: bool = False  # matcher keyframe mode
    backend: str = "auto"  # the detector's inference backend (usp_core.inference.backends)
    precision: str = "auto"  # the detector's precision (usp_core.inference.precision)
    calibration: Path | None = None  # precision int8: folder of calibration photos


def parse_args(argv=None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m usp_ros.tools.frontend", description=__doc__.split("\n")[0])
    parser.add_argument("--video", type=Path, help="video file to play instead of the virtual camera")
    parser.add_argument("--model-path", type=Path, help="detector checkpoint (default: the bundled weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--backend", choices=BACKENDS, default=Options.backend,
                        help="the detector's inference backend (default auto: openvino on a CPU, torch on CUDA)")
    parser.add_argument("--precision", choices=PRECISIONS, default=Options.precision,
                        help="the detector's precision (default auto: the fastest its weights' gate passed)")
    parser.add_argument("--calibration", type=Path, help="precision int8: folder of calibration photos")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, help="seconds to run (default 20)")
    stop.add_argument("--frames", type=int, help="stop after this many matched frames")
    parser.add_argument("--out", type=Path, default=Options.out, help="the matcher's debug images with this run's "
                        f"figures: .mp4, .avi or .gif (default {Options.out})")
    parser.add_argument("--rate", type=float, default=Options.rate, help="image rate in Hz (default 10)")
    parser.add_argument("--width", type=int, default=Options.width,
                        help="image width; 0 = the source's own (virtual camera 640, a video's frames) (default 0)")
    parser.add_argument("--height", type=int, default=Options.height,
                        help="image height; 0 = the source's own (virtual camera 480) (default 0)")
    parser.add_argument("--keyframes", action="store_true", help="match against keyframes, not the previous frame")
    args = parser.parse_args(argv)
    if args.video is not None and not args.video.is_file():
        parser.error(f"video file {args.video} does not exist")
    if args.model_path is not None and not args.model_path.is_file():
        parser.error(f"model file {args.model_path} does not exist")
    if args.out.suffix.lower() not in VIDEO_SUFFIXES:
        parser.error(f"--out must end in {', '.join(VIDEO_SUFFIXES)}, got {args.out}")
    if not args.out.resolve().parent.is_dir():
        parser.error(f"--out: folder {args.out.resolve().parent} does not exist")
    if (args.duration is not None and args.duration <= 0) or (args.frames is not None and args.frames < 1):
        parser.error("--duration and --frames must be positive")
    if args.rate <= 0 or not (args.width == 0 or args.width >= 16) or not (args.height == 0 or args.height >= 16):
        parser.error("--rate must be positive and --width/--height 0 or at least 16")
    duration = args.duration if args.duration is not None or args.frames is not None else Options.duration
    resolve = (lambda p: p.resolve() if p is not None else None)
    return Options(resolve(args.video), resolve(args.model_path), args.device, duration, args.frames,
                   args.out.resolve(), args.rate, args.width, args.height, args.keyframes, args.backend,
                   args.precision, resolve(args.calibration))


def compose_ground_truth(steps: dict, reference, current, limit: int = GROUND_TRUTH_HISTORY) -> np.ndarray | None:
    """Homography reference -> current from per-frame steps {frame: (previous frame, H previous -> current)}.

    Walks back from ``current`` to ``reference``; None when the chain is broken (a step is missing)
    or longer than ``limit``.
    """
    homography = np.eye(3)
    frame = current
    for _ in range(limit):
        if frame == reference:
            return homography / homography[2, 2]
        if frame not in steps:
            return None
        frame, step = steps[frame]
        homography = homography @ step
    return None


class Sample(NamedTuple):
    """The figures of one FrameMatch."""

    received: float  # monotonic time it was received, s
    latency_ms: float  # image stamp -> FrameMatch received
    keypoints: int  # of the current frame (-1: unknown)
    inliers: int
    valid: bool
    error_px: float | None  # corner error of its homography vs the ground truth (inf: invalid; None: no truth)


class RunStats(list):
    """The Samples of a run in arrival order; ``line`` and ``summary`` format them."""

    def line(self, since: int, elapsed: float) -> str:
        """One live line over the samples from index ``since`` on, received in ``elapsed`` s."""
        recent = self[since:]
        if not recent:
            return "fps  0.0 | no FrameMatch in the last second"
        finite = [s.error_px for s in recent if s.error_px is not None and math.isfinite(s.error_px)]
        return (f"fps {len(recent) / elapsed:4.1f} | latency {statistics.fmean(s.latency_ms for s in recent):6.1f} ms"
                f" | keypoints {_mean([s.keypoints for s in recent if s.keypoints >= 0], '.0f')} | inliers "
                f"{_mean([s.inliers for s in recent], '.0f')} | valid {sum(s.valid for s in recent)}/{len(recent)} | "
                f"H error {f'{statistics.median(finite):.2f} px' if finite else '-'}")

    def summary(self) -> str:
        if not self:
            return "summary: no FrameMatch received"
        span = self[-1].received - self[0].received
        latency = sorted(s.latency_ms for s in self)
        lines = [f"summary: {len(self)} frames matched, {(len(self) - 1) / span if span > 0 else math.nan:.1f} fps, "
                 f"valid {sum(s.valid for s in self)}/{len(self)}",
                 f"  latency image -> FrameMatch: mean {statistics.fmean(latency):.1f} ms, median "
                 f"{statistics.median(latency):.1f} ms, p95 {latency[int(0.95 * (len(latency) - 1))]:.1f} ms",
                 f"  keypoints {_mean([s.keypoints for s in self if s.keypoints >= 0], '.0f')}, "
                 f"inliers mean {_mean([s.inliers for s in self], '.1f')}"]
        errors = np.array([s.error_px for s in self if s.error_px is not None])
        if errors.size:
            finite = errors[np.isfinite(errors)]
            median = f"{np.median(finite):.2f} px" if finite.size else "-"
            lines.append(f"  homography vs ground truth ({errors.size} frames): median corner error {median}, "
                         + ", ".join(f"<= {t} px {np.mean(errors <= t):.0%}" for t in (1, 3, 5)))
        return "\n".join(lines)


def _mean(values, fmt: str) -> str:
    return format(statistics.fmean(values), fmt) if values else "-"


def child_commands(options: Options, share: Path) -> dict[str, list[str]]:
    """Arguments after `python` of each child node (-m usp_ros.nodes.<module> --ros-args ...), in start order
    (the slowest to start first)."""
    def node(module: str, params_file: str, **parameters) -> list[str]:
        args = ["-m", f"usp_ros.nodes.{module}", "--ros-args", "--params-file", str(share / "config" / params_file)]
        for name, value in parameters.items():
            args += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
        return args

    source = dict(source="video", path=str(options.video)) if options.video else dict(source="virtual")
    model = dict(model_path=str(options.model_path)) if options.model_path else {}
    calibration = dict(calibration_dir=str(options.calibration)) if options.calibration else {}
    return {
        "matcher_node": node("matcher", "matcher.yaml", device=options.device, keyframe_mode=options.keyframes),
        "detector_node": node("detector", "detector.yaml", device=options.device, backend=options.backend,
                              precision=options.precision, **model, **calibration),
        "image_source": node("image_source", "image_source.yaml", rate=float(options.rate), width=options.width,
                             height=options.height, **source),
    }


def set_dds_environment(share: Path) -> None:
    """Keep DDS on this machine and use the large-image profile, unless set already: in this process's
    environment (before rclpy.init), which the child nodes inherit."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(share / "config" / "fastdds_large_images.xml"))


class Monitor(Node):
    """This process's node: `matches` (with `features`, `ground_truth`) -> RunStats, and the matcher's debug
    image of each FrameMatch with this process's figures added -> the video."""

    def __init__(self, options: Options, video: VideoWriter, stats: RunStats) -> None:
        super().__init__("frontend_monitor")
        self.video, self.stats = video, stats
        self.with_truth = options.video is None  # the virtual camera publishes ground truth, a video does not
        self._size = (options.height or VIRTUAL_SIZE[1], options.width or VIRTUAL_SIZE[0])  # (h, w) of the images
        self._truth = StampCache(GROUND_TRUTH_HISTORY)  # stamp key -> (reference stamp key, H reference -> current)
        self._keypoints = StampCache(HISTORY)  # stamp key -> keypoint count
        self._figures = StampCache(HISTORY)  # stamp key -> caption line of a FrameMatch, until its debug image
        self._pictures = StampCache(HISTORY)  # stamp key -> debug image, until its FrameMatch
        reliable = input_qos(ReliabilityPolicy.RELIABLE, depth=10)
        self.create_subscription(FrameMatch, "matches", self._on_match, output_qos())
        self.create_subscription(FrameMatch, "ground_truth", self._on_truth, output_qos())
        self.create_subscription(Features, "features", self._on_features, reliable)
        self.create_subscription(Image, "matches/debug_image", self._on_picture, reliable)

    def _on_truth(self, msg: FrameMatch) -> None:
        self._truth.put(msg.header.stamp, (stamp_key(msg.reference_stamp), homography_from_msg(msg)))

    def _on_features(self, msg: Features) -> None:
        self._keypoints.put(msg.header.stamp, len(msg.keypoints.x))
        self._size = (msg.keypoints.image_height, msg.keypoints.image_width)

    def _on_match(self, msg: FrameMatch) -> None:
        stamp = msg.header.stamp
        latency_ms = (time.time_ns() - stamp_ns(stamp)) / 1e6
        current = stamp_key(stamp)
        truth = compose_ground_truth(self._truth, stamp_key(msg.reference_stamp), current) if self.with_truth else None
        error = None if truth is None else corner_error(homography_from_msg(msg) if msg.valid else None, truth,
                                                        self._size)
        self.stats.append(Sample(time.monotonic(), latency_ms, self._keypoints.get(current, -1), msg.num_inliers,
                                 msg.valid, error))
        error_text = "no ground truth" if error is None else f"{error:.2f} px" if math.isfinite(error) else "invalid"
        self._figures.put(stamp, f"front-end: latency {latency_ms:.0f} ms | H error vs truth {error_text}")
        self._write(current)

    def _on_picture(self, msg: Image) -> None:
        self._pictures.put(msg.header.stamp, msg)
        self._write(stamp_key(msg.header.stamp))

    def _write(self, key) -> None:
        """Write frame ``key`` to the video once both its debug image and its figures are in."""
        if key not in self._figures or key not in self._pictures:
            return
        picture, figures = self._pictures.pop(key), self._figures.pop(key)
        try:
            frame = np.array(to_bgr8(image_to_numpy(picture), picture.encoding))  # a writable copy
        except ConversionError as error:
            self.get_logger().warning(f"cannot draw: {error}", throttle_duration_sec=5.0)
            return
        caption(frame[CAPTION_HEIGHT:], figures)  # a second band, under the matcher's own caption
        self.video.write(frame)


def _watch(options: Options, monitor: Monitor, children: Children, stop: StopRequest) -> int:
    """Spin until the run is over or a stop is requested (130); prints the live lines. Returns the exit code."""
    started = time.monotonic()
    first_match: float | None = None
    last_print, since = started, 0
    while True:
        rclpy.spin_once(monitor, timeout_sec=0.05)
        if stop.requested:
            return 130
        now, dead = time.monotonic(), children.dead()
        if dead is not None:
            print(f"error: {children.death_report(dead)}", file=sys.stderr)
            return 1
        if first_match is None and monitor.stats:
            first_match, last_print, since = now, now, len(monitor.stats)
            print(f"first FrameMatch after {now - started:.1f} s of start-up", flush=True)
        if first_match is None and now - started > STARTUP_TIMEOUT_S:
            print(f"error: no FrameMatch within {STARTUP_TIMEOUT_S:.0f} s; logs in {children.folder}", file=sys.stderr)
            return 1
        if first_match is not None and now - last_print >= 1.0:
            print(monitor.stats.line(since, now - last_print), flush=True)
            last_print, since = now, len(monitor.stats)
        if options.frames is not None and len(monitor.stats) >= options.frames:
            return 0
        if options.duration is not None and first_match is not None and now - first_match >= options.duration:
            return 0


def main(argv=None) -> int:
    """Entry point of `python -m usp_ros.tools.frontend` / `ros2 run usp_ros frontend`; returns the exit code."""
    options = parse_args(argv)
    if options.model_path is None and not BUNDLED_WEIGHTS.is_file():
        print(f"frontend: no bundled weights at {BUNDLED_WEIGHTS}: pass --model-path CHECKPOINT (written by "
              "usp-train)", file=sys.stderr)
        return 2
    share = Path(get_package_share_directory("usp_ros"))
    set_dds_environment(share)
    commands = child_commands(options, share)
    children = Children(Path(tempfile.mkdtemp(prefix="usp_frontend_")))
    video, stats, code = VideoWriter(options.out, options.rate), RunStats(), 1
    print(f"starting {', '.join(commands)} (logs in {children.folder})", flush=True)
    # our own handlers, also when started with SIGINT ignored (a background job)
    with StopRequest((signal.SIGINT, signal.SIGTERM)) as stop:
        try:
            for name, args in commands.items():
                children.start(name, *args)
            rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
            code = _watch(options, Monitor(options, video, stats), children, stop)
        except KeyboardInterrupt:  # a second Ctrl-C
            code = 130
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
        finally:
            children.stop()
            video.close()
            rclpy.try_shutdown()
    if code == 130:
        print("interrupted", file=sys.stderr)
    print(stats.summary())
    if video.frames:
        print(f"wrote {video.frames} annotated frames to {options.out}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())

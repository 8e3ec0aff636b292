"""The whole front-end in one command: image source -> detector -> matcher as ROS 2 processes over DDS.

    python -m usp_ros.frontend [--video FILE] [--model-path CKPT] [--device auto] [--backend auto]
                               [--duration 20 | --frames N] [--out frontend_matches.mp4]

Starts three child processes, the same nodes `ros2 launch usp_ros frontend.launch.py` starts:
``image_source`` (a virtual camera flying over matplotlib's sample photo, or ``--video FILE``),
``detector_node`` and ``matcher_node``. This process subscribes to ``matches``, ``features``,
``image`` and ``ground_truth``, prints one line per second (fps, latency from image stamp to
FrameMatch received, keypoints, inliers, mean corner error of the homography against the virtual
camera's ground truth), a summary at the end, and writes the matches drawn on the frame pairs to
``--out`` (.mp4/.avi through cv2.VideoWriter, .gif through Pillow). Ctrl-C, SIGTERM or an error
stops the children; so does this process dying (Linux: they get SIGTERM when their parent ends).
"""
from __future__ import annotations

import argparse
import ctypes
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import rclpy
from ament_index_python.packages import get_package_share_directory
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image

from usp_core.backends import BACKENDS
from usp_core.evaluation.metrics import corner_error
from usp_core.inference import BUNDLED_WEIGHTS
from usp_ros.conversions import ConversionError, homography_from_msg, image_to_numpy, to_bgr8
from usp_ros.drawing import draw_matches
from usp_ros.msg import Features, FrameMatch
from usp_ros.qos import input_qos, output_qos
from usp_ros.stamps import StampCache, stamp_key
from usp_ros.stop_request import StopRequest

__all__ = ["Options", "parse_args", "compose_ground_truth", "RunStats", "child_commands", "main"]

CHILDREN = ("matcher_node", "detector_node", "image_source")  # started in this order (slowest start first)
STARTUP_TIMEOUT_S = 120.0  # the detector imports torch and loads the model
GROUND_TRUTH_HISTORY = 600  # previous->current homographies kept for composing keyframe ground truth
IMAGE_HISTORY = 64  # images kept for drawing (a keyframe's image is held separately)
GIF_MAX_FRAMES = 300  # a GIF holds its frames in memory until the end
VIRTUAL_SIZE = (640, 480)  # (width, height) of image_source's virtual camera when width/height are 0
STOP_TIMEOUT_S = 10.0  # a child gets this long to exit after SIGINT, then SIGKILL


@dataclass(frozen=True)
class Options:
    """What to run; see parse_args for the meaning of each."""

    video: Path | None = None  # video file; None = the virtual camera
    model_path: Path | None = None  # None = the bundled weights
    device: str = "auto"  # detector and matcher torch device
    duration: float | None = 20.0  # seconds of images, or None with frames
    frames: int | None = None  # stop after this many FrameMatch messages
    out: Path = Path("frontend_matches.mp4")  # annotated video or GIF
    rate: float = 10.0  # image rate, Hz
    width: int = 0  # image width; 0 = the source's own (virtual camera: 640; video: its frames')
    height: int = 0  # image height; 0 = the source's own (virtual camera: 480)
    keyframes: bool = False  # matcher keyframe mode
    backend: str = "auto"  # the detector's inference backend (usp_core.backends)


def parse_args(argv=None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m usp_ros.frontend", description=__doc__.split("\n")[0])
    parser.add_argument("--video", type=Path, help="video file to play instead of the virtual camera")
    parser.add_argument("--model-path", type=Path, help="detector checkpoint (default: the bundled weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--backend", choices=BACKENDS, default=Options.backend,
                        help="the detector's inference backend (default auto: openvino on a CPU, torch on CUDA)")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, help="seconds to run (default 20)")
    stop.add_argument("--frames", type=int, help="stop after this many matched frames")
    parser.add_argument("--out", type=Path, default=Options.out, help="annotated matches: .mp4, .avi or .gif "
                        f"(default {Options.out})")
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
    if args.out.suffix.lower() not in (".mp4", ".avi", ".gif"):
        parser.error(f"--out must end in .mp4, .avi or .gif, got {args.out}")
    if (args.duration is not None and args.duration <= 0) or (args.frames is not None and args.frames < 1):
        parser.error("--duration and --frames must be positive")
    if args.rate <= 0 or not (args.width == 0 or args.width >= 16) or not (args.height == 0 or args.height >= 16):
        parser.error("--rate must be positive and --width/--height 0 or at least 16")
    duration = args.duration if args.duration is not None or args.frames is not None else Options.duration
    resolve = (lambda p: p.resolve() if p is not None else None)
    return Options(resolve(args.video), resolve(args.model_path), args.device, duration, args.frames,
                   args.out.resolve(), args.rate, args.width, args.height, args.keyframes, args.backend)


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


@dataclass
class RunStats:
    """Per-FrameMatch figures of a run; ``line`` and ``summary`` format them."""

    times: list[float] = field(default_factory=list)  # monotonic receive time of each FrameMatch, s
    latencies_ms: list[float] = field(default_factory=list)  # image stamp -> FrameMatch received
    keypoints: list[int] = field(default_factory=list)  # keypoints of the current frame (-1 unknown)
    inliers: list[int] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)
    errors_px: list[float | None] = field(default_factory=list)  # vs ground truth, px (inf: invalid; None: no truth)

    def add(self, received: float, latency_ms: float, keypoints: int, inliers: int, valid: bool,
            error_px: float | None) -> None:
        self.times.append(received)
        self.latencies_ms.append(latency_ms)
        self.keypoints.append(keypoints)
        self.inliers.append(inliers)
        self.valid.append(valid)
        self.errors_px.append(error_px)

    def __len__(self) -> int:
        return len(self.times)

    def line(self, since: int, elapsed: float) -> str:
        """One live line over the FrameMatch messages from index ``since`` on, received in ``elapsed`` s."""
        count = len(self) - since
        if count <= 0:
            return "fps  0.0 | no FrameMatch in the last second"
        known = [k for k in self.keypoints[since:] if k >= 0]
        return (f"fps {count / elapsed:4.1f} | latency {statistics.fmean(self.latencies_ms[since:]):6.1f} ms | "
                f"keypoints {_mean_text(known, '.0f')} | inliers {_mean_text(self.inliers[since:], '.0f')} | "
                f"valid {sum(self.valid[since:])}/{count} | H error {self._error_text(since)}")

    def _error_text(self, since: int) -> str:
        finite = [e for e in self.errors_px[since:] if e is not None and math.isfinite(e)]
        return f"{statistics.median(finite):.2f} px" if finite else "-"

    def summary(self) -> str:
        if not self:
            return "summary: no FrameMatch received"
        span = self.times[-1] - self.times[0]
        fps = (len(self) - 1) / span if span > 0 else float("nan")
        latency = sorted(self.latencies_ms)
        lines = [f"summary: {len(self)} frames matched, {fps:.1f} fps, valid {sum(self.valid)}/{len(self)}",
                 f"  latency image -> FrameMatch: mean {statistics.fmean(latency):.1f} ms, median "
                 f"{statistics.median(latency):.1f} ms, p95 {latency[int(0.95 * (len(latency) - 1))]:.1f} ms",
                 f"  keypoints {_mean_text([k for k in self.keypoints if k >= 0], '.0f')}, "
                 f"inliers mean {_mean_text(self.inliers, '.1f')}"]
        known = [e for e in self.errors_px if e is not None]
        if known:
            errors = np.array(known)
            finite = errors[np.isfinite(errors)]
            median = f"{np.median(finite):.2f} px" if finite.size else "-"
            lines.append(f"  homography vs ground truth ({len(errors)} frames): median corner error {median}, "
                         + ", ".join(f"<= {t} px {np.mean(errors <= t):.0%}" for t in (1, 3, 5)))
        return "\n".join(lines)


def _mean_text(values, fmt: str) -> str:
    return format(statistics.fmean(values), fmt) if values else "-"


def child_commands(options: Options, share: Path) -> dict[str, list[str]]:
    """Command line of each child node (python -m usp_ros.<node> --ros-args ...)."""
    def node(module: str, params_file: str, **parameters) -> list[str]:
        command = [sys.executable, "-m", f"usp_ros.{module}", "--ros-args",
                   "--params-file", str(share / "config" / params_file)]
        for name, value in parameters.items():
            command += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
        return command

    source = dict(source="video", path=str(options.video)) if options.video else dict(source="virtual")
    model = dict(model_path=str(options.model_path)) if options.model_path else {}
    return {
        "matcher_node": node("matcher_node", "matcher.yaml", device=options.device, keyframe_mode=options.keyframes),
        "detector_node": node("detector_node", "detector.yaml", device=options.device, backend=options.backend,
                              **model),
        "image_source": node("image_source", "image_source.yaml", rate=float(options.rate), width=options.width,
                             height=options.height, **source),
    }


class Children:
    """The child node processes: started in a scratch folder (so a source tree never shadows the
    installed usp_ros), output to log files, stopped with SIGINT then SIGKILL."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        with open(self.log_dir / f"{name}.log", "w") as log:
            self.processes[name] = subprocess.Popen(command, cwd=self.log_dir, env=env, stdout=log,
                                                    stderr=subprocess.STDOUT, preexec_fn=_prepare_child)

    def dead(self) -> str | None:
        """Name of a child that has exited, or None."""
        return next((name for name, p in self.processes.items() if p.poll() is not None), None)

    def log_tail(self, name: str, lines: int = 5) -> str:
        text = (self.log_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _prepare_child() -> None:
    """In the child before exec: ask Linux to send SIGTERM when the parent dies (no-op elsewhere), and take
    SIGINT, the stop signal, even when this process was started with it ignored (a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class MatchVideo:
    """Annotated frame pairs to .mp4/.avi (cv2.VideoWriter) or .gif (Pillow, half size, at most GIF_MAX_FRAMES)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._gif: list = []

    def write(self, bgr: np.ndarray) -> None:
        if self.path.suffix.lower() == ".gif":
            if len(self._gif) < GIF_MAX_FRAMES:
                half = cv2.resize(bgr, (bgr.shape[1] // 2, bgr.shape[0] // 2), interpolation=cv2.INTER_AREA)
                self._gif.append(cv2.cvtColor(half, cv2.COLOR_BGR2RGB))
                self.frames += 1
            return
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"))
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (bgr.shape[1], bgr.shape[0]))
            if not self._writer.isOpened():
                raise OSError(f"cannot write video {self.path}")
        self._writer.write(bgr)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
        if self._gif:
            from PIL import Image as PilImage  # Pillow comes with matplotlib; only GIFs need it

            first, *rest = (PilImage.fromarray(frame) for frame in self._gif)
            first.save(self.path, save_all=True, append_images=rest, duration=int(1000 / self.fps), loop=0)


def annotate(canvas: np.ndarray, text: str) -> np.ndarray:
    """Draw ``text`` on a dark band at the top of ``canvas`` (in place); returns it."""
    cv2.rectangle(canvas, (0, 0), (canvas.shape[1], 24), (0, 0, 0), -1)
    cv2.putText(canvas, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


class Monitor(Node):
    """This process's node: turns `matches` (with `features`, `image`, `ground_truth`) into figures and video."""

    def __init__(self, options: Options, video: MatchVideo, stats: RunStats) -> None:
        super().__init__("frontend_monitor")
        self.options, self.video, self.stats = options, video, stats
        self._truth = StampCache(GROUND_TRUTH_HISTORY)  # stamp key -> (reference stamp key, H reference -> current)
        self._keypoints = StampCache(IMAGE_HISTORY * 4)  # stamp key -> keypoint count
        self._images = StampCache(IMAGE_HISTORY)  # stamp key -> Image
        self._reference_image: tuple | None = None  # (stamp key, Image) of the current reference frame
        reliable = input_qos(ReliabilityPolicy.RELIABLE, depth=10)
        self.create_subscription(FrameMatch, "matches", self._on_match, output_qos())
        self.create_subscription(FrameMatch, "ground_truth", self._on_truth, output_qos())
        self.create_subscription(Features, "features", self._on_features, reliable)
        self.create_subscription(Image, "image", self._on_image, reliable)

    def _on_truth(self, msg: FrameMatch) -> None:
        self._truth.put(msg.header.stamp, (stamp_key(msg.reference_stamp), homography_from_msg(msg)))

    def _on_features(self, msg: Features) -> None:
        self._keypoints.put(msg.header.stamp, len(msg.keypoints.x))

    def _on_image(self, msg: Image) -> None:
        self._images.put(msg.header.stamp, msg)

    def _on_match(self, msg: FrameMatch) -> None:
        received = time.time_ns()
        stamp = msg.header.stamp
        latency_ms = (received - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e6
        current, reference = stamp_key(stamp), stamp_key(msg.reference_stamp)
        size = (self.options.height or VIRTUAL_SIZE[1], self.options.width or VIRTUAL_SIZE[0])
        if current in self._images:
            size = (self._images[current].height, self._images[current].width)
        error = None
        truth = compose_ground_truth(self._truth, reference, current) if self.options.video is None else None
        if truth is not None:
            error = corner_error(homography_from_msg(msg) if msg.valid else None, truth, size)
        self.stats.add(time.monotonic(), latency_ms, self._keypoints.get(current, -1), msg.num_inliers,
                       msg.valid, error)
        self._draw(msg, reference, current, latency_ms, error)

    def _draw(self, msg: FrameMatch, reference, current, latency_ms: float, error: float | None) -> None:
        """Write the frame pair with its inlier matches and figures to the video."""
        reference_image = self._images.get(reference)
        if reference_image is None and self._reference_image and self._reference_image[0] == reference:
            reference_image = self._reference_image[1]
        current_image = self._images.get(current)
        if current_image is None or reference_image is None:
            return
        self._reference_image = (reference, reference_image)
        try:
            canvas = draw_matches(to_bgr8(image_to_numpy(reference_image), reference_image.encoding),
                                  to_bgr8(image_to_numpy(current_image), current_image.encoding),
                                  np.c_[msg.reference_x, msg.reference_y], np.c_[msg.current_x, msg.current_y])
        except ConversionError as conversion_error:
            self.get_logger().warning(f"cannot draw: {conversion_error}", throttle_duration_sec=5.0)
            return
        error_text = f" | H error {error:.2f} px" if error is not None and math.isfinite(error) else ""
        annotate(canvas, f"{'valid' if msg.valid else 'INVALID'} | matches {msg.num_matches} | inliers "
                         f"{msg.num_inliers} | latency {latency_ms:.0f} ms{error_text}")
        self.video.write(canvas)


def _watch(options: Options, monitor: Monitor, children: Children, stop: StopRequest) -> int:
    """Spin until the run is over or a stop is requested (130); prints the live lines. Returns the exit code."""
    started = time.monotonic()
    first_match: float | None = None
    last_print, since = started, 0
    while True:
        rclpy.spin_once(monitor, timeout_sec=0.05)
        if stop.requested:
            return 130
        now = time.monotonic()
        dead = children.dead()
        if dead is not None:
            code = children.processes[dead].returncode
            print(f"error: {dead} exited with code {code}; last lines of its log:\n{children.log_tail(dead)}",
                  file=sys.stderr)
            return 1
        if first_match is None and len(monitor.stats):
            first_match, last_print, since = now, now, len(monitor.stats)
            print(f"first FrameMatch after {now - started:.1f} s of start-up", flush=True)
        if first_match is None and now - started > STARTUP_TIMEOUT_S:
            print(f"error: no FrameMatch within {STARTUP_TIMEOUT_S:.0f} s; logs in {children.log_dir}",
                  file=sys.stderr)
            return 1
        if first_match is not None and now - last_print >= 1.0:
            print(monitor.stats.line(since, now - last_print), flush=True)
            last_print, since = now, len(monitor.stats)
        if options.frames is not None and len(monitor.stats) >= options.frames:
            return 0
        if options.duration is not None and first_match is not None and now - first_match >= options.duration:
            return 0


def _check_model(options: Options) -> str | None:
    """A one-line error when no model can be loaded, else None."""
    if options.model_path is not None or BUNDLED_WEIGHTS.is_file():
        return None
    return f"no bundled weights at {BUNDLED_WEIGHTS}: pass --model-path CHECKPOINT (written by usp-train)"


def child_environment(share: Path) -> dict[str, str]:
    """Keep DDS on this machine and use the large-image profile, unless set already, in this process
    (before rclpy.init) and in the returned environment for the child nodes."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(share / "config" / "fastdds_large_images.xml"))
    return dict(os.environ, PYTHONUNBUFFERED="1")


def main(argv=None) -> int:
    """Entry point of `python -m usp_ros.frontend` / `ros2 run usp_ros frontend`; returns the exit code."""
    options = parse_args(argv)
    problem = _check_model(options)
    if problem:
        print(f"frontend: {problem}", file=sys.stderr)
        return 2
    share = Path(get_package_share_directory("usp_ros"))
    env = child_environment(share)
    children = Children(Path(tempfile.mkdtemp(prefix="usp_frontend_")))
    video, stats, code = MatchVideo(options.out, options.rate), RunStats(), 1
    print(f"starting {', '.join(CHILDREN)} (logs in {children.log_dir})", flush=True)
    # our own handlers, also when started with SIGINT ignored (a background job)
    with StopRequest((signal.SIGINT, signal.SIGTERM)) as stop:
        try:
            for name, command in child_commands(options, share).items():
                children.start(name, command, env)  # before rclpy starts threads: fork with preexec_fn is safe then
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

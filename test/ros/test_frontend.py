"""The front-end over real DDS: virtual camera -> (oracle or learned) features -> matcher, the one-command run,
and the child-process helper the run shares with the tests.

Without trained weights a learned detector gives poor matches, so accuracy is checked with an
oracle in place of the detector: it publishes Features built from the virtual camera's ground
truth (each frame keeps the previous frame's points moved by the true homography, with noisy
descriptors). The full chain with the real detector node runs on a small random-initialised model
and is checked for structure (messages flow, live lines, summary, video, clean Ctrl-C); its
accuracy is checked only when the bundled weights exist.
"""
import dataclasses
import re
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image as PilImage

from usp_core.evaluation.metrics import corner_error
from usp_core.inference.features import Features
from usp_core.inference.weights import BUNDLED_WEIGHTS
from usp_core.models.layers import ModelConfig
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_ros.bridge.messages import features_to_msg, homography_from_msg
from usp_ros.msg import Features as FeaturesMsg
from usp_ros.msg import FrameMatch
from usp_ros.support.qos import output_qos
from usp_ros.tools.children import Children
from usp_ros.tools.frontend import Options, RunStats, Sample, child_commands, compose_ground_truth, parse_args
from usp_ros.tools.video import VideoWriter

SIZE = (320, 240)
LIVE_LINE = re.compile(r"^fps +[\d.]+ \| latency +[\d.]+ ms \| keypoints \d+ \| inliers (\d+|-) \| valid \d+/\d+")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-initialised narrow model, saved as usp-train would (model state dict + config)."""
    torch.manual_seed(0)
    config = ModelConfig(widths=(8, 8, 16, 16, 16, 16, 32, 32), descriptor_dim=32)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save({"model": UnsuperPoint(config).state_dict(), "config": {"model": dataclasses.asdict(config)}}, path)
    return path


def test_compose_ground_truth_walks_the_chain():
    a, b, c = (np.array([[1.0, 0, dx], [0, 1, 0], [0, 0, 1]]) for dx in (1.0, 2.0, 4.0))
    steps = {1: (0, a), 2: (1, b), 3: (2, c)}
    np.testing.assert_allclose(compose_ground_truth(steps, 2, 3), c)
    np.testing.assert_allclose(compose_ground_truth(steps, 0, 3), c @ b @ a)
    np.testing.assert_allclose(compose_ground_truth(steps, 3, 3), np.eye(3))
    assert compose_ground_truth({3: (2, c)}, 0, 3) is None  # broken chain
    assert compose_ground_truth(steps, 0, 3, limit=2) is None


def test_run_stats_line_and_summary():
    stats = RunStats(Sample(10.0 + index * 0.5, 20.0 + index, 1000, 100 + index, index != 3,
                            0.5 if index < 3 else float("inf")) for index in range(4))
    assert LIVE_LINE.match(stats.line(0, 2.0))
    assert "fps  2.0" in stats.line(0, 2.0) and "valid 3/4" in stats.line(0, 2.0)
    summary = stats.summary()
    assert "4 frames matched, 2.0 fps, valid 3/4" in summary
    assert "<= 1 px 75%" in summary and "median corner error 0.50 px" in summary
    assert RunStats().summary() == "summary: no FrameMatch received"


def test_options_and_child_commands(tmp_path):
    with pytest.raises(SystemExit):
        parse_args(["--video", str(tmp_path / "missing.mp4")])
    with pytest.raises(SystemExit):
        parse_args(["--out", "matches.png"])
    with pytest.raises(SystemExit):
        parse_args(["--out", str(tmp_path / "absent" / "matches.mp4")])
    options = parse_args(["--frames", "5", "--device", "cpu", "--keyframes"])
    assert options.frames == 5 and options.duration is None and options.out.is_absolute()
    commands = child_commands(options, Path("/share"))
    matcher = " ".join(commands["matcher_node"])
    assert "usp_ros.nodes.matcher" in matcher and "keyframe_mode:=true" in matcher and "device:=cpu" in matcher
    assert "/share/config/matcher.yaml" in matcher
    assert "source:=virtual" in " ".join(commands["image_source"])
    assert "model_path" not in " ".join(commands["detector_node"])  # the detector's default: bundled weights
    assert "backend:=auto" in commands["detector_node"]
    assert "backend:=torch" in child_commands(parse_args(["--backend", "torch"]), Path("/share"))["detector_node"]
    with pytest.raises(SystemExit):
        parse_args(["--backend", "tensorrt"])
    checkpoint = tmp_path / "model.pt"
    checkpoint.touch()
    video = tmp_path / "clip.mp4"
    video.touch()
    commands = child_commands(parse_args(["--model-path", str(checkpoint), "--video", str(video)]), Path("/share"))
    assert f"model_path:={checkpoint}" in commands["detector_node"]
    assert "source:=video" in commands["image_source"] and f"path:={video}" in commands["image_source"]
    assert parse_args([]).duration == Options.duration


@pytest.mark.parametrize("suffix", [".avi", ".gif"])
def test_the_video_replaces_an_older_one_only_when_closed(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    path.write_bytes(b"the previous run's video")
    video = VideoWriter(path, fps=10.0)
    frames = [np.full((48, 64, 3), 40 * index, np.uint8) for index in range(3)]
    for frame in frames:
        video.write(frame)
    assert path.read_bytes() == b"the previous run's video", "a run that dies here leaves the older video whole"
    video.close()
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and video.frames == 3
    if suffix == ".gif":
        with PilImage.open(path) as gif:
            assert gif.n_frames == 3 and gif.size == (32, 24)
    else:
        capture = cv2.VideoCapture(str(path))
        read = [capture.read()[1] for _ in range(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))]
        capture.release()
        assert [int(np.median(image)) for image in read] == pytest.approx([0, 40, 80], abs=3)


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_children_report_a_dead_child_and_stop_with_sigint_then_sigkill(tmp_path, wait):
    sleep = "import time; print('up', flush=True); time.sleep(60)"
    with Children(tmp_path, stop_timeout=2.0) as children:
        polite = children.start("polite", "-c", sleep)
        stubborn = children.start("stubborn", "-c", "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                                  + sleep)
        failing = children.start("failing", "-c", "import sys; print('cannot start: no camera'); sys.exit(3)")
        with pytest.raises(ValueError):
            children.start("failing", "-c", "pass")
        failing.wait(timeout=30)
        assert children.dead() == "failing"
        assert children.death_report("failing") == "failing exited with code 3; last lines of its log:\n" \
                                                   "cannot start: no camera"
        assert wait(lambda: "up" in children.log_tail("stubborn") and "up" in children.log_tail("polite"), 30)
    assert polite.returncode == -signal.SIGINT and stubborn.returncode == -signal.SIGKILL


def test_children_die_with_their_parent(tmp_path, wait):
    parent_code = ("import sys, time; from usp_ros.tools.children import Children; "
                   "child = Children(sys.argv[1]).start('grandchild', '-c', 'import time; time.sleep(60)'); "
                   "print(child.pid, flush=True); time.sleep(60)")
    with Children(tmp_path) as children:
        parent = children.start("parent", "-c", parent_code, str(tmp_path))
        assert wait(lambda: children.log_tail("parent").strip().isdigit(), 30), children.log_tail("parent")
        grandchild = int(children.log_tail("parent"))
        parent.kill()
        assert wait(lambda: not running(grandchild), 10)


class OracleDetector:
    """Stands in for the detector: Features for each virtual-camera frame, built from the ground truth."""

    def __init__(self, node, points: int = 300, dim: int = 64):
        self.rng = np.random.default_rng(0)
        self.points, self.dim = points, dim
        self.steps: dict = {}
        self.previous = None  # (stamp key, keypoints, descriptors) of the last published frame
        self.publisher = node.create_publisher(FeaturesMsg, "features", output_qos())
        node.create_subscription(FrameMatch, "ground_truth", self.on_truth, output_qos())

    def new_points(self, count: int):
        keypoints = self.rng.uniform((0, 0), (SIZE[0] - 1, SIZE[1] - 1), (count, 2))
        descriptors = self.rng.standard_normal((count, self.dim))
        return keypoints, descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)

    def publish(self, header, keypoints, descriptors):
        features = Features(keypoints.astype(np.float32), np.ones(len(keypoints), np.float32),
                            descriptors.astype(np.float32), SIZE)
        self.publisher.publish(features_to_msg(header, features))

    def on_truth(self, msg: FrameMatch):
        reference, current = (msg.reference_stamp.sec, msg.reference_stamp.nanosec), \
            (msg.header.stamp.sec, msg.header.stamp.nanosec)
        homography = homography_from_msg(msg)
        self.steps[current] = (reference, homography)
        if self.previous is None or self.previous[0] != reference:  # start (or restart) the track at the reference
            keypoints, descriptors = self.new_points(self.points)
            self.publish(type(msg.header)(stamp=msg.reference_stamp, frame_id=msg.header.frame_id), keypoints,
                         descriptors)
        else:
            keypoints, descriptors = self.previous[1:]
        moved = np.c_[keypoints, np.ones(len(keypoints))] @ homography.T
        moved = moved[:, :2] / moved[:, 2:]
        inside = np.flatnonzero((moved >= 0).all(1) & (moved < np.array(SIZE) - 1).all(1))
        kept = self.rng.permutation(inside)[: int(0.8 * len(keypoints))]
        noise = self.rng.standard_normal((len(kept), self.dim)) * 0.6 / np.sqrt(self.dim)
        fresh_points, fresh_descriptors = self.new_points(self.points - len(kept))
        keypoints = np.concatenate([moved[kept] + self.rng.normal(0, 0.5, (len(kept), 2)), fresh_points])
        descriptors = np.concatenate([descriptors[kept] + noise, fresh_descriptors])
        descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
        self.publish(msg.header, keypoints, descriptors)
        self.previous = (current, keypoints, descriptors)


def test_virtual_camera_matcher_homographies_match_ground_truth(ros_node, spawn, wait):
    oracle = OracleDetector(ros_node)
    matches = []
    ros_node.create_subscription(FrameMatch, "matches", matches.append, output_qos())
    matcher = spawn("-m", "usp_ros.nodes.matcher", name="matcher")
    assert wait(lambda: oracle.publisher.get_subscription_count() > 0 or matcher.poll() is not None, 30)
    spawn("-m", "usp_ros.nodes.image_source", "--ros-args", "-p", "source:=virtual", "-p", "rate:=15.0",
          "-p", f"width:={SIZE[0]}", "-p", f"height:={SIZE[1]}", name="image_source")
    assert wait(lambda: len(matches) >= 15, 40), f"only {len(matches)} FrameMatch received"
    errors = []
    for match in matches:
        current = (match.header.stamp.sec, match.header.stamp.nanosec)
        reference = (match.reference_stamp.sec, match.reference_stamp.nanosec)
        truth = compose_ground_truth(oracle.steps, reference, current)
        assert truth is not None, "FrameMatch stamps do not follow the camera's frames"
        errors.append(corner_error(homography_from_msg(match) if match.valid else None, truth, SIZE[::-1]))
    assert np.mean(np.array(errors) < 2.0) >= 0.9, f"corner errors {np.round(errors, 2)}"


def test_frontend_runs_the_chain_and_stops_cleanly_on_ctrl_c(spawn, wait, tmp_path, tiny_checkpoint):
    out = tmp_path / "matches.gif"
    frontend = spawn("-m", "usp_ros.tools.frontend", "--model-path", str(tiny_checkpoint), "--device", "cpu",
                     "--duration", "600", "--rate", "8", "--width", str(SIZE[0]), "--height", str(SIZE[1]),
                     "--out", str(out), name="frontend")
    log = tmp_path / "frontend.log"

    def live_lines():
        return [line for line in log.read_text().splitlines() if LIVE_LINE.match(line)]
    assert wait(lambda: len(live_lines()) >= 2 or frontend.poll() is not None, 90), log.read_text()
    children = child_pids(frontend.pid)
    assert len(children) == 3
    frontend.send_signal(signal.SIGINT)
    # up to STOP_TIMEOUT_S per child, then the GIF of every frame so far: slow on 2 loaded cores
    assert frontend.wait(timeout=90) == 130
    text = log.read_text()
    assert re.search(r"summary: \d+ frames matched", text) and "latency image -> FrameMatch" in text
    assert "keypoints" in live_lines()[0] and "Traceback" not in text
    assert not [pid for pid in children if running(pid)], "child nodes still running"
    with PilImage.open(out) as gif:  # the matcher's debug images (the current frame), at half size
        assert gif.n_frames >= 2 and gif.size == (SIZE[0] // 2, SIZE[1] // 2)


def test_frontend_reports_a_failing_node_and_stops_the_others(spawn, tmp_path, tiny_checkpoint):
    frontend = spawn("-m", "usp_ros.tools.frontend", "--model-path", str(tiny_checkpoint), "--device", "cuda:7",
                     "--frames", "3", "--out", str(tmp_path / "m.mp4"), name="frontend")
    assert frontend.wait(timeout=60) == 1
    text = (tmp_path / "frontend.log").read_text()
    assert re.search(r"error: (matcher_node|detector_node) exited with code 1", text), text
    assert "cannot start" in text and "cuda:7" in text and "Traceback" not in text
    assert "summary: no FrameMatch received" in text


@pytest.mark.skipif(not BUNDLED_WEIGHTS.is_file(), reason=f"no trained weights at {BUNDLED_WEIGHTS}: the learned "
                    "chain's accuracy cannot be judged with a random model")
def test_frontend_homographies_with_bundled_weights(spawn, tmp_path):
    # 2 Hz: the detector keeps up with every frame even on a slow CPU, so the result does not depend on load
    frontend = spawn("-m", "usp_ros.tools.frontend", "--frames", "20", "--rate", "2", "--out", str(tmp_path / "m.mp4"),
                     name="frontend")
    assert frontend.wait(timeout=120) == 0
    text = (tmp_path / "frontend.log").read_text()
    within = re.search(r"<= 5 px (\d+)%", text)
    assert within and int(within.group(1)) >= 70, text
    video = cv2.VideoCapture(str(tmp_path / "m.mp4"))
    readable, frame = video.read()
    assert readable and frame.shape == (480, 640, 3) and video.get(cv2.CAP_PROP_FRAME_COUNT) >= 10


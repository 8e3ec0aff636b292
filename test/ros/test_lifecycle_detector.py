"""The managed detector as its own process over real DDS, driven through its lifecycle services: output only
while active, the model loaded by configure, a failing configure that leaves the node unconfigured and alive."""
import itertools
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from usp_ros.bridge.images import numpy_to_image
from usp_ros.msg import Features

from .conftest import service_answer

QUIET_S = 3.0  # how long an inactive node is fed images and must stay silent
_namespaces = itertools.count()
GOAL = {Transition.TRANSITION_CONFIGURE: "inactive", Transition.TRANSITION_ACTIVATE: "active",
        Transition.TRANSITION_DEACTIVATE: "inactive", Transition.TRANSITION_CLEANUP: "unconfigured",
        Transition.TRANSITION_UNCONFIGURED_SHUTDOWN: "finalized", Transition.TRANSITION_ACTIVE_SHUTDOWN: "finalized"}


class ManagedDetector:
    """A lifecycle_detector_node process in its own namespace, its lifecycle services, its image and Features."""

    def __init__(self, ros_node, spawn, wait, model, *parameters: str):
        self.node, self.wait = ros_node, wait
        namespace = f"/lifecycle_test_{next(_namespaces)}"
        extra = [arg for parameter in parameters for arg in ("-p", parameter)]
        self.process = spawn("-m", "usp_ros.nodes.lifecycle_detector", "--ros-args", "-r", f"__ns:={namespace}",
                             "-p", f"model_path:={model}", "-p", "backend:=torch", "-p", "num_threads:=1", *extra,
                             name="detector")
        self.image_topic = f"{namespace}/image"
        self.change_state = ros_node.create_client(ChangeState, f"{namespace}/detector/change_state")
        self.get_state = ros_node.create_client(GetState, f"{namespace}/detector/get_state")
        self.images = ros_node.create_publisher(Image, self.image_topic, 10)
        self.features: list[Features] = []
        ros_node.create_subscription(Features, f"{namespace}/features", self.features.append, 10)
        rng = np.random.default_rng(0)
        self.picture = (rng.random((240, 320)) * 255).astype(np.uint8)
        self._stamps = itertools.count(1)

    def _call(self, client, request, done=lambda: False):
        assert client.wait_for_service(timeout_sec=60.0), f"no service {client.srv_name}"
        return service_answer(lambda: client.call_async(request), done)

    def state(self) -> str:
        return self._call(self.get_state, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        """Whether the transition succeeded; without an answer, whether the node reached its goal state
        (a transition is sent again only while the node has not reached it)."""
        request = ChangeState.Request(transition=Transition(id=transition_id))
        answer = self._call(self.change_state, request, done=lambda: self.state() == GOAL[transition_id])
        return True if answer is None else answer.success

    def publish_image(self) -> None:
        assert self.process.poll() is None, "detector process died"
        header = Header(stamp=Time(sec=1700000000 + next(self._stamps)), frame_id="camera")
        self.images.publish(numpy_to_image(self.picture, "mono8", header))

    def answers_within(self, seconds: float) -> bool:
        """Publish an image every 0.25 s for up to ``seconds``; True as soon as a Features arrives."""
        self.features.clear()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.publish_image()
            if self.wait(lambda: self.features, timeout=0.25):
                return True
        return False

    def subscribed(self) -> bool:
        return self.node.count_subscribers(self.image_topic) > 0


def test_transitions_gate_the_output(ros_node, spawn, wait, tiny_model):
    detector = ManagedDetector(ros_node, spawn, wait, tiny_model)
    assert detector.state() == "unconfigured"
    assert detector.transition(Transition.TRANSITION_CONFIGURE)
    assert detector.state() == "inactive"
    assert not detector.subscribed()
    assert not detector.answers_within(QUIET_S), "Features published while inactive"

    assert detector.transition(Transition.TRANSITION_ACTIVATE)
    assert detector.state() == "active"
    assert wait(detector.subscribed, timeout=20)
    assert detector.answers_within(60.0), "no Features while active"
    assert detector.features[0].keypoints.image_width == 320

    assert detector.transition(Transition.TRANSITION_DEACTIVATE)
    assert detector.state() == "inactive"
    assert wait(lambda: not detector.subscribed(), timeout=20), "still subscribed to images after deactivate"
    time.sleep(1.0)  # a frame in flight at deactivation may still arrive
    assert not detector.answers_within(QUIET_S), "Features published after deactivate"

    assert detector.transition(Transition.TRANSITION_CLEANUP)
    assert detector.state() == "unconfigured"
    assert detector.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert detector.state() == "finalized"


def test_reconfigure_after_cleanup_and_shutdown_while_active(ros_node, spawn, wait, tiny_model):
    detector = ManagedDetector(ros_node, spawn, wait, tiny_model)
    for _ in range(2):  # cleanup leaves a node that configures again
        assert detector.transition(Transition.TRANSITION_CONFIGURE)
        assert detector.transition(Transition.TRANSITION_ACTIVATE)
        assert detector.answers_within(60.0)
        assert detector.transition(Transition.TRANSITION_DEACTIVATE)
        assert detector.transition(Transition.TRANSITION_CLEANUP)
    assert detector.transition(Transition.TRANSITION_CONFIGURE)
    assert detector.transition(Transition.TRANSITION_ACTIVATE)
    assert detector.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert detector.state() == "finalized"
    assert wait(lambda: not detector.subscribed(), timeout=20), "still subscribed to images after shutdown"
    assert not detector.answers_within(QUIET_S), "Features published after shutdown"


@pytest.mark.parametrize("problem", ["missing model", "bad choice"])
def test_configure_with_a_missing_model_or_a_bad_choice_fails_and_stays_unconfigured(problem, ros_node, spawn, wait,
                                                                                      tmp_path, tiny_model):
    missing = tmp_path / "missing.pt"
    if problem == "missing model":
        detector, named = ManagedDetector(ros_node, spawn, wait, missing), str(missing)
    else:
        detector = ManagedDetector(ros_node, spawn, wait, tiny_model, "input_transport:=carrier_pigeon")
        named = "input_transport must be one of raw, compressed"
    assert detector.state() == "unconfigured"
    assert not detector.transition(Transition.TRANSITION_CONFIGURE)
    assert detector.state() == "unconfigured"
    assert detector.process.poll() is None, "the node exited on a failed configure"
    errors = [line for line in (tmp_path / "detector.log").read_text().splitlines() if "ERROR" in line]
    # one line per configure (a configure is sent again if its request was lost), and no traceback
    assert errors and all("cannot configure" in line and named in line for line in errors), errors
    assert "Traceback" not in (tmp_path / "detector.log").read_text()
    assert detector.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert detector.state() == "finalized"

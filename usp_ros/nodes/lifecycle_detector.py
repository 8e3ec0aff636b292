"""ROS 2 managed (lifecycle) node ``detector``: the detector node, brought up by a lifecycle manager.

Same parameters, topics and behaviour as ``detector_node`` (usp_ros.nodes.detector, whose DetectorCore
does the work), in steps:

- unconfigured: parameters declared (settable, validated and applied as in every state), publishers
  created, no model;
- configure: reads the parameters and loads the model; a failure (missing model, bad parameter)
  returns FAILURE with one log line and leaves the node unconfigured;
- activate: subscribes to the images; Features, debug images and diagnostics are published;
- deactivate: unsubscribes; nothing is published while inactive;
- cleanup: frees the model; shutdown works from every state.

Run: ``ros2 run usp_ros lifecycle_detector_node --ros-args --params-file config/detector.yaml``, then
``ros2 lifecycle set /detector configure`` and ``... activate`` (or a lifecycle manager's autostart).
"""
from __future__ import annotations

from lifecycle_msgs.msg import State
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from usp_core.support.errors import first_line
from usp_ros.nodes.detector import NODE_NAME, START_ERRORS, DetectorCore
from usp_ros.support.run import run

__all__ = ["LifecycleDetectorNode", "main"]


class LifecycleDetectorNode(DetectorCore, LifecycleNode):
    """The detector as a managed node: configure loads the model, activate subscribes."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        self._create_publishers(self.create_lifecycle_publisher)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load()
        except START_ERRORS as error:
            self.get_logger().error(f"cannot configure: {first_line(error)}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {self._describe()}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._start_input()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self.get_logger().info("deactivated: not subscribed to images")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unload()
        self.get_logger().info("cleaned up: model freed")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any primary state: deactivate and clean up first, as far as ``state`` calls for."""
        if state.state_id == State.PRIMARY_STATE_ACTIVE:
            self.on_deactivate(state)
        if state.state_id in (State.PRIMARY_STATE_ACTIVE, State.PRIMARY_STATE_INACTIVE):
            self.on_cleanup(state)
        return super().on_shutdown(state)


def main(args: list[str] | None = None) -> int:
    """Run the managed detector until shutdown; 1 with one fatal log line when it cannot start."""
    return run(LifecycleDetectorNode, args, name=NODE_NAME, start_errors=START_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())

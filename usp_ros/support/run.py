"""The one ``main()`` of every usp_ros node: start, spin, stop cleanly, or fail with one line.

``run`` initialises rclpy (``with rclpy.init(...)``: the context is shut down however the run ends),
constructs the node, spins it until Ctrl-C, an external shutdown of the context (SIGTERM) or, when
given, until the node's ``done`` future completes (a source at its end), then
destroys the node (its ``destroy_node`` stops its worker threads and releases its devices) and returns 0.

A node that cannot start (its constructor raises one of ``start_errors``, ValueError, or rclpy's
ParameterException for a bad ``--ros-args`` value) gets one FATAL log line, "cannot start: <reason>",
and ``run`` returns 1, with no traceback. rclpy's shutdown of the context then destroys every node it
still tracks, a half-built one included: a node's ``destroy_node`` must cope with a constructor that
stopped part way (class-level defaults for what it releases).
"""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.task import Future

from usp_core.support.errors import first_line

__all__ = ["run"]


def run(make_node: Callable[[], Node], args: list[str] | None = None, *, name: str,
        start_errors: tuple[type[BaseException], ...] = (),
        done: Callable[[Node], Future] | None = None) -> int:
    """Run the node ``make_node()`` builds until shutdown (or ``done(node)`` completes); the process exit status.

    name: the logger of the fatal line when the node cannot be built (its node name). A ``done`` future that
    completes with False (a source lost mid-run) gives 1, as a start that fails.
    """
    try:
        with rclpy.init(args=args):
            try:
                node = make_node()
            except (ValueError, ParameterException, *start_errors) as error:
                rclpy.logging.get_logger(name).fatal(f"cannot start: {first_line(error)}")
                return 1
            try:
                if done is None:
                    rclpy.spin(node)
                else:
                    finished = done(node)
                    rclpy.spin_until_future_complete(node, finished)
                    if finished.done() and finished.result() is False:
                        return 1  # the node ended on an error it has logged
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0

"""The one main() of the nodes (usp_ros.support.run), in-process: a node that ends, a node that cannot start."""
import pytest
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node
from rclpy.task import Future

from usp_ros.support.run import run


class Finishing(Node):
    """Completes ``finished`` from its first timer tick; records its destruction."""

    destroyed = False

    def __init__(self):
        super().__init__("run_test")
        self.finished = Future()
        self.create_timer(0.01, lambda: self.finished.done() or self.finished.set_result(True))

    def destroy_node(self):
        Finishing.destroyed = True
        super().destroy_node()


def test_a_node_runs_until_its_future_completes_and_is_destroyed():
    Finishing.destroyed = False
    assert run(Finishing, [], name="run_test", done=lambda node: node.finished) == 0
    assert Finishing.destroyed


class Broken(Exception):
    pass


def raising(error):
    def make_node():
        raise error
    return make_node


@pytest.mark.parametrize("error", [ValueError("no such source\nsecond line"), Broken("model unusable"),
                                   InvalidParameterValueException("rate", 0.0, "out of range")])
def test_a_node_that_cannot_start_gives_one_fatal_line_and_1(error, capfd):
    assert run(raising(error), [], name="run_test", start_errors=(Broken,)) == 1
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "FATAL" in lines[0] and "[run_test]: cannot start: " in lines[0], lines
    assert str(error).splitlines()[0] in lines[0]


def test_other_errors_are_not_hidden():
    with pytest.raises(RuntimeError):
        run(raising(RuntimeError("a bug")), [], name="run_test")

"""The node scaffold's parameter path (usp_ros.support.parameters), in-process on a plain Node and a LifecycleNode:
spec -> descriptor, declaration, a refused change that never reaches apply, apply under the worker's lock."""
import threading

import pytest
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.parameter import Parameter

from usp_ros.support.parameters import NodeParameters, ParameterSpec, check_choices, defaults

SPECS = {
    "method": ParameterSpec("ransac", "how", choices=("ransac", "magsac")),
    "count": ParameterSpec(10, "a count", integer_range=(1, 100)),
    "ratio": ParameterSpec(0.5, "a ratio", float_range=(0.0, 1.0)),
    "fixed": ParameterSpec("x", "set at start", read_only=True),
}


def test_spec_to_descriptor_ranges_choices_and_read_only():
    plain = ParameterSpec(False, "a flag").descriptor()
    assert plain.description == "a flag" and not plain.read_only
    assert not plain.integer_range and not plain.floating_point_range and not plain.additional_constraints
    stepped = ParameterSpec(0, "width", read_only=True, integer_range=(0, 64, 8)).descriptor()
    assert stepped.read_only
    assert (stepped.integer_range[0].from_value, stepped.integer_range[0].to_value, stepped.integer_range[0].step) \
        == (0, 64, 8)
    assert ParameterSpec(1, "count", integer_range=(1, 10)).descriptor().integer_range[0].step == 1
    ratio = ParameterSpec(0.5, "ratio", float_range=(0.0, 1.0)).descriptor().floating_point_range[0]
    assert (ratio.from_value, ratio.to_value, ratio.step) == (0.0, 1.0, 0.0)
    chosen = SPECS["method"].descriptor()
    assert chosen.description == "how [ransac|magsac]"
    assert chosen.additional_constraints == "one of: ransac, magsac"


def test_defaults_and_choices():
    assert defaults(SPECS) == {"method": "ransac", "count": 10, "ratio": 0.5, "fixed": "x"}
    check_choices(SPECS, defaults(SPECS))
    with pytest.raises(ValueError, match="method must be one of ransac, magsac, got 'lmeds'"):
        check_choices(SPECS, dict(defaults(SPECS), method="lmeds"))


@pytest.fixture
def context():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


class Recorder:
    """validate and apply callbacks that record their calls (and whether the lock was held), and refuse count 13."""

    def __init__(self, lock):
        self.lock, self.calls = lock, []

    def validate(self, values):
        self.calls.append(("validate", values["count"]))
        if values["count"] == 13:
            raise ValueError("count 13 is unlucky")

    def apply(self, values):
        self.calls.append(("apply", values["count"], self.lock.locked()))


@pytest.mark.parametrize("node_class", [Node, LifecycleNode])
def test_declared_validated_then_applied_under_the_lock(context, node_class):
    node = node_class("scaffold_test", context=context, parameter_overrides=[Parameter("count", value=20)])
    lock = threading.Lock()
    recorder = Recorder(lock)
    try:
        parameters = NodeParameters(node, SPECS, recorder.validate, recorder.apply, lock)
        assert parameters.values == dict(defaults(SPECS), count=20), "start values: the overrides"
        assert parameters.lock is lock and recorder.calls == [], "start values are the node's to check"
        for name, spec in SPECS.items():
            assert node.describe_parameter(name).description.startswith(spec.description)

        (result,) = node.set_parameters([Parameter("count", value=30)])
        assert result.successful
        assert recorder.calls == [("validate", 30), ("apply", 30, True)], "validated, then applied under the lock"
        assert parameters.values["count"] == 30 and node.get_parameter("count").value == 30

        recorder.calls.clear()
        refusals = {"count": 13, "method": "lmeds", "ratio": 2.0, "fixed": "y"}
        for name, value in refusals.items():
            (result,) = node.set_parameters([Parameter(name, value=value)])
            assert not result.successful and result.reason, f"{name}={value!r} must be refused with a reason"
            assert node.get_parameter(name).value == parameters.values[name] != value, "the old value stays in force"
        assert "unlucky" in node.set_parameters([Parameter("count", value=13)])[0].reason
        assert "method must be one of" in node.set_parameters([Parameter("method", value="lmeds")])[0].reason
        assert recorder.calls == [("validate", 13), ("validate", 13)], "a refused change never reaches apply; " \
            "rclpy refuses out-of-range and read-only values, and the scaffold other choices, before validate"
    finally:
        node.destroy_node()


def test_apply_waits_for_the_worker_holding_the_lock(context):
    node = Node("scaffold_lock_test", context=context)
    lock = threading.Lock()
    recorder = Recorder(lock)
    NodeParameters(node, SPECS, recorder.validate, recorder.apply, lock)
    try:
        with lock:  # the worker is busy with a frame
            setter = threading.Thread(target=node.set_parameters, args=([Parameter("count", value=40)],))
            setter.start()
            setter.join(timeout=0.5)
            assert setter.is_alive() and recorder.calls == [("validate", 40)], "applied while the worker works"
        setter.join(timeout=5)
        assert recorder.calls == [("validate", 40), ("apply", 40, True)]
    finally:
        node.destroy_node()


@pytest.mark.parametrize("override, error", [
    (Parameter("count", value=0), ParameterException),  # out of the declared range: rclpy refuses it
    (Parameter("count", value="ten"), ParameterException),  # wrong type
    (Parameter("method", value="lmeds"), ValueError),  # not one of the choices
])
def test_unusable_start_values_raise(context, override, error):
    """Range and type at declaration (rclpy); choices when the node checks its start values."""
    node = Node("scaffold_start_test", context=context, parameter_overrides=[override])
    try:
        with pytest.raises(error):
            NodeParameters(node, SPECS).check()
    finally:
        node.destroy_node()

"""The one parameter path of every usp_ros node: a table of specs, declared, validated in on_set, applied in post_set.

A node module lists its parameters as ``PARAMETERS: dict[str, ParameterSpec]``. :class:`NodeParameters`
declares them (description, range, choices, read-only flag: what ``ros2 param describe`` shows), checks
the values the node starts with against their choices when the node asks (:meth:`NodeParameters.check`),
and watches every runtime change:

- on_set (before the change): rclpy has already refused read-only, out-of-range and wrongly typed
  values; here a string outside its choices is refused, then the node's ``validate(values)``, which
  raises ValueError or RuntimeError with the reason for a combination it cannot run with. Nothing
  changes in the node yet: a refused change leaves the old values in force.
- post_set (after rclpy stored the new value): the node's ``apply(values)`` runs under ``lock``, the
  lock the node's worker holds while it works, so a frame is never processed half with the old and
  half with the new settings; then ``values`` is replaced (a new dict: a reader holding the old one
  keeps a consistent set).

Works the same for rclpy's Node and LifecycleNode (a lifecycle node validates and applies in every state).
A node keeps its NodeParameters under any attribute name but ``_parameters``, which rclpy's Node uses.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.parameter import Parameter

from usp_core.support.errors import first_line

__all__ = ["ParameterSpec", "NodeParameters", "check_choices", "defaults"]


@dataclass(frozen=True)
class ParameterSpec:
    """One declared parameter.

    integer_range: (from, to) or (from, to, step), step 1 by default; float_range: (from, to), continuous;
    choices: the values a string parameter accepts (refused otherwise, at start and at runtime).
    """

    default: Any
    description: str
    read_only: bool = False
    integer_range: tuple[int, int] | tuple[int, int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor that ``ros2 param describe`` shows in full (choices appended to the description)."""
        listed = f" [{'|'.join(self.choices)}]" if self.choices else ""
        descriptor = ParameterDescriptor(description=self.description + listed, read_only=self.read_only)
        if self.choices:
            descriptor.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.integer_range is not None:
            low, high, step = (*self.integer_range, 1)[:3]
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=step)]
        if self.float_range is not None:
            low, high = self.float_range
            descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
        return descriptor


def defaults(specs: dict[str, ParameterSpec]) -> dict[str, Any]:
    """Every parameter's default value, by name."""
    return {name: spec.default for name, spec in specs.items()}


def check_choices(specs: dict[str, ParameterSpec], values: dict[str, Any]) -> None:
    """ValueError naming the first parameter whose value is not one of its spec's choices."""
    for name, spec in specs.items():
        if spec.choices and values[name] not in spec.choices:
            raise ValueError(f"{name} must be one of {', '.join(spec.choices)}, got {values[name]!r}")


def _accept(values: dict[str, Any]) -> None:
    """The default validate and apply: nothing to check, nothing to do."""


class NodeParameters:
    """A node's parameters: declared from ``specs``, validated in on_set, applied in post_set under ``lock``.

    ``validate(values)`` and ``apply(values)`` get every parameter's value by name, the change included.
    Construction raises rclpy's ParameterException for a start value that its range or type refuses;
    :meth:`check` raises ValueError for one outside its choices.
    """

    def __init__(self, node, specs: dict[str, ParameterSpec],
                 validate: Callable[[dict[str, Any]], None] = _accept,
                 apply: Callable[[dict[str, Any]], None] = _accept,
                 lock: threading.Lock | threading.RLock | None = None) -> None:
        self._node, self._specs = node, specs
        self._validate, self._apply = validate, apply
        self.lock = lock if lock is not None else threading.Lock()
        for name, spec in specs.items():
            node.declare_parameter(name, spec.default, spec.descriptor())
        self.values: dict[str, Any] = {name: node.get_parameter(name).value for name in specs}
        node.add_on_set_parameters_callback(self._on_set)
        node.add_post_set_parameters_callback(self._post_set)

    def check(self) -> None:
        """ValueError naming a start value outside its choices; a node calls it when it starts using its values
        (construction; a lifecycle node's configure, which then fails instead of the process)."""
        check_choices(self._specs, self.values)

    def _changed(self, parameters: list[Parameter]) -> dict[str, Any] | None:
        """Every value with ``parameters`` applied; None when none of them is in the table (e.g. use_sim_time)."""
        ours = {p.name: p.value for p in parameters if p.name in self._specs}
        return dict(self.values, **ours) if ours else None

    def _on_set(self, parameters: list[Parameter]) -> SetParametersResult:
        values = self._changed(parameters)
        if values is None:
            return SetParametersResult(successful=True)
        try:
            check_choices(self._specs, values)
            self._validate(values)
        except (ValueError, RuntimeError) as error:  # RuntimeError: e.g. a backend that cannot run on a device
            return SetParametersResult(successful=False, reason=first_line(error))
        return SetParametersResult(successful=True)

    def _post_set(self, parameters: list[Parameter]) -> None:
        values = self._changed(parameters)
        if values is None:
            return
        with self.lock:
            self._apply(values)
            self.values = values
        changed = ", ".join(f"{p.name}={p.value}" for p in parameters)
        self._node.get_logger().info(f"parameters changed: {changed}")

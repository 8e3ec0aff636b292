"""ParameterDescriptor construction shared by the nodes: description, read-only flag, range, choices."""
from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

__all__ = ["describe"]


def describe(
    description: str,
    *,
    read_only: bool = False,
    integer_range: tuple[int, int] | tuple[int, int, int] | None = None,
    float_range: tuple[float, float] | None = None,
    choices: tuple[str, ...] = (),
) -> ParameterDescriptor:
    """A ParameterDescriptor that `ros2 param describe` shows in full.

    integer_range: (from, to) or (from, to, step), step 1 by default; float_range: (from, to),
    continuous. choices are appended to the description and listed as additional constraints.
    """
    listed = f" [{'|'.join(choices)}]" if choices else ""
    descriptor = ParameterDescriptor(description=description + listed, read_only=read_only)
    if choices:
        descriptor.additional_constraints = f"one of: {', '.join(choices)}"
    if integer_range is not None:
        low, high, step = (*integer_range, 1)[:3]
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=step)]
    if float_range is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float_range[0], to_value=float_range[1],
                                                              step=0.0)]
    return descriptor

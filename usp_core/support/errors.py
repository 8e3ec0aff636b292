"""Errors as one readable line: what the CLIs print and the nodes log (no torch, no ROS)."""
from __future__ import annotations

__all__ = ["first_line"]


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type name when the message is empty.

    A first line that only introduces the next (it ends with ":", as torch's "Error(s) in loading
    state_dict for X:") is joined with that next line, so the reason is not cut off.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]

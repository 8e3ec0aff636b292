"""Stop requests by signal (Ctrl-C, SIGTERM) as a flag that a loop polls, not an exception.

A KeyboardInterrupt raised from a signal handler lands wherever the main thread happens to be; inside
rclpy's C++ message conversion it surfaces as a RuntimeError ("Unable to convert call argument"), and
inside a bag writer it can leave half a record. So the first signal only sets ``requested``: the loop
finishes the step in hand and stops cleanly. It also restores the previous handler, so a second signal
acts as it would have without us (Ctrl-C: KeyboardInterrupt at once).
"""
from __future__ import annotations

import signal

__all__ = ["StopRequest"]


class StopRequest:
    """Context manager: while inside, the first of ``signals`` sets ``requested`` instead of interrupting."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT,)) -> None:
        self.signals = signals
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        self._previous = {number: signal.signal(number, self._handle) for number in self.signals}
        return self

    def __exit__(self, *exc_info) -> None:
        self._restore()

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self._restore()

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

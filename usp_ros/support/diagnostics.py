"""Counters, rates and the /diagnostics message of the usp_ros nodes, defined once.

Each node counts events (frames received, published, bad, ...) from its executor and worker threads in
a :class:`Statistics`, and once a period (a timer) takes a :class:`Period` and publishes
:func:`diagnostics_message`. Definitions, the same for every node:

- a total is the number of events since the node started;
- a rate (Hz) is the number of events in the period divided by the wall time the period lasted;
- a duration (ms) is the mean time of the timed events in the period; a period without any keeps the
  previous period's mean (NaN before the first), so a reader never sees a gap while frames are sparse.

Every node counts ``received`` (inputs taken from the subscription) and ``published`` (outputs sent):
they give the "input rate (Hz)" and "output rate (Hz)" keys and the "frames received" and "frames
published" totals of every node's status.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

__all__ = ["PERIOD_S", "RECEIVED", "PUBLISHED", "Period", "Statistics", "diagnostics_message"]

PERIOD_S = 1.0  # how often the nodes publish /diagnostics
RECEIVED, PUBLISHED = "received", "published"


@dataclass(frozen=True)
class Period:
    """What happened between two :meth:`Statistics.take_period` calls.

    seconds: wall time elapsed; counts: events in the period by name; totals: events since start by name;
    mean_ms: mean duration of each timed counter's events (see the module docstring).
    """

    seconds: float
    counts: dict[str, int]
    totals: dict[str, int]
    mean_ms: dict[str, float]

    def rate(self, name: str) -> float:
        """Events of ``name`` per second of the period's wall time."""
        return self.counts[name] / self.seconds


class Statistics:
    """Thread-safe event counters (``names`` plus ``received`` and ``published``), read once a period."""

    def __init__(self, names: Iterable[str] = (), clock: Callable[[], float] = time.monotonic) -> None:
        names = (RECEIVED, PUBLISHED, *names)
        self._lock = threading.Lock()
        self._clock = clock
        self._totals = dict.fromkeys(names, 0)
        self._counts = dict.fromkeys(names, 0)
        self._seconds: dict[str, float] = {}
        self._mean_ms: dict[str, float] = {}
        self._started = clock()

    def count(self, name: str, amount: int = 1, seconds: float | None = None) -> None:
        """``amount`` events of ``name``; ``seconds``: the time they took, which makes ``name`` a timed counter."""
        with self._lock:
            self._totals[name] += amount
            self._counts[name] += amount
            if seconds is not None:
                self._seconds[name] = self._seconds.get(name, 0.0) + seconds
                self._mean_ms.setdefault(name, math.nan)

    def total(self, name: str) -> int:
        """Events of ``name`` since start."""
        with self._lock:
            return self._totals[name]

    def take_period(self) -> Period:
        """The period since the previous call (or since construction); starts the next one."""
        with self._lock:
            now = self._clock()
            for name, seconds in self._seconds.items():
                if self._counts[name]:
                    self._mean_ms[name] = 1000.0 * seconds / self._counts[name]
            period = Period(max(now - self._started, 1e-9), dict(self._counts), dict(self._totals),
                            dict(self._mean_ms))
            self._started = now
            self._counts = dict.fromkeys(self._counts, 0)
            self._seconds = dict.fromkeys(self._seconds, 0.0)
            return period


def diagnostics_message(stamp: Time, name: str, hardware_id: str, period: Period, warnings: dict[str, str],
                        idle: str, values: dict[str, Any]) -> DiagnosticArray:
    """One node's status for /diagnostics.

    WARN when a counter named in ``warnings`` rose in the period, the message listing them ("3 bad
    frame(s) skipped" for ``{"bad": "bad frame(s) skipped"}``); else OK with ``idle`` when nothing was
    received in the period, else "running". The key/values are the rates and totals of ``received``
    and ``published``, then ``values`` (str() of each).
    """
    raised = [f"{period.counts[counter]} {text}" for counter, text in warnings.items() if period.counts[counter]]
    if raised:
        level, message = DiagnosticStatus.WARN, ", ".join(raised)
    else:
        level, message = DiagnosticStatus.OK, idle if not period.counts[RECEIVED] else "running"
    common = {"input rate (Hz)": f"{period.rate(RECEIVED):.2f}", "output rate (Hz)": f"{period.rate(PUBLISHED):.2f}",
              "frames received": period.totals[RECEIVED], "frames published": period.totals[PUBLISHED]}
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=key, value=str(value))
                                      for key, value in {**common, **values}.items()])
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])

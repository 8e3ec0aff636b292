"""Header stamps: as dictionary keys (pairing the messages of one frame: image, features, matches, ground truth)
and as nanoseconds (ages and latencies)."""
from __future__ import annotations

import collections

__all__ = ["stamp_key", "stamp_ns", "StampCache"]


def stamp_key(stamp) -> tuple[int, int]:
    """builtin_interfaces/Time -> hashable (sec, nanosec)."""
    return stamp.sec, stamp.nanosec


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time -> nanoseconds since the epoch (comparable with time.time_ns())."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class StampCache(collections.OrderedDict):
    """Values keyed by stamp_key, the oldest dropped beyond ``capacity`` entries (not thread-safe)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, stamp, value) -> None:
        """Store ``value`` under ``stamp`` (a builtin_interfaces/Time) and drop the oldest entries beyond capacity."""
        self[stamp_key(stamp)] = value
        while len(self) > self.capacity:
            self.popitem(last=False)

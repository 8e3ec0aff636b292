"""Header stamps as dictionary keys: pairing messages of one frame (image, features, matches, ground truth)."""
from __future__ import annotations

import collections

__all__ = ["stamp_key", "StampCache"]


def stamp_key(stamp) -> tuple[int, int]:
    """builtin_interfaces/Time -> hashable (sec, nanosec)."""
    return stamp.sec, stamp.nanosec


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

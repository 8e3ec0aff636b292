"""Stamp keys and the bounded stamp cache used to pair messages of one frame."""
from builtin_interfaces.msg import Time

from usp_ros.support.stamps import StampCache, stamp_key


def test_stamp_key_tells_stamps_apart():
    assert stamp_key(Time(sec=3, nanosec=5)) == (3, 5)
    assert stamp_key(Time(sec=3, nanosec=5)) != stamp_key(Time(sec=3, nanosec=6))


def test_cache_keeps_the_newest_entries():
    cache = StampCache(capacity=2)
    for second in range(4):
        cache.put(Time(sec=second), f"frame {second}")
    assert list(cache) == [(2, 0), (3, 0)]
    assert cache[(3, 0)] == "frame 3" and cache.get((0, 0)) is None
    cache.put(Time(sec=2), "frame 2 again")
    assert list(cache) == [(2, 0), (3, 0)] and cache[(2, 0)] == "frame 2 again"

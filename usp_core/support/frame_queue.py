"""A bounded frame queue that drops instead of blocking, and the worker thread that drains it.

The executor thread only ever ``put``-s incoming frames; a :class:`QueueWorker` thread takes them
one at a time and runs the slow work (inference). With depth 1 and ``drop_oldest`` a frame waiting
for the worker is replaced by each newer one, so a slow model never builds a backlog and the
latency of what is published never grows with time. Pure Python, no ROS.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Callable, Generic, TypeVar

__all__ = ["POLICIES", "FrameQueue", "QueueWorker"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

POLICIES = ("drop_oldest", "drop_newest")  # which frame gives way when the queue is full


class FrameQueue(Generic[T]):
    """Thread-safe queue of at most ``depth`` items; ``put`` never blocks.

    When full, ``drop_oldest`` discards the longest-waiting item to make room (freshest data wins),
    ``drop_newest`` discards the incoming one (the waiting items keep their place). ``dropped``
    counts the items discarded either way.
    """

    def __init__(self, depth: int = 1, policy: str = "drop_oldest") -> None:
        if depth < 1:
            raise ValueError(f"queue depth must be >= 1, got {depth}")
        if policy not in POLICIES:
            raise ValueError(f"queue policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.depth = depth
        self.policy = policy
        self.dropped = 0
        self._items: collections.deque[T] = collections.deque()
        self._closed = False
        self._ready = threading.Condition()

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> bool:
        """Add ``item``; returns True when an item (the oldest or this one) was dropped to respect the depth."""
        with self._ready:
            if self._closed:
                return False
            if len(self._items) < self.depth:
                self._items.append(item)
                self._ready.notify()
                return False
            self.dropped += 1
            if self.policy == "drop_oldest":
                self._items.popleft()
                self._items.append(item)
                self._ready.notify()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest waiting item; None after ``timeout`` seconds with nothing, or once closed and empty."""
        with self._ready:
            self._ready.wait_for(lambda: self._items or self._closed, timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        """Wake every waiting ``get``; later ``put``-s are ignored, items already queued can still be taken."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class QueueWorker(Generic[T]):
    """A daemon thread that calls ``handler(item)`` for each item taken from ``queue``, until stopped.

    An exception raised by the handler is passed to ``on_error(item, error)`` (default: logged) and
    the thread goes on with the next item: one bad frame never ends processing.
    """

    def __init__(self, queue: FrameQueue[T], handler: Callable[[T], None],
                 on_error: Callable[[T, BaseException], None] | None = None, name: str = "frame-worker") -> None:
        self.queue = queue
        self.handler = handler
        self.on_error = on_error or (lambda item, error: logger.exception("frame handler failed", exc_info=error))
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> QueueWorker[T]:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Close the queue and wait for the item in hand to finish; True when the thread has ended."""
        self.queue.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self.queue.closed:
            item = self.queue.get(timeout=0.5)
            if item is None:
                continue
            try:
                self.handler(item)
            except Exception as error:  # noqa: BLE001  (any failure of one frame is reported, not fatal)
                self.on_error(item, error)

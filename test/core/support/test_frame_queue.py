"""The drop-oldest frame queue and its worker thread: no backlog, freshest frame wins, errors never stop it."""
import threading
import time

import pytest

from usp_core.support.frame_queue import FrameQueue, QueueWorker


def test_drop_oldest_keeps_the_newest_item():
    queue = FrameQueue(depth=1, policy="drop_oldest")
    assert queue.put("a") is False
    assert queue.put("b") is True
    assert queue.put("c") is True
    assert queue.dropped == 2
    assert len(queue) == 1
    assert queue.get(timeout=0) == "c"
    assert queue.get(timeout=0) is None


def test_drop_newest_keeps_the_waiting_item():
    queue = FrameQueue(depth=1, policy="drop_newest")
    queue.put("a")
    assert queue.put("b") is True
    assert queue.dropped == 1
    assert queue.get(timeout=0) == "a"


def test_deeper_queue_is_fifo_and_drops_only_beyond_its_depth():
    queue = FrameQueue(depth=3)
    for item in range(5):
        queue.put(item)
    assert queue.dropped == 2
    assert [queue.get(timeout=0) for _ in range(3)] == [2, 3, 4]


def test_get_times_out_and_close_wakes_a_waiting_get():
    queue = FrameQueue()
    start = time.monotonic()
    assert queue.get(timeout=0.05) is None
    assert time.monotonic() - start >= 0.04
    result = []
    waiter = threading.Thread(target=lambda: result.append(queue.get()))
    waiter.start()
    time.sleep(0.05)
    queue.close()
    waiter.join(timeout=2)
    assert not waiter.is_alive() and result == [None]
    assert queue.put("late") is False and len(queue) == 0


@pytest.mark.parametrize("depth, policy", [(0, "drop_oldest"), (1, "block"), (1, "")])
def test_rejects_bad_settings(depth, policy):
    with pytest.raises(ValueError):
        FrameQueue(depth, policy)


def test_slow_worker_processes_the_freshest_frames_without_backlog():
    queue = FrameQueue(depth=1)
    processed = []

    def slow_handler(item):
        time.sleep(0.02)
        processed.append(item)

    worker = QueueWorker(queue, slow_handler).start()
    for item in range(100):
        queue.put(item)
        time.sleep(0.002)
    deadline = time.monotonic() + 2
    while (not processed or processed[-1] != 99) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop()
    assert processed[-1] == 99, "the last frame put must be the last one processed"
    assert processed == sorted(processed), "frames are processed in arrival order"
    assert len(processed) + queue.dropped == 100, "every frame is either processed or counted as dropped"
    assert queue.dropped > 50, "a handler 10x slower than the input must drop most frames"


def test_handler_errors_are_reported_and_the_worker_goes_on():
    queue = FrameQueue(depth=10)
    errors, handled = [], []

    def handler(item):
        if item % 2:
            raise RuntimeError(f"bad {item}")
        handled.append(item)

    worker = QueueWorker(queue, handler, on_error=lambda item, error: errors.append((item, str(error)))).start()
    for item in range(6):
        queue.put(item)
    deadline = time.monotonic() + 2
    while len(handled) + len(errors) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop()
    assert handled == [0, 2, 4]
    assert errors == [(1, "bad 1"), (3, "bad 3"), (5, "bad 5")]

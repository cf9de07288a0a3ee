"""The queued worker behind the webhook, the event bus, MQTT and the unknown sightings."""

from __future__ import annotations

import threading

from facerec.queued import QueuedWorker


def _blocked_worker(queue_size: int) -> tuple[QueuedWorker, list[int], threading.Event]:
    """A worker whose handler holds its first item until the gate opens."""
    started, gate, got = threading.Event(), threading.Event(), []

    def handle(item: int) -> None:
        started.set()
        gate.wait()
        got.append(item)

    worker = QueuedWorker(handle, queue_size, "test-queued")
    worker.put(0)
    assert started.wait(30), "the worker never took the first item"
    return worker, got, gate


def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    worker, got, gate = _blocked_worker(2)
    for i in range(1, 5):
        worker.put(i)  # room for two: 1 and 2 make way for 3 and 4
    assert worker.dropped == 2
    gate.set()
    assert worker.flush(30)
    assert got == [0, 3, 4]
    assert worker.close() == 0 and worker.close() == 0, "closing twice is harmless"
    worker.put(5)
    assert worker.dropped == 2 and got == [0, 3, 4], "nothing is queued once closed"


def test_close_says_how_many_items_it_left_behind() -> None:
    worker, got, gate = _blocked_worker(4)
    worker.put(1)
    worker.put(2)
    assert worker.close(timeout=0.2) == 2  # the handler is stuck on 0: 1 and 2 wait in vain
    assert got == []
    gate.set()  # let the thread finish


def test_idle_calls_come_between_items_and_on_a_poke_without_dropping_any() -> None:
    got: list[object] = []
    ticked = threading.Event()

    def handle(item: object) -> None:
        got.append(item)
        if item is None:
            ticked.set()

    worker = QueuedWorker(handle, 2, "test-idle", idle_s=3600.0)  # no timer tick within the test
    worker.put("a")
    worker.poke()
    assert ticked.wait(30), "poke did not lead to an idle call"
    worker.put("b")
    assert worker.flush(30) and got == ["a", None, "b"] and worker.dropped == 0
    assert worker.running
    assert worker.close() == 0 and not worker.running
    quick = QueuedWorker(handle, 2, "test-idle-timer", idle_s=0.01)  # nothing queued: the timer ticks
    ticked.clear()
    got.clear()
    assert ticked.wait(30) and got[0] is None
    quick.close()

"""A bounded queue drained by one worker thread, for sinks that must never block a camera.

The webhook, the event bus, MQTT and the unknown sightings each hand their items to a
:class:`QueuedWorker`: :meth:`QueuedWorker.put` never blocks (when the queue is full the
oldest waiting item is dropped and counted), the worker calls the owner's handler with
each item in order, and :meth:`QueuedWorker.close` delivers what is queued within a time
limit and says how much it had to leave behind.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

#: Put on the queue by :meth:`QueuedWorker.close`: the worker stops when it reaches it.
_STOP = object()
#: Put on the queue by :meth:`QueuedWorker.poke`: an idle call now.
_IDLE = object()


def put_dropping_oldest(q: queue.Queue, item: Any) -> int:
    """Queue ``item`` without ever blocking: when ``q`` is full, the oldest waiting items
    make room (each marked done, so ``q.join()`` does not wait for them).

    Returns:
        How many items were dropped.
    """
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                q.get_nowait()
                q.task_done()
                dropped += 1
            except queue.Empty:
                pass


class QueuedWorker:
    """Calls ``handle`` with each queued item on a thread of its own.

    Args:
        handle: called with each item, in order; it catches what it can recover from (an
            exception that escapes it ends the worker).
        queue_size: items waiting; when full, the oldest is dropped.
        name: the thread's name.
        idle_s: when set, ``handle(None)`` is also called after ``idle_s`` seconds without
            an item (and after :meth:`poke`): work on a timer, such as expiring states or
            catching up after a reconnect, on the same thread as the items.

    Attributes:
        dropped: items thrown away because the queue was full.
    """

    def __init__(self, handle: Callable[[Any], None], queue_size: int, name: str,
                 idle_s: float | None = None) -> None:
        self.handle = handle
        self.idle_s = idle_s
        self.dropped = 0
        self.closed = False
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        """Queue ``item`` without blocking (nothing once closed)."""
        if not self.closed:
            self.dropped += put_dropping_oldest(self._queue, item)

    def poke(self) -> None:
        """Ask for an idle call (``handle(None)``) soon; never drops an item (a full queue
        keeps the worker busy anyway)."""
        try:
            self._queue.put_nowait(_IDLE)
        except queue.Full:
            pass

    @property
    def running(self) -> bool:
        """Whether the worker thread still runs (False once :meth:`close` finished)."""
        return self._thread.is_alive()

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.idle_s) if self.idle_s else self._queue.get()
            except queue.Empty:
                self.handle(None)
                continue
            try:
                if item is _STOP:
                    return
                self.handle(None if item is _IDLE else item)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every queued item was handled (at most ``timeout`` s); True if it was."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 2.0) -> int:
        """Handle what is queued for at most ``timeout`` seconds, then stop the worker.

        Returns:
            How many items were still waiting when the time was up (0 when all were
            handled, or it was closed before); the owner counts them as lost.
        """
        if self.closed:
            return 0
        self.closed = True
        deadline = time.monotonic() + timeout
        stop_queued = False
        while not stop_queued:
            try:
                self._queue.put(_STOP, timeout=max(0.01, deadline - time.monotonic()))
                stop_queued = True
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            return 0
        return max(0, self._queue.qsize() - stop_queued)

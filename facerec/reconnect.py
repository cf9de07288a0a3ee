"""A live source's online/offline state, the watchdog of silent streams, and reconnection.

A live source (a webcam, a network stream) goes offline when a read fails (the stream
dropped) or when no frame arrived for ``read_timeout_s``, whatever the backend's own read
timeout: a watchdog thread notices the silence within a quarter of a second, and a frame
that a read returns after its deadline is a leftover of the stalled connection, discarded
rather than delivered with a fresh timestamp. The stream is then reopened at once, and
while it stays away probed again every ``reconnect_max_s`` at most (with ``jitter``), so
frames resume within about that long after the camera is back; each new connection starts
at the newest frame, no backlog is replayed. One log line says each change of state
(dropped or silent, with the cause; reconnected after N s; still away every 60 s), and
:meth:`ReconnectingSource.state_changes` hands the changes to the live loop, which
publishes them as ``camera`` events. The attempts go on until the capture is closed.

:class:`ReconnectingSource` holds this part of :class:`~facerec.capture.Capture` (which
inherits it); the reader loop of a stream (``Capture._run_stream``) reports what it sees
through :meth:`~ReconnectingSource._go_offline` and :meth:`~ReconnectingSource._reconnect`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from facerec.redact import redact
from facerec.sources import SourceKind, probe_cause

if TYPE_CHECKING:
    import cv2

    from facerec.capture import CaptureStats

#: Wait before the second attempt to reopen a dropped stream, s (the first is at once);
#: doubles up to ``reconnect_max_s``.
FIRST_BACKOFF_S = 0.25
#: While a stream stays away, a line says so this often, s.
STILL_AWAY_EVERY_S = 60.0
#: How often the watchdog looks for a silent stream, s.
WATCHDOG_EVERY_S = 0.1

CaptureState = Literal["online", "offline"]


@dataclass(frozen=True)
class StateChange:
    """A live source went offline or came back.

    Attributes:
        state: ``online`` or ``offline``.
        t: source time of the change, s (the clock of :attr:`facerec.capture.Frame.t`).
        reason: why, in words, credentials redacted.
    """

    state: CaptureState
    t: float
    reason: str


class ReconnectingSource:
    """The online/offline state, the watchdog and the reconnection of a live source.

    A part of :class:`~facerec.capture.Capture`, which sets the attributes declared below
    and calls :meth:`_init_live_state` from its constructor.
    """

    if TYPE_CHECKING:  # set by Capture
        spec: str
        kind: SourceKind
        stats: CaptureStats
        read_timeout_s: float
        reconnect_max_s: float
        jitter: float
        _log: logging.Logger | logging.LoggerAdapter
        _stop: threading.Event
        _cap: cv2.VideoCapture | None

        @property
        def description(self) -> str: ...

        def _open(self) -> cv2.VideoCapture: ...

        def _release(self) -> None: ...

    def _init_live_state(self) -> None:
        """Online, no change said yet, the clocks started (called by the constructor)."""
        # live sources: online/offline, the changes not yet taken by the loop, the watchdog
        self.state: CaptureState = "online"
        self._state_lock = threading.Lock()
        self._changes: deque[StateChange] = deque(maxlen=256)
        self._offline_since: float | None = None
        self._wall0 = time.monotonic()
        self._last_frame = time.monotonic()
        self._reading = False
        self._stalled = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def online(self) -> bool:
        """False while a live source is away (dropped, silent, being reopened)."""
        return self.state == "online"

    def offline_seconds(self) -> float:
        """Seconds offline so far, the running outage included."""
        with self._state_lock:
            running = time.monotonic() - self._offline_since if self._offline_since is not None else 0.0
            return self.stats.offline_s + running

    def offline_for(self) -> float:
        """Seconds the running outage has lasted (0 while online)."""
        since = self._offline_since
        return time.monotonic() - since if since is not None else 0.0

    def state_changes(self) -> list[StateChange]:
        """The changes of state since the last call, oldest first (the live loop turns
        them into ``camera`` events)."""
        with self._state_lock:
            out = list(self._changes)
            self._changes.clear()
        return out

    def _go_offline(self, reason: str) -> bool:
        """Mark the source offline and say why, once per outage; False if it already was."""
        with self._state_lock:
            if self.state == "offline" or self._stop.is_set():
                return False
            now = time.monotonic()
            self.state = "offline"
            self._offline_since = now
            self.stats.outages += 1
            self._changes.append(StateChange("offline", now - self._wall0, redact(reason)))
        self._log.warning("%s: %s; reconnecting", self.description, redact(reason))
        return True

    def _go_online(self, attempts: int) -> None:
        """Mark the source online after ``attempts`` attempts and say how long it was away."""
        with self._state_lock:
            now = time.monotonic()
            away = now - self._offline_since if self._offline_since is not None else 0.0
            self.state = "online"
            self._offline_since = None
            self.stats.offline_s += away
            self.stats.reconnects += 1
            reason = f"reconnected after {away:.1f} s ({attempts} attempt{'s' if attempts != 1 else ''})"
            self._changes.append(StateChange("online", now - self._wall0, reason))
        self._log.warning("%s: %s", self.description, reason)

    def _watch(self) -> None:
        """Watchdog of a live source: a stream silent for ``read_timeout_s`` goes offline
        now, even while the backend's read is still blocked (its result is then dropped)."""
        while not self._stop.wait(WATCHDOG_EVERY_S):
            if (self._reading and self.state == "online"
                    and time.monotonic() - self._last_frame >= self.read_timeout_s):
                self._stalled.set()
                self._go_offline(f"no frame for {self.read_timeout_s:g} s (stream silent)")

    def _cause(self, what: str) -> str:
        """``what`` with the reason the server gives (:func:`~facerec.sources.probe_cause`)."""
        return probe_cause(self.kind, self.spec, what)

    def _probe_wait(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1`` (attempt 1 was at once)."""
        base = min(FIRST_BACKOFF_S * 2 ** max(0, attempt - 1), self.reconnect_max_s)
        return base * random.uniform(1.0 - self.jitter, 1.0 + self.jitter)

    def _reconnect(self) -> np.ndarray | None:
        """Reopen the stream until it delivers a frame again: the first attempt at once,
        then every ``reconnect_max_s`` at most. Returns that first frame (the newest the
        new connection has), or ``None`` when stopped."""
        self._release()
        self._stalled.clear()
        attempt = 0
        next_note = time.monotonic() + STILL_AWAY_EVERY_S
        while not self._stop.is_set():
            attempt += 1
            self.stats.attempts += 1
            img = self._try_open()
            if img is not None:
                if self._stop.is_set():
                    self._release()
                    return None
                self._last_frame = time.monotonic()
                self._go_online(attempt)
                return img
            if time.monotonic() >= next_note:
                next_note = time.monotonic() + STILL_AWAY_EVERY_S
                self._log.warning("%s: still away after %.0f s (%d attempts; %s)", self.description,
                                  self.offline_for(), attempt, self._cause("last attempt failed"))
            if self._stop.wait(self._probe_wait(attempt)):
                return None
        return None

    def _try_open(self) -> np.ndarray | None:
        """One attempt: open the stream and read its first frame within the deadlines."""
        cap = self._open()
        if not cap.isOpened():
            cap.release()
            return None
        started = time.monotonic()
        ok, img = cap.read()
        if not ok or img is None or time.monotonic() - started >= self.read_timeout_s:
            cap.release()
            return None
        self._cap = cap
        return img


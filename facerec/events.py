"""Recognition events and the sinks they leave through.

Sinks know nothing about models: they receive :class:`Event` objects (``publish``) and are
closed once (``close``). :class:`TrackEvents` turns the per-frame state of tracks into
``appeared`` / ``left`` events with a per-person cooldown. Sinks that talk to the network
(:class:`WebhookSink`) send from a worker thread through a bounded queue: ``publish``
never blocks, and when the queue is full the oldest waiting event is dropped and counted,
so a slow or dead webhook never stalls the camera.

Event JSON (one object per line for :class:`JsonLinesSink`)::

    {"event": "appeared" | "left", "name": str | null, "similarity": float,
     "track_id": int, "t": seconds since the start of the source, "camera": str}
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Literal, Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """A person appeared in front of a camera, or their track ended."""

    event: Literal["appeared", "left"]
    name: str | None
    similarity: float
    track_id: int
    t: float
    camera: str

    def to_json(self) -> dict:
        d = asdict(self)
        d["similarity"] = round(float(self.similarity), 4)
        d["t"] = round(float(self.t), 3)
        return d


class EventSink(Protocol):
    """Anything events can be published to."""

    def publish(self, event: Event) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """Writes each event as one JSON line to a file (appending) or to stdout (``"-"``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._own = self.path != "-"
        if self._own:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(self.path, "a", encoding="utf-8") if self._own else sys.stdout  # noqa: SIM115
        self._lock = threading.Lock()

    def publish(self, event: Event) -> None:
        line = json.dumps(event.to_json(), ensure_ascii=False)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._own and not self._fh.closed:
                self._fh.close()


class WebhookSink:
    """POSTs each event as JSON to ``url`` from a worker thread (stdlib ``urllib`` only).

    Args:
        url: ``http://`` or ``https://`` endpoint.
        queue_size: events waiting to be sent; when full the oldest is dropped.
        timeout_s: longest wait for one request.

    Attributes:
        sent: events the server accepted (any 2xx answer).
        failed: events whose request failed (connection error, timeout, non-2xx).
        dropped: events thrown away because the queue was full.
    """

    def __init__(self, url: str, queue_size: int = 256, timeout_s: float = 5.0) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must start with http:// or https://, got {url!r}")
        self.url = url
        self.timeout_s = float(timeout_s)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=max(1, queue_size))
        self._closing = threading.Event()
        self._last_error_log = 0.0
        self._thread = threading.Thread(target=self._work, name="webhook", daemon=True)
        self._thread.start()

    def publish(self, event: Event) -> None:
        """Queue ``event`` without ever blocking the caller."""
        if self._closing.is_set():
            return
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()  # drop the oldest waiting event
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _post(self, event: Event) -> None:
        body = json.dumps(event.to_json(), ensure_ascii=False).encode("utf-8")
        req = urllib.request.Request(self.url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - URL checked above
                resp.read()
            self.sent += 1
        except (urllib.error.URLError, OSError, ValueError) as e:
            self.failed += 1
            now = time.monotonic()
            if now - self._last_error_log > 30:
                self._last_error_log = now
                log.warning("webhook %s failed: %s (%d failed so far)", self.url, e, self.failed)

    def _work(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            self._post(event)

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued for at most ``timeout`` seconds, then stop."""
        if self._closing.is_set():
            return
        self._closing.set()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            left = self._queue.qsize()
            self.dropped += left
            log.warning("webhook %s: gave up on %d unsent events at shutdown", self.url, left)


class CallbackSink:
    """Calls a function with each event (tests, embedding facerec in another program)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def publish(self, event: Event) -> None:
        self.fn(event)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class TrackView:
    """What :class:`TrackEvents` needs to know about a track in one frame."""

    track_id: int
    name: str | None
    similarity: float
    decided: bool = True


@dataclass
class _Seen:
    name: str | None
    similarity: float
    announced: bool = False


class TrackEvents:
    """Turns track names into ``appeared`` / ``left`` events.

    A track is announced (``appeared``) when its identity is first decided, and again
    when its name later changes to another person. ``appeared`` for the same person is
    suppressed for ``cooldown_s`` seconds of source time after the previous one (unknown
    faces are keyed by track, so every unknown track is announced once). ``left`` is
    published when an announced track ends, with its last name.

    Args:
        sinks: where events go.
        camera: the camera name written into events.
        cooldown_s: ``events.cooldown_s``.
    """

    def __init__(self, sinks: Iterable[EventSink], camera: str, cooldown_s: float = 10.0) -> None:
        self.sinks = list(sinks)
        self.camera = camera
        self.cooldown_s = float(cooldown_s)
        self.published = 0
        self.suppressed = 0
        self._tracks: dict[int, _Seen] = {}
        self._last_appeared: dict[str, float] = {}

    def _publish(self, event: Event) -> None:
        self.published += 1
        for sink in self.sinks:
            try:
                sink.publish(event)
            except Exception as e:  # a broken sink must not stop the camera
                log.warning("event sink %s failed: %s", type(sink).__name__, e)

    def _prune(self, t: float) -> None:
        if len(self._last_appeared) > 1024:
            self._last_appeared = {k: v for k, v in self._last_appeared.items() if t - v < self.cooldown_s}

    def update(self, t: float, tracks: Iterable[TrackView], left: Iterable[int] = ()) -> list[Event]:
        """Feed one frame: the visible tracks and the ids of tracks that ended.

        Returns:
            The events published for this frame.
        """
        events: list[Event] = []
        for tr in tracks:
            if not tr.decided:
                continue
            st = self._tracks.get(tr.track_id)
            if st is not None and st.name == tr.name:
                st.similarity = tr.similarity
                continue
            first = st is None
            if st is None:
                st = self._tracks[tr.track_id] = _Seen(tr.name, tr.similarity)
            else:
                st.name, st.similarity = tr.name, tr.similarity
            if not first and tr.name is None:  # a named track turned unknown: no new arrival
                continue
            key = tr.name if tr.name is not None else f"\0track:{tr.track_id}"
            last = self._last_appeared.get(key)
            if last is not None and t - last < self.cooldown_s:
                self.suppressed += 1
                continue
            self._last_appeared[key] = t
            st.announced = True
            events.append(Event("appeared", tr.name, tr.similarity, tr.track_id, t, self.camera))
        for tid in left:
            st = self._tracks.pop(tid, None)
            if st is not None and st.announced:
                events.append(Event("left", st.name, st.similarity, tid, t, self.camera))
        for ev in events:
            self._publish(ev)
        self._prune(t)
        return events

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                log.warning("closing event sink %s failed: %s", type(sink).__name__, e)


class UnknownCrops:
    """Keeps face crops of unknown tracks under ``folder`` for later enrollment.

    One JPEG per unknown track (its best crop), named
    ``<camera>_<unix time>_track<id>.jpg``. Files older than ``retention_s`` are
    deleted and at most ``max_files`` are kept (oldest deleted first); the folder is
    pruned at start and then at most once a minute.
    """

    PRUNE_EVERY_S = 60.0

    def __init__(self, folder: str | os.PathLike, retention_s: float, max_files: int, camera: str = "camera") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.retention_s = float(retention_s)
        self.max_files = int(max_files)
        self.camera = "".join(c if c.isalnum() or c in "-_" else "_" for c in camera)[:40] or "camera"
        self.saved = 0
        self._last_prune = 0.0
        self.prune()

    def save(self, track_id: int, crop: np.ndarray) -> Path | None:
        """Write ``crop`` (uint8 BGR); returns the path, or None when keeping nothing."""
        if self.max_files <= 0 or crop is None or crop.size == 0:
            return None
        path = self.folder / f"{self.camera}_{int(time.time())}_track{track_id}.jpg"
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            return None
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, path)
        self.saved += 1
        if time.monotonic() - self._last_prune > self.PRUNE_EVERY_S:
            self.prune()
        return path

    def prune(self) -> int:
        """Apply the retention limits now; returns the number of files deleted."""
        self._last_prune = time.monotonic()
        now = time.time()
        files = []
        for p in self.folder.glob("*.jpg"):
            try:
                files.append((p.stat().st_mtime, p))
            except OSError:
                continue
        files.sort()
        doomed = [p for m, p in files if now - m > self.retention_s]
        keep = [p for m, p in files if now - m <= self.retention_s]
        if len(keep) > self.max_files:
            doomed += keep[: len(keep) - self.max_files]
        removed = 0
        for p in doomed:
            try:
                p.unlink()
                removed += 1
            except OSError:
                pass
        return removed

"""Recognition events: one versioned record for every sink, the web page and the tests.

Sinks know nothing about models: they receive :class:`Event` objects (``publish``) and are
closed once (``close``). :class:`TrackEvents` turns the per-frame state of tracks into
events. Sinks that talk to the network (:class:`WebhookSink`, the MQTT sink) send from a
worker thread through a bounded queue: ``publish`` never blocks, and when the queue is
full the oldest waiting event is dropped and counted, so a slow or dead receiver never
stalls the camera. :class:`EventBus` is that queue in front of several sinks.

The record (schema :data:`EVENT_SCHEMA`, documented with examples in docs/events.md)::

    {"v": 1, "event": "appeared" | "recognized" | "unknown" | "left",
     "name": str | null, "score": float, "track_id": int, "camera": str,
     "time": ISO-8601 UTC wall clock, "ts": Unix seconds, "t": seconds of source time,
     "box": [x1, y1, x2, y2] | null, "crop": str | null}
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import cv2
import numpy as np

from facerec.queued import QueuedWorker
from facerec.sinks import FrameSinkBase
from facerec.types import TrackedFace, TrackRecord

log = logging.getLogger(__name__)

#: Version of the event record; bumped when a field changes meaning or disappears.
EVENT_SCHEMA = 1

EventKind = Literal["appeared", "recognized", "unknown", "left", "camera"]
EVENT_KINDS: tuple[str, ...] = ("appeared", "recognized", "unknown", "left")  # a face track's kinds
CameraState = Literal["online", "offline"]


def iso_time(ts: float) -> str:
    """``ts`` (Unix seconds) as ISO-8601 UTC with milliseconds, e.g. ``2026-12-02T09:30:00.125Z``."""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """Something happened to a face track in front of a camera.

    Attributes:
        event: ``appeared`` (a track's identity was decided for the first time, name or
            not), ``recognized`` (the track was named, or renamed to another person),
            ``unknown`` (the track was decided to be nobody enrolled), ``left`` (the
            track ended; carries its last name), ``camera`` (a camera went online or
            offline; ``state`` and ``reason`` say which and why, the face fields are empty).
        name: the person, ``None`` when unknown.
        score: cosine similarity behind the name (best candidate when unknown; -1 with
            an empty gallery).
        track_id: the face's track, unique per camera and run.
        t: seconds of source time (frame timestamp of a file, time since start live).
        camera: the camera's name.
        ts: wall clock, Unix seconds; set when the event is made.
        box: ``(x1, y1, x2, y2)`` frame pixels of the face's last box, when known.
        crop: always ``None`` in schema 1 (kept for a crop's path); unknown crops are files of
            :class:`UnknownCrops`, named by camera and track id.
        state: for ``camera`` events, ``online`` or ``offline``.
        reason: for ``camera`` events, why the state changed (credentials redacted).
    """

    event: EventKind
    name: str | None
    score: float
    track_id: int
    t: float
    camera: str
    ts: float = field(default_factory=time.time)
    box: tuple[float, float, float, float] | None = None
    crop: str | None = None
    state: CameraState | None = None
    reason: str | None = None

    @classmethod
    def camera_state(cls, camera: str, state: CameraState, t: float, reason: str | None = None) -> Event:
        """A ``camera`` event: ``camera`` went ``online`` or ``offline`` at source time ``t``."""
        return cls("camera", None, 0.0, -1, t, camera, state=state, reason=reason)

    @property
    def similarity(self) -> float:
        """The pre-v1 name of :attr:`score`."""
        return self.score

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready dict (the one shape every sink sends)."""
        if self.event == "camera":
            return {
                "v": EVENT_SCHEMA,
                "event": "camera",
                "camera": self.camera,
                "state": self.state,
                "reason": self.reason,
                "time": iso_time(self.ts),
                "ts": round(float(self.ts), 3),
                "t": round(float(self.t), 3),
            }
        return {
            "v": EVENT_SCHEMA,
            "event": self.event,
            "name": self.name,
            "score": round(float(self.score), 4),
            "track_id": int(self.track_id),
            "camera": self.camera,
            "time": iso_time(self.ts),
            "ts": round(float(self.ts), 3),
            "t": round(float(self.t), 3),
            "box": [round(float(v), 1) for v in self.box] if self.box is not None else None,
            "crop": self.crop,
        }


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
        self._unsent = 0
        self._last_error_log = 0.0
        self._worker = QueuedWorker(self._post, queue_size, "webhook")

    @property
    def dropped(self) -> int:
        """Events thrown away: the queue was full, or they were still queued at shutdown."""
        return self._worker.dropped + self._unsent

    def publish(self, event: Event) -> None:
        """Queue ``event`` without ever blocking the caller."""
        self._worker.put(event)

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

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued for at most ``timeout`` seconds, then stop."""
        left = self._worker.close(timeout)
        if left:
            self._unsent += left
            log.warning("webhook %s: gave up on %d unsent events at shutdown", self.url, left)


class CallbackSink:
    """Calls a function with each event (tests, embedding facerec in another program)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def publish(self, event: Event) -> None:
        self.fn(event)

    def close(self) -> None:
        pass


class EventBus:
    """One bounded queue and one worker thread in front of several sinks.

    Every camera publishes here; ``publish`` never blocks (when the queue is full the
    oldest waiting event is dropped and counted) and a sink that raises is logged and
    skipped, so neither a slow nor a broken sink can stall a camera.

    Args:
        sinks: where events go, in order.
        queue_size: events waiting for the worker.
    """

    def __init__(self, sinks: Iterable[EventSink], queue_size: int = 1024) -> None:
        self.sinks = list(sinks)
        self.published = 0
        self.failed = 0
        self._worker = QueuedWorker(self._deliver, queue_size, "event-bus")

    @property
    def dropped(self) -> int:
        """Events thrown away because the queue was full."""
        return self._worker.dropped

    def publish(self, event: Event) -> None:
        if self._worker.closed:
            return
        self.published += 1
        self._worker.put(event)

    def _deliver(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.publish(event)
            except Exception as e:  # a broken sink must not stop the others
                self.failed += 1
                log.warning("event sink %s failed: %s", type(sink).__name__, e)

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until the worker handed every queued event to the sinks; True if it did."""
        return self._worker.flush(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (at most ``timeout`` s), then close every sink."""
        if self._worker.closed:
            return
        self._worker.close(timeout)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                log.warning("closing event sink %s failed: %s", type(sink).__name__, e)


@dataclass
class _Seen:
    name: str | None
    similarity: float
    box: tuple[float, float, float, float]


def _box(xyxy: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return (x1, y1, x2, y2)


class TrackEvents:
    """Turns the tracks of one camera into events.

    Per track: ``appeared`` once, when its identity is first decided; then
    ``recognized`` when it is named (again when the name changes to another person) or
    ``unknown`` when it is decided to be nobody enrolled; ``left`` when an announced
    track ends, with its last name. ``recognized`` for the same person is suppressed for
    ``cooldown_s`` seconds of source time after the previous one on this camera.

    Args:
        sinks: where events go (usually one :class:`EventBus`).
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
        self._last_recognized: dict[str, float] = {}

    def _publish(self, event: Event) -> None:
        self.published += 1
        for sink in self.sinks:
            try:
                sink.publish(event)
            except Exception as e:  # a broken sink must not stop the camera
                log.warning("event sink %s failed: %s", type(sink).__name__, e)

    def camera_state(self, state: CameraState, t: float, reason: str | None = None) -> Event:
        """Publish that this camera went ``online`` or ``offline`` at source time ``t``."""
        event = Event.camera_state(self.camera, state, t, reason)
        self._publish(event)
        return event

    def _prune(self, t: float) -> None:
        if len(self._last_recognized) > 1024:
            self._last_recognized = {k: v for k, v in self._last_recognized.items() if t - v < self.cooldown_s}

    def update(self, t: float, tracks: Iterable[TrackedFace], left: Iterable[int] = ()) -> list[Event]:
        """Feed one frame: the visible tracks and the ids of tracks that ended.

        Args:
            t: source time of the frame, s.
            tracks: the faces visible in this frame (undecided ones are not announced yet).
            left: ids of the tracks that ended with this frame.

        Returns:
            The events published for this frame.
        """
        events: list[Event] = []
        cam = self.camera
        for tr in tracks:
            if not tr.decided:
                continue
            tid, name, sim = int(tr.track_id), tr.name, float(tr.similarity)
            box = _box(tr.xyxy)
            st = self._tracks.get(tid)
            if st is not None:
                st.box = box
                if st.name == name:
                    st.similarity = sim
                    continue
                st.name, st.similarity = name, sim
                if name is None:  # a named track turned unknown: no new arrival
                    continue
            else:
                st = self._tracks[tid] = _Seen(name, sim, box)
                events.append(Event("appeared", name, sim, tid, t, cam, box=box))
                if name is None:
                    events.append(Event("unknown", None, sim, tid, t, cam, box=box))
                    continue
            last = self._last_recognized.get(name)
            if last is not None and t - last < self.cooldown_s:
                self.suppressed += 1
                continue
            self._last_recognized[name] = t
            events.append(Event("recognized", name, sim, tid, t, cam, box=box))
        for tid in left:
            st = self._tracks.pop(tid, None)
            if st is not None:
                events.append(Event("left", st.name, st.similarity, tid, t, cam, box=st.box))
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


class UnknownCrops(FrameSinkBase):
    """Keeps face crops of unknown tracks under ``folder`` for later enrollment (a frame
    sink: it saves the tracks that ended decided unknown with a kept crop).

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

    def on_frame(self, result, image: np.ndarray | None) -> bool:
        self.on_ended(result.left, result.frame.t)
        return True

    def on_ended(self, ended: Sequence[TrackRecord], t: float) -> None:
        for rec in ended:
            if rec.unknown and rec.best_crop is not None:
                self.save(rec.track_id, rec.best_crop)

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

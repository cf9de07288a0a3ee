"""Frame capture on its own thread: webcams, video files, image folders and network streams.

Two delivery policies, chosen by the kind of source (:func:`~facerec.sources.classify_source`):

* **Live** sources (a webcam, an RTSP/HTTP URL, or a file played with ``realtime=True``)
  keep only the newest frame in a one-slot buffer. A consumer that is slower than the
  camera never sees stale frames and lag never builds up; every frame overwritten before
  it was read is counted in :attr:`CaptureStats.dropped`.
* **Offline** sources (a video file, an image folder, a single image) deliver every frame
  in order through a bounded queue: the reader blocks when the consumer is behind
  (backpressure) so memory stays bounded and nothing is skipped.

A live source is **online** or **offline**: a stream that drops or goes silent is reopened
until it is back, one log line per change of state, and :meth:`Capture.state_changes` hands
the changes to the live loop (:mod:`facerec.reconnect` holds that part). The reader keeps
trying until :meth:`Capture.close` is called. A source that cannot be opened at start
raises :class:`~facerec.errors.SourceError` with a message that says what to check. A
stream's user and password appear in no message (:func:`facerec.redact.redact`).

Every :class:`Frame` carries its index in the source and ``t``, seconds since the start of
the source: the position in the file for files (index / fps), wall time since opening for
live sources.

Opening and classifying sources is :mod:`facerec.sources`; its names are also importable
from here.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facerec.errors import ImageReadError, SourceError
from facerec.imageio import IMAGE_SUFFIXES, list_images, read_image
from facerec.reconnect import CaptureState as CaptureState, ReconnectingSource, StateChange as StateChange
from facerec.redact import redact
from facerec.sources import (STREAM_OPTIONS as STREAM_OPTIONS, STREAM_SCHEMES as STREAM_SCHEMES, SourceKind,
                             classify_source as classify_source, open_video)

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Frame:
    """One captured image.

    Attributes:
        image: ``(H, W, 3)`` uint8 BGR.
        index: 0-based position in the source. On live sources frames dropped by the
            newest-frame-wins buffer still take an index, so gaps show where they were.
        t: seconds since the start of the source (file position, or wall time for live
            sources).
        name: file name for folder sources, else ``""``.
    """

    image: np.ndarray
    index: int
    t: float
    name: str = ""


@dataclass
class CaptureStats:
    """Counters kept by the capture thread (read them at any time).

    Attributes:
        read: frames obtained from the source.
        delivered: frames handed to the consumer.
        dropped: live frames overwritten before the consumer took them.
        skipped: unreadable images in a folder source (warned and skipped).
        stale: frames a stream returned after its read deadline (leftovers of a stalled
            connection) or not newer than the frame before; never delivered.
        attempts: attempts to reopen a stream after a failure or a stall.
        reconnects: reconnections, i.e. outages that ended with frames flowing again.
        outages: times the source went offline.
        offline_s: seconds offline over the outages that ended (see
            :meth:`Capture.offline_seconds` for the running one too).
    """

    read: int = 0
    delivered: int = 0
    dropped: int = 0
    skipped: int = 0
    stale: int = 0
    attempts: int = 0
    reconnects: int = 0
    outages: int = 0
    offline_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


class CameraLog(logging.LoggerAdapter):
    """Starts every line with ``camera NAME:`` (the daemon's way of naming a camera; the
    capture and the live loop log through it)."""

    def __init__(self, logger: logging.Logger, camera: str) -> None:
        super().__init__(logger, {"camera": camera})

    def process(self, msg, kwargs):
        return f"camera {(self.extra or {}).get('camera')}: {msg}", kwargs


class Capture(ReconnectingSource):
    """Reads a source on a background thread; see the module docstring for the policies.

    Use :func:`open_source` (or the constructor followed by :meth:`start`), then
    :meth:`read` until it returns ``None`` with :attr:`ended` set, then :meth:`close`.
    The object is also a context manager and an iterator of frames.

    Args:
        spec: webcam index, file, folder or URL (see :func:`classify_source`).
        realtime: play a file at its own frame rate with live semantics (newest frame
            wins, drops counted), as if it were a camera.
        loop: restart a file or folder at its end (soak tests); indices and ``t`` keep
            increasing.
        reconnect_max_s: longest wait between two reopen attempts of a stream, s (the
            first attempt is at once, then 0.25 s doubling up to this).
        read_timeout_s: a stream silent for this long is offline and reopened, s.
        jitter: each wait between attempts is scaled by a random factor in
            ``[1 - jitter, 1 + jitter]``, so cameras behind one server do not all knock at once.
        open_timeout_s: how long opening a stream may take; defaults to ``read_timeout_s``.
        queue_size: frames buffered ahead for offline sources.
        folder_fps: nominal frame rate of an image folder (gives ``t = index / fps``).
        camera: the camera this source feeds; its log lines (reconnects, read errors,
            skipped images) then start with ``camera NAME:``, so that several cameras on
            one daemon, even on the same source, are told apart. ``None``: the source only.
        wait_for_stream: a network stream that cannot be opened at start starts offline
            and is probed like a dropped one (the daemon's choice: a camera that is not
            up yet must not keep the others from running); otherwise it raises.
    """

    def __init__(
        self,
        spec: str | int | os.PathLike,
        *,
        realtime: bool = False,
        loop: bool = False,
        reconnect_max_s: float = 1.0,
        read_timeout_s: float = 10.0,
        jitter: float = 0.2,
        open_timeout_s: float | None = None,
        queue_size: int = 4,
        folder_fps: float = 25.0,
        camera: str | None = None,
        wait_for_stream: bool = False,
    ) -> None:
        self.spec = os.fspath(spec) if not isinstance(spec, int) else str(spec)
        #: the source as every output shows it (user and password redacted)
        self.display = redact(self.spec)
        self.camera = camera
        self._log: logging.Logger | logging.LoggerAdapter = log if camera is None else CameraLog(log, camera)
        self.kind, self._target = classify_source(spec)
        self.realtime = realtime
        self.loop = loop
        self.reconnect_max_s = float(reconnect_max_s)
        self.jitter = min(1.0, max(0.0, float(jitter)))
        self.read_timeout_s = float(read_timeout_s)
        self.open_timeout_s = float(open_timeout_s if open_timeout_s is not None else read_timeout_s)
        self.folder_fps = float(folder_fps)
        self.wait_for_stream = wait_for_stream
        self.live = self.kind.is_live or realtime
        self.stats = CaptureStats()
        self.fps: float = 0.0
        self.frame_count: int = 0
        self.size: tuple[int, int] = (0, 0)

        self._stop = threading.Event()
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None
        self._cap: cv2.VideoCapture | None = None
        self._paths: list[Path] = []
        self._first: np.ndarray | None = None
        # live: one slot, guarded by a condition; offline: a bounded queue
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._queue: queue.Queue[Frame] = queue.Queue(maxsize=max(1, queue_size))
        self._error: str | None = None
        # a file played in real time starts its clock at the first read: models that load
        # after the source opened must not make the first seconds of the file drop away
        self._first_read = threading.Event()
        self._init_live_state()

    # ------------------------------------------------------------------ opening
    @property
    def description(self) -> str:
        return f"{self.kind.value} {self.display}"

    def start(self) -> Capture:
        """Open the source (synchronously, so failures raise here) and start reading.

        Raises:
            SourceError: the source cannot be opened or yields no frame.
        """
        if self._thread is not None:
            return self
        if self.kind in (SourceKind.FOLDER, SourceKind.IMAGE):
            self._open_images()
        else:
            try:
                self._open_first()
            except SourceError:
                if not (self.wait_for_stream and self.kind is SourceKind.STREAM):
                    raise
                # a camera that is not up yet (power cut, the daemon started first) is
                # an outage like any other: probed until it answers, the others run
                self.fps = 25.0
                self._go_offline(f"cannot be opened at start ({self._cause('no answer')})")
        self._thread = threading.Thread(target=self._run, name=f"capture:{self.display}", daemon=True)
        self._thread.start()
        if self.kind.is_live:
            self._watchdog = threading.Thread(target=self._watch, name=f"capture-watchdog:{self.display}", daemon=True)
            self._watchdog.start()
        return self

    def _open_images(self) -> None:
        if self.kind is SourceKind.IMAGE:
            self._paths = [Path(str(self._target))]
        else:
            try:
                self._paths = list_images(Path(str(self._target)))
            except OSError as e:
                raise SourceError(f"folder {self._target}: cannot be listed ({e.strerror or e})") from None
            if not self._paths:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                raise SourceError(f"folder {self._target} contains no images (looked for {suffixes})")
        self.fps = self.folder_fps
        self.frame_count = len(self._paths)

    def _open(self) -> cv2.VideoCapture:
        """A new OpenCV handle on the source (:func:`~facerec.sources.open_video`), with
        this capture's open and read timeouts."""
        return open_video(self._target, self.kind, self.open_timeout_s, self.read_timeout_s)

    def _open_first(self) -> None:
        cap = self._open()
        if not cap.isOpened():
            cap.release()
            raise SourceError(self._open_failure_message())
        ok, img = cap.read()
        if not ok or img is None or img.size == 0:
            cap.release()
            if self.kind is SourceKind.VIDEO:
                raise SourceError(f"video {self._target}: opened but no frame could be decoded (corrupt or truncated file?)")
            raise SourceError(f"{self.description}: opened but delivered no frame within {self.read_timeout_s:g} s")
        self._cap = cap
        self._first = img
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 25.0
        self.frame_count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.size = (img.shape[1], img.shape[0])

    def _open_failure_message(self) -> str:
        if self.kind is SourceKind.CAMERA:
            return (
                f"camera {self._target} cannot be opened: is a camera connected and not in use by another "
                "program (on Linux: does /dev/video%d exist and can this user read it)?" % int(str(self._target))
            )
        if self.kind is SourceKind.STREAM:
            return (
                f"stream {self.display} cannot be opened (refused, or no answer within {self.open_timeout_s:g} s): is the URL "
                "right and the server reachable from this machine (try it in a media player)?"
            )
        return f"video {self._target}: cannot be opened (not a video format OpenCV/FFmpeg can read, or a corrupt file)"

    # ------------------------------------------------------------------ consumer side
    @property
    def ended(self) -> bool:
        """True once the source is exhausted (or closed) and every frame was read."""
        if not self._ended.is_set():
            return False
        if self.live:
            with self._cond:
                return self._slot is None
        return self._queue.empty()

    @property
    def error(self) -> str | None:
        """Why the source ended early, if it did (e.g. a truncated video)."""
        return self._error

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or ``None`` when none arrived within ``timeout`` or the source ended.

        Check :attr:`ended` to tell the two apart.
        """
        self._first_read.set()
        if self.live:
            with self._cond:
                self._cond.wait_for(lambda: self._slot is not None or self._ended.is_set(), timeout)
                frame, self._slot = self._slot, None
        else:
            frame = self._get_queued(timeout)
        if frame is not None:
            self.stats.delivered += 1
        return frame

    def _get_queued(self, timeout: float | None) -> Frame | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._ended.is_set() and self._queue.empty():
                return None
            wait = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            try:
                return self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    return None

    def __iter__(self):
        while True:
            frame = self.read(timeout=0.1)
            if frame is not None:
                yield frame
            elif self.ended or self._stop.is_set():
                return

    def close(self, timeout: float = 1.0) -> None:
        """Stop the reader and release the source; waits at most ``timeout`` seconds.

        A reader blocked inside a device or network read cannot be interrupted; it is a
        daemon thread and is abandoned after ``timeout`` (it releases its handle when the
        read returns).
        """
        self._first_read.set()
        self._stop.set()
        self._ended.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._log.warning("capture thread for %s did not stop within %.1f s; abandoning it",
                                  self.display, timeout)
        if self._thread is None or not self._thread.is_alive():
            self._release()

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ reader thread
    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def _emit(self, frame: Frame) -> bool:
        """Hand a frame to the consumer; False when asked to stop."""
        self.stats.read += 1
        if self.live:
            with self._cond:
                if self._slot is not None:
                    self.stats.dropped += 1
                self._slot = frame
                self._cond.notify()
            return not self._stop.is_set()
        while not self._stop.is_set():
            try:
                self._queue.put(frame, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _finish(self) -> None:
        self._ended.set()
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            if self.kind in (SourceKind.FOLDER, SourceKind.IMAGE):
                self._run_images()
            elif self.kind.is_live:
                self._run_stream()
            else:
                self._run_video()
        except Exception as e:  # never let a reader die silently: report and end the source
            self._error = f"{self.description}: reading failed: {e}"
            self._log.error("%s", self._error)
        finally:
            self._release()
            self._finish()

    def _wait_first_read(self) -> None:
        """Block until the consumer asks for its first frame (or the capture is closed)."""
        while not self._first_read.wait(0.1) and not self._stop.is_set():
            pass

    def _pace(self, t: float, wall0: float) -> bool:
        """Sleep until ``t`` seconds after ``wall0`` (``realtime`` playback); False on stop."""
        delay = wall0 + t - time.monotonic()
        return not (delay > 0 and self._stop.wait(delay))

    def _run_video(self) -> None:
        cap = self._cap
        assert cap is not None
        fps = self.fps
        index = 0
        offset_t = 0.0  # time added per completed loop so ``t`` keeps increasing
        in_pass = 0
        if self.realtime:
            self._wait_first_read()
        wall0 = time.monotonic()
        img: np.ndarray | None = self._first
        self._first = None
        while not self._stop.is_set():
            if img is None:
                ok, img = cap.read()
                if not ok or img is None:
                    img = None
                    if self.frame_count and in_pass < self.frame_count - 1:
                        self._error = (
                            f"video {self._target}: decoding stopped at frame {in_pass} of "
                            f"{self.frame_count} (truncated or corrupt file)"
                        )
                        self._log.warning("%s", self._error)
                        if not self.loop:
                            return
                    if not self.loop or in_pass == 0:
                        return
                    offset_t += in_pass / fps
                    in_pass = 0
                    cap.release()
                    cap = self._cap = self._open()
                    if not cap.isOpened():
                        self._error = f"video {self._target}: cannot be reopened for the next loop"
                        self._log.warning("%s", self._error)
                        return
                    continue
            t = offset_t + in_pass / fps
            if self.realtime and not self._pace(t, wall0):
                return
            if not self._emit(Frame(img, index, t)):
                return
            img = None
            index += 1
            in_pass += 1

    def _run_images(self) -> None:
        index = 0
        if self.realtime:
            self._wait_first_read()
        wall0 = time.monotonic()
        while not self._stop.is_set():
            delivered_this_pass = 0
            for path in self._paths:
                if self._stop.is_set():
                    return
                try:
                    img = read_image(path)
                except ImageReadError as e:
                    self.stats.skipped += 1
                    self._log.warning("skipping %s", e)
                    continue
                t = index / self.folder_fps
                if self.realtime and not self._pace(t, wall0):
                    return
                if not self._emit(Frame(img, index, t, path.name)):
                    return
                index += 1
                delivered_this_pass += 1
            if not self.loop or delivered_this_pass == 0:
                return

    def _run_stream(self) -> None:
        """Reads a live source; a failed or late read takes it offline and reconnects
        (:mod:`facerec.reconnect`), a frame handed out twice is counted stale."""
        self._wall0 = time.monotonic()
        index = 0
        img: np.ndarray | None = self._first
        self._first = None
        self._last_frame = time.monotonic()
        last_pts = -1.0
        advancing = False  # the backend gives real presentation times (RTSP does, some don't)
        while not self._stop.is_set():
            if img is None:
                cap = self._cap
                self._reading = True
                started = time.monotonic()
                ok, img = cap.read() if cap is not None else (False, None)
                took = time.monotonic() - started
                self._reading = False
                if self._stop.is_set():
                    return
                if self._stalled.is_set() or (ok and took >= self.read_timeout_s):
                    # the read outlived its deadline: what it returned (FFmpeg hands out
                    # decoder leftovers after its timeout) is old, not a new frame
                    if ok and img is not None:
                        self.stats.stale += 1
                    self._go_offline(f"no frame for {self.read_timeout_s:g} s (stream silent)")
                    img = None
                elif not ok or img is None:
                    img = None
                    self._go_offline(f"stream dropped ({self._cause('the read failed')})")
                if img is None:
                    img = self._reconnect()
                    if img is None:
                        return
                    last_pts, advancing = -1.0, False
                else:
                    pts = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) if cap is not None else 0.0
                    if advancing and pts == last_pts:
                        self.stats.stale += 1  # the frame before, handed out again: never shown as new
                        img = None
                        continue
                    # a step back is FFmpeg re-basing its clock on the server's first RTCP
                    # report (early in every RTSP session), not an older frame
                    advancing = advancing or (last_pts > 0 and pts > last_pts)
                    last_pts = pts
            self._last_frame = time.monotonic()
            if not self._emit(Frame(img, index, self._last_frame - self._wall0)):
                return
            img = None
            index += 1


def open_source(spec: str | int | os.PathLike, **kwargs) -> Capture:
    """Open ``spec`` and start its capture thread; see :class:`Capture` for the options.

    Raises:
        SourceError: the source does not exist, cannot be opened, or yields no frame.
    """
    return Capture(spec, **kwargs).start()

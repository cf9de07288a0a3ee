"""``facerec serve``: the HTTP API and web page, optionally with a live source attached."""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import ValidationError

from facerec.config import Config, ServeConfig
from facerec.errors import ConfigError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "serve", parents=[common],
        help="web page and HTTP API: enroll, identify, manage the gallery, watch a live source",
        description=(
            "Serve the gallery manager page and its API. Every /api/ route needs "
            "'Authorization: Bearer <token>' with the token from FACEREC_API_TOKEN; without it a "
            "token is generated for this run, printed once to stderr, and only loopback "
            "addresses may be bound."
        ),
    )
    p.add_argument("--host", help="bind address (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    p.add_argument("--source", metavar="SRC",
                   help="live source shown on the page: webcam index, video file, image folder or stream URL")
    p.add_argument("--fps", type=float, metavar="N",
                   help="process at most N frames per second of --source (default: as many as the CPU allows)")
    p.add_argument("--loop", action="store_true", help="replay a --source file or folder at its end")
    p.add_argument("--as-fast-as-possible", action="store_true",
                   help="read a --source file as fast as it can be processed instead of at its own frame rate")
    p.set_defaults(func=run_serve)


class _RecentEvents:
    """Event sink keeping the last events as v1 records (docs/events.md)."""

    def __init__(self, keep: int) -> None:
        self._events: collections.deque[dict] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()

    def publish(self, event: Any) -> None:
        record = event.to_json()
        with self._lock:
            self._events.append(record)

    def last(self, n: int) -> list[dict]:
        with self._lock:
            return list(self._events)[-n:] if n > 0 else []

    def close(self) -> None:
        pass


class _JpegOutput:
    """Frame output keeping the newest annotated frame as JPEG, optionally pacing the loop.

    Args:
        stop: set when the server shuts down (ends the loop).
        fps: most frames per second the loop may process (``None``: no limit).
        encode_fps: most JPEG encodes per second (the page never shows more).
    """

    def __init__(self, stop: threading.Event, fps: float | None, encode_fps: float = 15.0) -> None:
        self.stop = stop
        self.min_interval = 1.0 / fps if fps else 0.0
        self.encode_interval = 1.0 / encode_fps
        self.jpeg: bytes | None = None
        self._last_encode = -1e9
        self._last_frame = -1e9

    def write(self, frame: Any, image: np.ndarray | None) -> bool:
        now = time.monotonic()
        if image is not None and now - self._last_encode >= self.encode_interval:
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
            if ok:
                self.jpeg = buf.tobytes()
                self._last_encode = now
        if self.min_interval:
            wait = self._last_frame + self.min_interval - now
            if wait > 0:
                self.stop.wait(wait)
            self._last_frame = time.monotonic()
        return not self.stop.is_set()

    def close(self) -> None:
        pass


class DaemonFeed:
    """The live daemon (:func:`facerec.live.run_live`) on a thread, as a :class:`~facerec.serve.app.LiveFeed`.

    It runs what ``facerec run --source SRC`` runs: capture, detection, tracking, voting,
    events (also to ``events.webhook_url`` when set) and unknown crops when configured,
    with its own copy of the models, so live frames and page requests never share a
    model. The gallery is watched: people enrolled or renamed on the page are recognised
    within ``live.gallery_poll_s``. The page gets the newest annotated frame as JPEG and
    the recent events.

    Args:
        source: ``--source`` as given.
        cfg: configuration (models, ``live``, ``events``, ``gallery``).
        realtime: play a file at its own frame rate (as a camera would deliver it).
        loop: replay a file or folder at its end.
        fps: at most this many frames per second are processed (``None``: as fast as the
            source and the CPU allow).
        keep: events kept for :meth:`recent_events`.
    """

    def __init__(self, source: str, cfg: Config, *, realtime: bool = True, loop: bool = False,
                 fps: float | None = None, keep: int = 500) -> None:
        self.source = source
        self.cfg = cfg
        self.realtime = realtime
        self.loop = loop
        self.camera = cfg.live.camera_name or source
        self._stop = threading.Event()
        self._events = _RecentEvents(keep)
        self._output = _JpegOutput(self._stop, fps)
        self._thread: threading.Thread | None = None
        self._closers: list[Callable[[], Any]] = []
        self.stats: dict | None = None

    def recent_events(self, n: int) -> list[dict]:
        return self._events.last(n)

    def latest_jpeg(self) -> bytes | None:
        return self._output.jpeg

    def start(self) -> None:
        """Open the source and build the pipeline (failures raise here), then run it on a thread."""
        from facerec.capture import open_source
        from facerec.events import TrackEvents, UnknownCrops, WebhookSink
        from facerec.live import RunOptions, build_pipeline, run_live

        cfg, live = self.cfg, self.cfg.live
        capture = open_source(self.source, realtime=self.realtime, loop=self.loop,
                              reconnect_max_s=live.reconnect_max_s, read_timeout_s=live.read_timeout_s)
        self._closers.append(capture.close)
        try:
            pipeline = build_pipeline(cfg)
            if hasattr(pipeline.gallery, "close"):
                self._closers.append(pipeline.gallery.close)
            sinks: list[Any] = [self._events]
            if cfg.events.webhook_url:
                sinks.append(WebhookSink(cfg.events.webhook_url, cfg.events.queue_size, cfg.events.webhook_timeout_s))
            events = TrackEvents(sinks, self.camera, cfg.events.cooldown_s)
            self._closers.append(events.close)
            unknown = None
            if cfg.events.keep_unknown_crops:
                unknown = UnknownCrops(Path(cfg.gallery.data_dir) / "unknown", cfg.events.unknown_retention_s,
                                       cfg.events.unknown_max_files, self.camera)
            w, h = capture.size
            pipeline.warmup((h, w, 3) if w and h else (480, 640, 3))
        except BaseException:
            self.close()
            raise

        def run() -> None:
            try:
                self.stats = run_live(capture, pipeline, events=events, outputs=[self._output], unknown_crops=unknown,
                                      stop=self._stop, options=RunOptions(stats_every_s=live.stats_every_s,
                                                                           overlay_stats=live.overlay_stats))
                log.info("live source %s ended%s", self.source, f": {capture.error}" if capture.error else "")
            except Exception:  # the page keeps working without the live view
                log.exception("the live loop on %s stopped", self.source)

        self._thread = threading.Thread(target=run, name="serve-live", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the loop, then release the source, the gallery watcher and the event sinks."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        for close in reversed(self._closers):
            try:
                close()
            except Exception as e:  # shutting down: report, keep closing the rest
                log.warning("live feed shutdown: %s", e)
        self._closers.clear()


def run_serve(args: argparse.Namespace, cfg: Config) -> int:
    try:
        import uvicorn

        from facerec.serve.app import create_app
    except ImportError as e:
        raise ConfigError(
            f"facerec serve needs FastAPI and uvicorn ({e.name} is not installed): pip install 'facerec[serve]'"
        ) from None
    from facerec.gallery.service import GalleryService
    from facerec.serve.auth import TOKEN_ENV, resolve_token

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        try:
            serve = ServeConfig.model_validate({**cfg.serve.model_dump(), **overrides})
        except ValidationError as e:
            raise ConfigError(f"--host/--port: {e.errors()[0]['msg']}") from None
        cfg = cfg.model_copy(update={"serve": serve})
    host, port = cfg.serve.host, cfg.serve.port
    token, generated = resolve_token(host)
    service = GalleryService(cfg)
    _ = service.analyzer  # load the models now: missing weights fail at start, not on the first request
    feed = None
    if args.source:
        feed = DaemonFeed(args.source, cfg, realtime=not args.as_fast_as_possible, loop=args.loop, fps=args.fps)
        feed.start()
    try:
        app = create_app(cfg, service, token=token, feed=feed)
    except BaseException:
        if feed is not None:
            feed.close()
        raise
    if generated:
        print(f"facerec serve: API token for this run (set {TOKEN_ENV} to choose one): {token}",
              file=sys.stderr, flush=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"facerec serve: http://{shown}:{port}/", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3,
                    server_header=False)
    finally:
        if feed is not None:
            feed.close()
    return 0

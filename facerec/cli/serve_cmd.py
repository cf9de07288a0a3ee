"""``facerec serve``: the HTTP API and web page, optionally with a live source attached."""

from __future__ import annotations

import argparse
import collections
import errno
import logging
import socket
import sys
import threading
import time
from typing import Any

import cv2
import numpy as np

from facerec.cli.common import config_flags
from facerec.config import Config
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
                   help="live source shown on the page: webcam index, video file, image folder or stream URL "
                        "(default: the enabled cameras of cameras: in --config, if any)")
    p.add_argument("--fps", type=float, metavar="N",
                   help="process at most N frames per second of --source (default: as many as the CPU allows)")
    p.add_argument("--loop", action="store_true",
                   help="replay a --source file or folder at its end (with --config: every camera that reads files)")
    p.add_argument("--as-fast-as-possible", action="store_true",
                   help="read a --source file as fast as it can be processed instead of at its own frame rate")
    p.set_defaults(func=run_serve)
    config_flags(p, {"host": "serve.host", "port": "serve.port"})


class _RecentEvents:
    """Event sink keeping the last events as v1 records (docs/events.md), per camera too."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._events: collections.deque[dict] = collections.deque(maxlen=keep)
        self._by_camera: dict[str, collections.deque[dict]] = {}
        self._lock = threading.Lock()

    def publish(self, event: Any) -> None:
        record = event.to_json()
        with self._lock:
            self._events.append(record)
            cam = self._by_camera.get(record["camera"])
            if cam is None:
                cam = self._by_camera[record["camera"]] = collections.deque(maxlen=self.keep)
            cam.append(record)

    def last(self, n: int, camera: str | None = None) -> list[dict]:
        with self._lock:
            events = self._events if camera is None else self._by_camera.get(camera, ())
            return list(events)[-n:] if n > 0 else []

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
    """The recognition daemon (:class:`facerec.daemon.Daemon`) as the page's
    :class:`~facerec.serve.app.LiveFeed`: every camera's newest annotated frame as JPEG,
    the recent events (all cameras or one) and each camera's stats.

    It runs what ``facerec run`` runs (one daemon, shared models, every sink of the
    config, MQTT included), with its own copy of the models, so live frames and page
    requests never share a model. The gallery is watched: people enrolled or renamed on
    the page are recognised within ``live.gallery_poll_s``.

    Args:
        source: ``--source`` as given (one camera); ``None`` runs the enabled cameras of
            ``cameras:``.
        cfg: configuration (models, ``live``, ``events``, ``gallery``, ``mqtt``, ``cameras``).
        realtime: play a ``--source`` file at its own frame rate (as a camera would); False
            also turns it off for the file cameras of ``cameras:``.
        loop: replay a ``--source`` file or folder (or, with ``cameras:``, every file
            camera's) at its end.
        fps: at most this many frames per second are processed per camera (``None``: as
            fast as the source and the CPU allow).
        keep: events kept for :meth:`recent_events`, per camera and in all.
    """

    def __init__(self, source: str | None, cfg: Config, *, realtime: bool = True, loop: bool = False,
                 fps: float | None = None, keep: int = 500) -> None:
        from facerec.daemon import CameraSpec, Daemon, cameras_from_config, with_file_flags

        self.source = source
        self.cfg = cfg
        specs = ([CameraSpec.single(source, cfg, realtime=realtime, loop=loop)] if source is not None
                 else with_file_flags(cameras_from_config(cfg), realtime=None if realtime else False,
                                      loop=loop or None))
        self.camera = specs[0].name
        self._events = _RecentEvents(keep)
        self._outputs: dict[str, _JpegOutput] = {}
        self.daemon = Daemon(cfg, specs, sinks=[self._events], outputs=self._output_for)
        self._fps = fps
        self.stats: dict | None = None

    def _output_for(self, spec: Any, capture: Any) -> list[_JpegOutput]:
        out = self._outputs[spec.name] = _JpegOutput(self.daemon.stop_event, self._fps)
        return [out]

    def cameras(self) -> list[str]:
        return [s.name for s in self.daemon.specs]

    def recent_events(self, n: int, camera: str | None = None) -> list[dict]:
        return self._events.last(n, camera)

    def latest_jpeg(self, camera: str | None = None) -> bytes | None:
        out = self._outputs.get(camera or self.camera)
        return out.jpeg if out is not None else None

    def camera_stats(self) -> dict[str, dict]:
        """``{camera: {frames, fps, faces_seen, tracks, events, dropped, online, offline_for_s,
        offline_s, reconnects, running}}`` (``offline_for_s``: how long the running outage has lasted)."""
        out = {}
        for name, run in self.daemon.cameras.items():
            s = run.current_stats()
            out[name] = {k: s.get(k) for k in ("frames", "fps", "faces_seen", "tracks", "events", "dropped", "online",
                                               "offline_s", "reconnects")}
            out[name]["offline_for_s"] = round(run.capture.offline_for(), 1)
            out[name]["running"] = bool(run.thread is not None and run.thread.is_alive())
        return out

    def start(self) -> None:
        """Open the sources and build the daemon (failures raise here), then run it."""
        self.daemon.start()

    def close(self) -> None:
        """Stop every camera, then release the sources, the gallery watcher and the sinks."""
        self.daemon.close()
        self.stats = self.daemon.stats() if self.daemon.cameras else None


def _check_port(host: str, port: int) -> None:
    """Bind ``host:port`` once and let it go, so that a port in use fails before anything is
    printed or loaded (uvicorn would say so only after the page's address and the token).

    Raises:
        ConfigError: the address cannot be bound; says what to change.
    """
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: {e.strerror or e} (serve.host)") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(addr)
        except OSError as e:
            hint = ("another program (another facerec serve?) listens there; choose another with --port "
                    "or serve.port" if e.errno == errno.EADDRINUSE else "check --host / serve.host")
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}; {hint}") from None


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

    host, port = cfg.serve.host, cfg.serve.port
    token, generated = resolve_token(host)
    _check_port(host, port)  # before the token, the address and the models: the error comes first
    service = GalleryService(cfg)
    _ = service.analyzer  # load the models now: missing weights fail at start, not on the first request
    feed = None
    if args.source or cfg.cameras:
        feed = DaemonFeed(args.source or None, cfg, realtime=not args.as_fast_as_possible, loop=args.loop,
                          fps=args.fps)
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

"""Sources: what a ``--source`` names, how OpenCV/FFmpeg opens it, and why a stream is away.

:func:`classify_source` tells a webcam index, a network stream, a video file, an image
folder and a single image apart; :func:`open_video` opens the ones OpenCV reads (streams
with FFmpeg open and read timeouts); :func:`probe_cause` names the reason a stream cannot be
reached (refused, no answer, unknown host) with a short TCP probe, for the one log line
an outage gets. :mod:`facerec.capture` reads the opened source on its own thread.
"""

from __future__ import annotations

import os
import socket
import time
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

# FFmpeg prints a line of its own on every failed attempt of a stream that is away ("Connection
# refused", "no frame!"): the capture says each change of state once, in words, instead.
# Read when OpenCV first opens a video, so it must be set before that.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
#: FFmpeg options of every stream open (OpenCV reads them at each open; set the variable
#: yourself to choose others). RTSP over TCP, as OpenCV's own default; FFmpeg stops probing
#: a new stream after 64 KB or 0.5 s instead of its 5 MB / 5 s, so a stream that comes back
#: opens in about 0.3 s instead of 1.2-2 s (tests/rtsp_server.py, bench/outage.py). Cameras
#: announce their picture size in the session description, so nothing is lost by it.
STREAM_OPTIONS = "rtsp_transport;tcp|analyzeduration;500000|probesize;65536"
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", STREAM_OPTIONS)

import cv2  # noqa: E402

from facerec.config_rules import STREAM_SCHEMES as STREAM_SCHEMES  # URL schemes handed to FFmpeg as streams
from facerec.errors import SourceError
from facerec.imageio import IMAGE_SUFFIXES
from facerec.redact import redact

#: Default ports of the stream schemes, for the reachability probe that names a cause.
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443}


class SourceKind(str, Enum):
    """What a source is; a webcam and a network stream are live (:attr:`is_live`)."""

    CAMERA = "camera"
    STREAM = "stream"
    VIDEO = "video"
    FOLDER = "folder"
    IMAGE = "image"

    @property
    def is_live(self) -> bool:
        """Frames come at the source's own pace: the newest wins, outages are reconnected."""
        return self in (SourceKind.CAMERA, SourceKind.STREAM)


def classify_source(spec: str | int | os.PathLike) -> tuple[SourceKind, int | str | Path]:
    """Decide what a ``--source`` string names.

    A string of digits is a webcam index, a URL with a network scheme is a stream, a
    directory is an image folder, a file with an image suffix is a single image, and any
    other existing file is a video.

    Raises:
        SourceError: the path does not exist.
    """
    if isinstance(spec, int):
        return SourceKind.CAMERA, spec
    text = os.fspath(spec).strip()
    if text.isdigit():
        return SourceKind.CAMERA, int(text)
    if text.lower().startswith(STREAM_SCHEMES):
        return SourceKind.STREAM, text
    path = Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()
    if path.is_dir():
        return SourceKind.FOLDER, path
    if path.is_file():
        return (SourceKind.IMAGE if path.suffix.lower() in IMAGE_SUFFIXES else SourceKind.VIDEO), path
    if "://" in text:
        raise SourceError(f"source {redact(text)!r}: unsupported URL scheme (use one of {', '.join(STREAM_SCHEMES)})")
    raise SourceError(
        f"source {redact(text)!r}: no such file or directory (give a webcam index such as 0, a video file, "
        "an image folder, or an rtsp:// / http:// URL)"
    )


def open_video(target: int | str | Path, kind: SourceKind, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture:
    """A ``cv2.VideoCapture``; network streams get FFmpeg open/read timeouts."""
    if kind is SourceKind.STREAM:
        # OpenCV warns on stderr at each read timeout ("Stream timeout triggered"); the
        # capture's own line says it once per outage
        if cv2.utils.logging.getLogLevel() >= cv2.utils.logging.LOG_LEVEL_WARNING:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
        ]
        return cv2.VideoCapture(str(target), cv2.CAP_FFMPEG, params)
    if kind is SourceKind.CAMERA:
        return cv2.VideoCapture(int(str(target)))
    return cv2.VideoCapture(str(target))


def probe_cause(kind: SourceKind, spec: str, what: str) -> str:
    """``what`` with the reason the server gives, found by a short TCP probe of the
    stream's host (refused, no answer, name unknown, or reachable).

    Takes up to about 1.2 s (two connection attempts of 0.5 s at most, 0.2 s apart).

    Args:
        kind: the source's kind (a webcam gets a question about its cable instead).
        spec: the source as given, a URL for streams.
        what: what failed, in words; the start of the returned text.
    """
    if kind is SourceKind.CAMERA:
        return f"{what}: is the camera still connected?"
    try:
        parts = urlsplit(spec)
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return what
    if not host or not port or parts.scheme.lower() in ("udp", "srt"):
        return what
    where = f"{host}:{port}"
    try:
        for probe in range(2):
            with socket.create_connection((host, port), timeout=0.5):
                pass
            if probe == 0:  # a server that is going down may still accept for an instant
                time.sleep(0.2)
        return f"{what}; {where} accepts connections (server busy, wrong path or credentials?)"
    except socket.gaierror:
        return f"{what}; the host name {host} does not resolve"
    except ConnectionRefusedError:
        return f"{what}; {where} refused the connection"
    except TimeoutError:
        return f"{what}; {where} does not answer"
    except OSError as e:
        return f"{what}; {where}: {e.strerror or e}"

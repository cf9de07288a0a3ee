"""Rules of the configuration that span fields or need more than a range check.

:mod:`facerec.config` attaches them to its models as validators, so a file that breaks
one fails when it loads, for every command (not only when the daemon starts), and a
command-line flag that sets such a value is refused the same way. Each rule raises
``ValueError`` with a sentence that says what to write instead; pydantic puts the key in
front of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from facerec.redact import redact

#: URL schemes handed to FFmpeg as network streams.
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def check_roi(roi: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
    """``[x1, y1, x2, y2]`` with ``x1 < x2`` and ``y1 < y2`` (frame pixels, not negative)."""
    if roi is None:
        return roi
    x1, y1, x2, y2 = roi
    if min(roi) < 0:
        raise ValueError(f"roi {list(roi)} has a negative coordinate; frame pixels start at 0")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"roi {list(roi)} must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1 (frame pixels)")
    return roi


def webcam_index_as_text(source: object) -> object:
    """``source: 0`` in YAML is an int; a webcam index is kept as its text (``"0"``)."""
    return str(source) if isinstance(source, int) and not isinstance(source, bool) else source


def check_camera_source(source: str) -> str:
    """A source that is written as a URL uses a scheme the capture can open."""
    text = source.strip()
    if "://" in text and not text.lower().startswith((*STREAM_SCHEMES, "file://")):
        raise ValueError(f"source {redact(text)!r} has an unsupported URL scheme; use one of "
                         f"{', '.join(STREAM_SCHEMES)} (or a webcam index, a file or a folder)")
    return source


def check_http_url(url: str | None) -> str | None:
    """An ``http://`` or ``https://`` address with a host (the webhook)."""
    if url is None:
        return url
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{redact(url)!r} is not an http:// or https:// URL (write it whole, e.g. "
                         "http://host:8123/hook)")
    return url


def check_unique_names(names: Sequence[str]) -> None:
    """Every camera has its own name (events, topics and the page tell them apart by it)."""
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise ValueError(f"cameras: the name {dup[0]!r} is used twice; every camera needs its own name")

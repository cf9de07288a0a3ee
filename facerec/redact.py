"""Keeping a stream's user and password out of every output.

A camera URL such as ``rtsp://admin:secret@192.168.1.20:554/stream1`` is needed to open the
stream and nowhere else: log lines, events, MQTT topics, the stats file and the web page
show :func:`redact`'s form (``rtsp://***@192.168.1.20:554/stream1``), and a camera without
a ``name`` is called by :func:`source_slug` (``192.168.1.20_554_stream1``). Both go
through this one module so that no output path formats a source by hand.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

#: ``scheme://userinfo@``: everything between ``//`` and the last ``@`` before the host.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s@]*@)+")
#: Query parameters that carry a secret in camera URLs (``?user=admin&password=...``).
_SECRET_QUERY = re.compile(r"(?i)(?P<key>[?&;](?:user(?:name)?|pass(?:word)?|pwd|passwd|token|auth|key)=)[^&;#\s]*")


def redact(text: object) -> str:
    """``text`` with the user and password of every URL in it (and secret query
    parameters such as ``password=``) replaced by ``***``.

    Works on a bare URL, on a message that quotes one, and on anything else (returned as
    ``str(text)`` unchanged).
    """
    s = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    if "://" not in s and "=" not in s:
        return s
    s = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", s)
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}***", s)


def source_slug(source: object) -> str:
    """A camera name for a source that has none: safe in topics, file names and URLs.

    A URL gives its host, port and path without user and password
    (``rtsp://u:p@cam.local:554/live/1`` -> ``cam.local_554_live_1``); a file or folder
    gives its stem (``../clips/porch.mp4`` -> ``porch``); a webcam index ``0`` gives
    ``webcam0``. Only letters, digits, ``.``, ``-`` and ``_`` remain.
    """
    s = str(source).strip()
    if s.isdigit():
        return f"webcam{s}"
    if "://" in s and not s.lower().startswith("file://"):
        parts = urlsplit(s)
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            port = None
        raw = "/".join(p for p in (host, str(port) if port else "", parts.path) if p)
    else:
        path = s[len("file://"):] if s.lower().startswith("file://") else s
        raw = Path(path.rstrip("/\\")).stem or Path(path.rstrip("/\\")).name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._-")
    return slug[:64] or "camera"

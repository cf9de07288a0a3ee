"""What the DeepStack and CompreFace compatible APIs share.

Both APIs (:mod:`facerec.serve.deepstack`, :mod:`facerec.serve.compreface`) are thin
translations onto facerec's own gallery: a person registered through either is an
ordinary facerec person, enrolled by the same code as ``POST /api/people`` and written to
the audit log under the interface's own name (``deepstack`` or ``compreface``).

Scores. Those clients filter on numbers of their own making: DeepStack's ``confidence``
(clients send ``min_confidence`` 0.45 or 0.7, and Double Take none at all) and
CompreFace's detector ``probability`` (``det_prob_threshold``, usually 0.8). facerec's
scores live on other scales: a cosine similarity named at ``recognition.threshold``
(0.32 for MobileFaceNet) and a detector score kept from ``detection.conf_thres`` (0.5).
:class:`ScoreScale` maps one onto the other linearly so that facerec's own decision point
lands on the client's usual value (the *anchor*): a client minimum at or below the anchor
gives facerec's own answer, a higher one asks for proportionally more.
"""

from __future__ import annotations

import copy
import hmac
import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from fastapi import HTTPException
from fastapi import UploadFile as FastAPIUpload
from starlette.datastructures import UploadFile

from facerec.errors import GalleryError, ImageReadError
from facerec.gallery.backend import GalleryUnavailable
from facerec.serve.uploads import ImageUpload, decode_upload, read_image_upload

if TYPE_CHECKING:
    from facerec.gallery.service import GalleryService

log = logging.getLogger(__name__)

#: DeepStack ``confidence`` of a face whose similarity is exactly facerec's threshold. The
#: strictest library default (deepstack-sdk's 0.7) keeps every name facerec gives.
DEEPSTACK_ANCHOR = 0.7

#: CompreFace box ``probability`` of a face whose detector score is exactly
#: ``detection.conf_thres``: Double Take's fixed ``det_prob_threshold`` of 0.8 keeps every
#: face facerec detects.
COMPREFACE_DET_ANCHOR = 0.8


#: Where each API lives: ``/v1/vision/...`` (DeepStack) and ``/api/v1/...`` (CompreFace).
DEEPSTACK_PREFIX = "/v1/vision/"
COMPREFACE_PREFIX = "/api/v1/"


def error_body(path: str, status: int, message: str) -> dict[str, Any]:
    """A refusal's JSON body in the shape of the API ``path`` belongs to (facerec's own
    ``{"detail": ...}`` elsewhere); for refusals made before a route runs (upload size)."""
    if path.startswith(DEEPSTACK_PREFIX):
        return {"success": False, "error": message, "code": status}
    if path.startswith(COMPREFACE_PREFIX):
        return {"message": message, "code": 36 if status < 500 else 0}
    return {"detail": message}


class DropinError(Exception):
    """A refusal, answered in the calling API's own error shape.

    Args:
        status: HTTP status code.
        message: what went wrong and what to do, for the client's log.
        code: CompreFace's numeric error code (DeepStack ignores it).
    """

    def __init__(self, status: int, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def as_dropin_error(exc: Exception) -> DropinError:
    """The refusal for an exception raised by facerec's own helpers (uploads, the gallery)."""
    if isinstance(exc, DropinError):
        return exc
    if isinstance(exc, HTTPException):
        return DropinError(exc.status_code, str(exc.detail))
    if isinstance(exc, GalleryUnavailable):
        return DropinError(503, f"{exc} (nothing was changed; retry later)")
    if isinstance(exc, GalleryError):
        return DropinError(400, str(exc))
    if isinstance(exc, ImageReadError):
        return DropinError(422, str(exc))
    raise exc


@dataclass(frozen=True)
class ScoreScale:
    """A linear map of a facerec score in ``[floor, 1]`` onto a client's ``[anchor, 1]``.

    Attributes:
        floor: facerec's decision point (recognition threshold, detector score floor).
        anchor: the client-side value facerec's decision point is shown as.
    """

    floor: float
    anchor: float

    def to_client(self, score: float) -> float:
        """The client-side value of a facerec score (scores under the floor show as the anchor)."""
        s = min(max(float(score), self.floor), 1.0)
        span = max(1.0 - self.floor, 1e-9)
        return self.anchor + (1.0 - self.anchor) * (s - self.floor) / span

    def required(self, client_min: float | None) -> float:
        """The facerec score a client's minimum asks for.

        ``None`` (no minimum sent) and anything up to the anchor give the floor; above it,
        the same fraction of the way from the floor to 1.
        """
        if client_min is None or client_min <= self.anchor:
            return self.floor
        m = min(float(client_min), 1.0)
        return self.floor + (m - self.anchor) / max(1.0 - self.anchor, 1e-9) * (1.0 - self.floor)


def parse_unit(value: Any, name: str) -> float | None:
    """A form or query value that must be a number in [0, 1]; ``None`` when absent or empty.

    Raises:
        DropinError: 400 naming the field when it is not such a number.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DropinError(400, f"{name} must be a number between 0 and 1, got {str(value)[:40]!r}", 36) from None
    if not 0.0 <= x <= 1.0:
        raise DropinError(400, f"{name} must be between 0 and 1, got {x}", 36)
    return x


def key_matches(sent: str | bytes | None, token: str) -> bool:
    """True when ``sent`` is the token (compared in constant time)."""
    if not sent:
        return False
    raw = sent if isinstance(sent, bytes) else sent.encode("utf-8")
    return hmac.compare_digest(raw, token.encode("utf-8"))


class KeylessClients:
    """The addresses allowed to recognise and detect without a key (``serve.keyless_clients``).

    Args:
        entries: IP addresses or networks (``192.168.1.20``, ``192.168.1.0/24``); empty
            turns keyless access off.
    """

    def __init__(self, entries: list[str]) -> None:
        self.networks = [ipaddress.ip_network(e.strip(), strict=False) for e in entries]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, host: str | None) -> bool:
        """True when ``host`` (the peer address of the connection) is listed."""
        if not host or not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)


def interface_view(service: GalleryService, interface: str) -> GalleryService:
    """The same service (store, models, caches) writing its audit entries as ``interface``.

    A shallow copy: the store, the analyzer and the cache lock are shared, so a change
    made through the view is seen at once by the service itself.
    """
    view = copy.copy(service)
    view.interface = interface
    return view


async def read_part(part: UploadFile | str, srv: Any, field: str) -> ImageUpload:
    """Read and decode one uploaded photo of a form.

    A part sent without a file name arrives as text (decoded as UTF-8, else Latin-1);
    its bytes are recovered and decoded like a file.
    """
    if isinstance(part, str):
        import hashlib

        from starlette.concurrency import run_in_threadpool

        try:
            data = part.encode("latin-1")
        except UnicodeEncodeError:
            data = part.encode("utf-8")
        if len(data) > srv.max_bytes:
            raise DropinError(413, f"{field}: more than the limit of {srv.max_bytes / (1024 * 1024):.1f} MB")

        def decode() -> ImageUpload:
            return ImageUpload(decode_upload(data, field, srv.max_pixels), field, hashlib.sha256(data).hexdigest())

        return await run_in_threadpool(decode)
    return await read_image_upload(cast(FastAPIUpload, part), srv.max_bytes, srv.max_pixels)


@dataclass(frozen=True)
class Enrolled:
    """The outcome of registering photos of one person through a compatible API.

    Attributes:
        sample_ids: the new samples, then those the same photos were already enrolled as.
        added: how many samples are new.
        reasons: why photos were left out (no face, quality...), one per photo.
    """

    sample_ids: list[int]
    added: int
    reasons: list[str]


async def enroll_photos(srv: Any, name: str, photos: list[ImageUpload], interface: str) -> Enrolled:
    """Enroll photos of ``name`` (created if needed) through facerec's own enrollment.

    Each photo goes through the same gates as ``POST /api/people`` (one face, size,
    quality); each added sample is one audit entry ``samples.add`` naming ``interface``. A photo already
    enrolled for the same person counts as done (its sample id is returned), so a client
    that registers the same picture twice gets the same answer twice.

    Raises:
        DropinError: 400 when no photo gave a face (code 28 when none had a face at all).
    """
    new: list[int] = []
    again: list[int] = []
    reasons: list[str] = []
    codes: list[str | None] = []
    view = interface_view(srv.service, interface)
    for up in photos:
        r = await srv.model(srv.enroll, name, up.image, up.name, up.sha256, None, service=view)
        if r["sample_id"] is not None:
            new.append(int(r["sample_id"]))
            continue
        same = [s.id for s in await srv.io(srv.store.find_sha256, up.sha256) if s.person == name]
        if same:
            again.append(int(same[0]))
        else:
            reasons.append(str(r["reason"]))
            codes.append(r.get("code"))
    if not new and not again:
        no_face = all(c == "no_face" for c in codes)
        raise DropinError(400, f"nothing registered for {name!r}: " + "; ".join(reasons), 28 if no_face else 36)
    return Enrolled(new + again, len(new), reasons)


def face_area(box: list[float]) -> float:
    """Area of an ``[x1, y1, x2, y2]`` box, px^2."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def int_box(box: list[float] | np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Whole-pixel ``(x_min, y_min, x_max, y_max)`` inside the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (int(round(min(max(x1, 0), width))), int(round(min(max(y1, 0), height))),
            int(round(min(max(x2, 0), width))), int(round(min(max(y2, 0), height))))

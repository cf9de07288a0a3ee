"""Accepting uploaded files without trusting them.

* Size: :class:`BodySizeLimit` refuses a body whose ``Content-Length`` is over the limit
  before the app runs, and counts the bytes of a body without one (or that lies about
  it) as they arrive, stopping at the limit; :func:`read_upload` checks each file again.
* Content: :func:`decode_upload` sniffs the bytes with :func:`facerec.imageio.decode_image`;
  the file name and the declared content type are ignored. The pixel limit is checked on
  the header before any pixel is decoded (decompression bombs).
* Storage: only decoded arrays go further; the gallery store writes its own PNG crops,
  so the uploaded bytes themselves are never stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import HTTPException, UploadFile
from starlette.concurrency import run_in_threadpool

from facerec.errors import ImageReadError
from facerec.imageio import decode_image

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MB = 1024 * 1024

#: Room for multipart boundaries, part headers and small form fields on top of the files.
MULTIPART_SLACK = 64 * 1024

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


class BodySizeLimit:
    """ASGI middleware: at most ``limit_for(path)`` bytes of request body (plus ``slack``).

    A ``Content-Length`` over the limit is answered ``413`` at once, before the app runs.
    A body without the header (chunked) or longer than it claimed is counted as the app
    reads it; the read that crosses the limit raises a 413 :class:`HTTPException`, so the
    multipart parser stops there and the route never runs. Nothing is buffered here.

    Args:
        app: the wrapped ASGI application.
        limit_for: request path -> largest accepted upload in bytes.
        slack: bytes allowed on top for multipart framing and small form fields.
        shape: ``(path, status, message)`` -> the JSON body of a refusal (default
            ``{"detail": message}``; the DeepStack and CompreFace paths answer in their own).
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int], slack: int = MULTIPART_SLACK,
                 shape: Callable[[str, int, str], dict[str, Any]] | None = None) -> None:
        self.app = app
        self.limit_for = limit_for
        self.slack = slack
        self.shape = shape or (lambda path, status, message: {"detail": message})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        shown = self.limit_for(scope["path"])
        limit = shown + self.slack
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _reply(send, 400, self.shape(scope["path"], 400, "invalid Content-Length header"))
                return
            if length > limit:
                message = f"the upload is {_mb(length)}, more than the limit of {_mb(shown)}"
                await _reply(send, 413, self.shape(scope["path"], 413, message))
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"the upload is more than the limit of {_mb(shown)}")
            return message

        await self.app(scope, counted, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _reply(send: Send, code: int, answer: dict[str, Any]) -> None:
    body = json.dumps(answer).encode("utf-8")
    await send({
        "type": "http.response.start",
        "status": code,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The bytes of one uploaded file, refusing more than ``max_bytes`` while reading.

    Raises:
        HTTPException: 413 when the file is larger than ``max_bytes``.
    """
    chunks: list[bytes] = []
    total = 0
    while chunk := await upload.read(256 * 1024):
        total += len(chunk)
        if total > max_bytes:
            raise HTTPException(413,
                                f"{display_name(upload)}: more than the limit of {_mb(max_bytes)}")
        chunks.append(chunk)
    return b"".join(chunks)


def display_name(upload: UploadFile) -> str:
    """The client's file name, cut to something safe to echo in a message (never a path)."""
    name = (upload.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:100]
    return name or "upload"


def decode_upload(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Decode uploaded bytes as a BGR image, judging by content only.

    Raises:
        HTTPException: 422 when the bytes are empty, not an image, or claim more than
            ``max_pixels`` pixels (the message says which).
    """
    try:
        return decode_image(data, name, max_pixels)
    except ImageReadError as e:
        raise HTTPException(422, str(e)) from None


@dataclass(frozen=True)
class ImageUpload:
    """One uploaded photo after checking.

    Attributes:
        image: ``(H, W, 3)`` uint8 BGR, decoded from the bytes (EXIF rotation applied).
        name: the client's file name, safe to show (see :func:`display_name`).
        sha256: content hash of the uploaded bytes (recognises a photo sent twice).
    """

    image: np.ndarray
    name: str
    sha256: str


async def read_image_upload(upload: UploadFile, max_bytes: int, max_pixels: int) -> ImageUpload:
    """Read, hash and decode one uploaded image (decoding runs in the thread pool).

    Raises:
        HTTPException: 413 too large, 422 empty or not a readable image.
    """
    name = display_name(upload)
    data = await read_upload(upload, max_bytes)

    def decode() -> ImageUpload:
        return ImageUpload(decode_upload(data, name, max_pixels), name, hashlib.sha256(data).hexdigest())

    return await run_in_threadpool(decode)

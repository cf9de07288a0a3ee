"""The CompreFace recognition API on ``facerec serve`` (``/api/v1/recognition/...``).

What CompreFace's ``compreface-sdk``, Double Take's "compreface" detector and scripts
written for CompreFace send, answered from facerec's own gallery (a CompreFace
*subject* is a facerec person, an *example* a facerec sample, its ``image_id`` the sample
id as a string):

* ``POST faces?subject=NAME`` (multipart ``file``, or JSON ``{"file": base64}``),
  ``GET faces`` (``page``, ``size``, ``subject``), ``DELETE faces?subject=NAME``,
  ``DELETE faces/{image_id}``, ``POST faces/delete`` (JSON list of ids),
  ``GET faces/{image_id}/img`` (the aligned crop).
* ``POST recognize`` (``limit``, ``det_prob_threshold``, ``prediction_count``, ``status``
  and ``face_plugins`` accepted; plugins are not computed).
* ``GET/POST subjects``, ``PUT/DELETE subjects/{name}``.
* ``POST /api/v1/detection/detect``: faces and boxes only.

The key is the ``x-api-key`` header, which must be facerec's API token. These paths lie
under facerec's Bearer-guarded ``/api/``; :class:`ApiKeyGuard` checks them instead,
before any body is read. Errors are ``{"message": ..., "code": N}`` with CompreFace's
codes (28: no face found). ``similarity`` is facerec's own cosine similarity: subjects
under facerec's threshold are left out. Box ``probability`` is the detector score mapped
so that ``detection.conf_thres`` reads :data:`~facerec.serve.dropin.COMPREFACE_DET_ANCHOR`.
Deleting everything at once (an empty subject) is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from facerec.serve import dropin
from facerec.serve.dropin import DropinError, face_area, parse_unit
from facerec.serve.uploads import ImageUpload, decode_upload

log = logging.getLogger(__name__)

#: Every path of the API starts with this (and sits under facerec's ``/api/``).
PREFIX = dropin.COMPREFACE_PREFIX

#: What the audit log names as the source of changes made through this API.
INTERFACE = "compreface"

#: CompreFace's error codes used here.
NO_FACE, IMAGE_NOT_FOUND, MISSING_HEADER, MISSING_PARAMETER, BAD_ARGUMENT, SUBJECT_NOT_FOUND = 28, 11, 20, 33, 36, 42

#: CompreFace's default page size of ``GET faces``.
PAGE_SIZE = 20

UNAUTHORIZED = "missing or wrong x-api-key (send facerec's API token in the x-api-key header)"

NO_FACE_MESSAGE = "No face is found in the given image"

Handler = Callable[[], Awaitable[Any]]


def _error(status: int, message: str, code: int) -> JSONResponse:
    return JSONResponse({"message": message, "code": code}, status_code=status)


class ApiKeyGuard:
    """ASGI middleware: requests under ``prefix`` need ``x-api-key`` equal to the token.

    Refused before the request body is read, with CompreFace's error shape (401, code 20
    when the header is missing, 10 when it is wrong).

    Args:
        app: the wrapped ASGI application.
        token: facerec's API token.
        prefix: guarded path prefix.
    """

    def __init__(self, app: Any, token: str, prefix: str = PREFIX) -> None:
        self.app = app
        self.token = token
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope.get("headers", []) if k.lower() == b"x-api-key"), None)
        if dropin.key_matches(sent.strip() if sent else None, self.token):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"message": UNAUTHORIZED, "code": MISSING_HEADER if sent is None else 10}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _int_param(request: Request, name: str, default: int, low: int = 0) -> int:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DropinError(400, f"{name} must be a whole number, got {raw[:40]!r}", BAD_ARGUMENT) from None
    if value < low:
        raise DropinError(400, f"{name} must be at least {low}, got {value}", BAD_ARGUMENT)
    return value


def _subject_param(request: Request) -> str:
    return request.query_params.get("subject", "").strip()


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError:
        raise DropinError(400, "the body is not valid JSON", BAD_ARGUMENT) from None


async def _photo(request: Request, srv: Any) -> ImageUpload:
    """The uploaded photo: multipart field ``file``, or JSON ``{"file": "<base64>"}``."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        body = await _json_body(request)
        b64 = body.get("file") if isinstance(body, dict) else None
        if not isinstance(b64, str) or not b64:
            raise DropinError(400, "no photo: send {\"file\": \"<base64>\"}", MISSING_PARAMETER)
        try:
            data = base64.b64decode(b64.split(",", 1)[-1], validate=False)
        except (binascii.Error, ValueError):
            raise DropinError(400, "file is not valid base64", BAD_ARGUMENT) from None
        if len(data) > srv.max_bytes:
            raise DropinError(413, f"file: more than the limit of {srv.max_bytes / (1024 * 1024):.1f} MB", BAD_ARGUMENT)

        def decode() -> ImageUpload:
            return ImageUpload(decode_upload(data, "file", srv.max_pixels), "file", hashlib.sha256(data).hexdigest())

        return await run_in_threadpool(decode)
    async with request.form(max_files=2, max_part_size=srv.max_bytes) as form:
        part = form.get("file")
        if part is None:
            raise DropinError(400, "no photo: send it as the multipart field 'file'", MISSING_PARAMETER)
        return await dropin.read_part(part, srv, "file")


def add_compreface_routes(app: FastAPI, srv: Any) -> None:
    """Mount the CompreFace recognition API on ``app`` (guard it with :class:`ApiKeyGuard`).

    Args:
        app: the application of ``facerec serve``.
        srv: its route state (:class:`facerec.serve.state.ServeState`).
    """
    rec = APIRouter(prefix="/api/v1/recognition", tags=["compreface"])
    det_scale = dropin.ScoreScale(float(srv.cfg.detection.conf_thres), dropin.COMPREFACE_DET_ANCHOR)
    view = dropin.interface_view(srv.service, INTERFACE)

    async def answer(handler: Handler, status: int = 200) -> Response:
        try:
            body = await handler()
        except Exception as e:  # noqa: BLE001 - each becomes the client's error shape or is re-raised
            err = dropin.as_dropin_error(e)
            code = err.code or {404: IMAGE_NOT_FOUND, 413: BAD_ARGUMENT, 422: BAD_ARGUMENT}.get(err.status, 0)
            return _error(err.status, err.message, code)
        return body if isinstance(body, Response) else JSONResponse(body, status_code=status)

    async def require_subject(name: str) -> str:
        if not name:
            raise DropinError(400, "subject is required (deleting or renaming every subject at once is refused)",
                              MISSING_PARAMETER)
        canon = srv.valid_name(name)
        if not await srv.io(srv.store.has_person, canon):
            raise DropinError(404, f"Subject {canon!r} not found", SUBJECT_NOT_FOUND)
        return canon

    async def require_sample(image_id: str) -> Any:
        try:
            sid = int(image_id)
        except ValueError:
            raise DropinError(404, f"no face example with image_id {image_id[:40]!r}", IMAGE_NOT_FOUND) from None
        try:
            return await srv.io(srv.store.sample, sid)
        except Exception as e:  # noqa: BLE001
            err = dropin.as_dropin_error(e)
            if err.status == 503:
                raise err from None
            raise DropinError(404, f"no face example with image_id {image_id[:40]!r}", IMAGE_NOT_FOUND) from None

    async def analyse(request: Request) -> tuple[ImageUpload, list[dict[str, Any]], float]:
        """The photo and its faces kept by ``det_prob_threshold`` and ``limit`` (largest first)."""
        need = det_scale.required(parse_unit(request.query_params.get("det_prob_threshold"), "det_prob_threshold"))
        limit = _int_param(request, "limit", 0)
        up = await _photo(request, srv)
        t0 = time.perf_counter()
        faces = [f for f in await srv.model(srv.service.identify_image, up.image) if float(f["score"]) >= need]
        ms = (time.perf_counter() - t0) * 1000.0
        if not faces:
            raise DropinError(400, NO_FACE_MESSAGE, NO_FACE)
        if limit:
            keep = sorted(range(len(faces)), key=lambda i: -face_area(faces[i]["box"]))[:limit]
            faces = [faces[i] for i in sorted(keep)]
        return up, faces, ms

    def box_json(f: dict[str, Any], w: int, h: int) -> dict[str, Any]:
        x1, y1, x2, y2 = dropin.int_box(f["box"], w, h)
        return {"probability": round(det_scale.to_client(float(f["score"])), 5),
                "x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2}

    def versions() -> dict[str, str]:
        analyzer = srv.service.analyzer
        return {"detector": f"facerec.{getattr(analyzer.detector, 'name', type(analyzer.detector).__name__)}",
                "calculator": f"facerec.{getattr(analyzer.embedder, 'key', type(analyzer.embedder).__name__)}"}

    @rec.post("/recognize", summary="Recognise faces (CompreFace)")
    async def recognize(request: Request) -> Response:
        """Every face with the most similar subjects at or above facerec's threshold."""
        async def run() -> dict[str, Any]:
            count = _int_param(request, "prediction_count", 1, low=1)
            up, faces, ms = await analyse(request)
            h, w = up.image.shape[:2]
            t = float(srv.service.threshold)
            result = []
            for f in faces:
                subjects: list[dict[str, Any]] = []
                if f["name"] is not None:
                    ranked = [(f["name"], float(f["similarity"]))]
                    ranked += [(str(n), float(s)) for n, s in f["top"] if n != f["name"] and float(s) >= t]
                    subjects = [{"subject": n, "similarity": round(s, 5)} for n, s in ranked[:count]]
                result.append({"box": box_json(f, w, h), "subjects": subjects,
                               "execution_time": {"total": round(ms / len(faces), 1)}})
            return {"result": result, "plugins_versions": versions()}
        return await answer(run)

    @rec.post("/faces", summary="Add an example of a subject (CompreFace)", status_code=201)
    async def add_example(request: Request) -> Response:
        """Enroll the photo's face for ``subject`` (created if needed) through facerec's enrollment."""
        async def run() -> dict[str, Any]:
            name = _subject_param(request)
            if not name:
                raise DropinError(400, "subject is required: ?subject=NAME", MISSING_PARAMETER)
            name = srv.valid_name(name)
            parse_unit(request.query_params.get("det_prob_threshold"), "det_prob_threshold")
            up = await _photo(request, srv)
            done = await dropin.enroll_photos(srv, name, [up], INTERFACE)
            return {"image_id": str(done.sample_ids[0]), "subject": name}
        return await answer(run, status=201)

    @rec.get("/faces", summary="List examples (CompreFace)")
    async def list_examples(request: Request) -> Response:
        """Every sample as ``{image_id, subject}``, paged (``page`` from 0, ``size``)."""
        async def run() -> dict[str, Any]:
            page = _int_param(request, "page", 0)
            size = _int_param(request, "size", PAGE_SIZE, low=1)
            name = _subject_param(request)
            samples = await srv.io(srv.store.samples, srv.valid_name(name) if name else None)
            samples = sorted(samples, key=lambda s: s.id)
            chunk = samples[page * size:(page + 1) * size]
            return {"faces": [{"image_id": str(s.id), "subject": s.person} for s in chunk],
                    "page_number": page, "page_size": size,
                    "total_pages": math.ceil(len(samples) / size), "total_elements": len(samples)}
        return await answer(run)

    @rec.delete("/faces", summary="Delete a subject's examples (CompreFace)")
    async def delete_examples(request: Request) -> Response:
        """Remove the subject with every sample (as ``DELETE /api/people/{name}``);
        without a subject (CompreFace's "delete everything") it is refused."""
        async def run() -> dict[str, Any]:
            from facerec.unknowns import purge_person

            name = _subject_param(request)
            if not name:
                raise DropinError(400, "subject is required: deleting every example at once is refused",
                                  MISSING_PARAMETER)
            name = srv.valid_name(name)
            if not await srv.io(srv.store.has_person, name):
                return {"deleted": 0}
            done = await srv.io(purge_person, view, name, interface=INTERFACE)
            return {"deleted": int(done["samples"])}
        return await answer(run)

    @rec.post("/faces/delete", summary="Delete examples by id (CompreFace)")
    async def delete_many(request: Request) -> Response:
        """Remove the samples whose ids are listed in the JSON body; unknown ids are skipped."""
        async def run() -> list[dict[str, Any]]:
            ids = await _json_body(request)
            if not isinstance(ids, list):
                raise DropinError(400, "send a JSON list of image ids", BAD_ARGUMENT)
            out = []
            for image_id in ids:
                try:
                    s = await require_sample(str(image_id))
                except DropinError as e:
                    if e.status == 404:
                        continue
                    raise
                await srv.io(view.delete_sample, s.id)
                out.append({"image_id": str(s.id), "subject": s.person})
            return out
        return await answer(run)

    @rec.delete("/faces/{image_id}", summary="Delete an example by id (CompreFace)")
    async def delete_example(image_id: str, request: Request) -> Response:
        """Remove one sample (the subject stays)."""
        async def run() -> dict[str, Any]:
            s = await require_sample(image_id)
            await srv.io(view.delete_sample, s.id)
            return {"image_id": str(s.id), "subject": s.person}
        return await answer(run)

    @rec.get("/faces/{image_id}/img", summary="An example's image (CompreFace)")
    async def example_image(image_id: str, request: Request) -> Response:
        """The sample's aligned 112x112 crop as PNG (facerec keeps no uploaded photo)."""
        async def run() -> Response:
            s = await require_sample(image_id)
            return Response(await srv.io(srv.store.crop_png, s.id), media_type="image/png")
        return await answer(run)

    @rec.get("/subjects", summary="List subjects (CompreFace)")
    async def list_subjects(request: Request) -> Response:
        """Every person's name."""
        async def run() -> dict[str, Any]:
            return {"subjects": sorted((p.name for p in await srv.io(srv.store.people)), key=str.casefold)}
        return await answer(run)

    @rec.post("/subjects", summary="Add a subject (CompreFace)", status_code=201)
    async def add_subject(request: Request) -> Response:
        """A person without samples yet (``{"subject": NAME}``)."""
        async def run() -> dict[str, Any]:
            body = await _json_body(request)
            name = srv.valid_name(str(body.get("subject", "")) if isinstance(body, dict) else "")
            if await srv.io(srv.store.has_person, name):
                raise DropinError(400, f"Subject {name!r} already exists", 43)
            await srv.io(lambda: srv.store.add_person(name, audit=view.note("person.add", name)))
            return {"subject": name}
        return await answer(run, status=201)

    @rec.put("/subjects/{subject}", summary="Rename a subject (CompreFace)")
    async def rename_subject(subject: str, request: Request) -> Response:
        """Rename; when the new name exists the two are merged (as CompreFace does)."""
        async def run() -> dict[str, Any]:
            old = await require_subject(subject)
            body = await _json_body(request)
            new = srv.valid_name(str(body.get("subject", "")) if isinstance(body, dict) else "")
            if new == old:
                return {"updated": False}
            if await srv.io(srv.store.has_person, new):
                await srv.io(view.merge_people, old, new)
            else:
                await srv.io(view.rename_person, old, new)
            return {"updated": True}
        return await answer(run)

    @rec.delete("/subjects/{subject}", summary="Delete a subject (CompreFace)")
    async def delete_subject(subject: str, request: Request) -> Response:
        """Remove the person with every sample."""
        async def run() -> dict[str, Any]:
            from facerec.unknowns import purge_person

            name = await require_subject(subject)
            await srv.io(purge_person, view, name, interface=INTERFACE)
            return {"subject": name}
        return await answer(run)

    @rec.delete("/subjects", summary="Delete every subject (refused)")
    async def delete_all_subjects(request: Request) -> Response:
        """Refused: deleting the whole gallery goes through facerec's own tools."""
        async def run() -> dict[str, Any]:
            raise DropinError(400, "deleting every subject at once is refused; delete them by name", MISSING_PARAMETER)
        return await answer(run)

    @app.post("/api/v1/detection/detect", tags=["compreface"], summary="Detect faces (CompreFace)")
    async def detect(request: Request) -> Response:
        """Every face's box (``limit``, ``det_prob_threshold`` as for recognize)."""
        async def run() -> dict[str, Any]:
            need = det_scale.required(parse_unit(request.query_params.get("det_prob_threshold"), "det_prob_threshold"))
            limit = _int_param(request, "limit", 0)
            up = await _photo(request, srv)
            det = await srv.model(srv.service.detect, up.image)
            h, w = up.image.shape[:2]
            faces: list[dict[str, Any]] = [{"box": [float(v) for v in b], "score": float(s)} for b, s in zip(det.xyxy, det.score)
                     if float(s) >= need]
            if not faces:
                raise DropinError(400, NO_FACE_MESSAGE, NO_FACE)
            if limit:
                faces = sorted(faces, key=lambda f: -face_area(f["box"]))[:limit]
            return {"result": [{"box": box_json(f, w, h)} for f in faces], "plugins_versions": versions()}
        return await answer(run)

    app.include_router(rec)

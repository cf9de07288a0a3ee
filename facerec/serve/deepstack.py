"""The DeepStack face API on ``facerec serve`` (``/v1/vision/face...``).

What Home Assistant's deepstack_face (through ``deepstack-python``), DeepQuest's
``deepstack-sdk``, Double Take's "deepstack" and "aiserver" detectors and scripts written
for DeepStack send, answered from facerec's own gallery:

* ``POST /v1/vision/face/register``: form ``userid`` and one or more photos in file
  fields whose names start with ``image`` (``image``, ``image1``, ``image<uuid>``).
* ``POST /v1/vision/face/recognize``: file ``image``, optional ``min_confidence``.
* ``POST /v1/vision/face/list``, ``POST /v1/vision/face/delete`` (form ``userid``).
* ``POST /v1/vision/face``: detection only (file ``image``, optional ``min_confidence``).

Requests are multipart or url-encoded forms; the key is the form field ``api_key`` and
must be facerec's API token. Answers have DeepStack's shapes; a refusal is
``{"success": false, "error": ...}`` with a 4xx/5xx status. ``confidence`` is facerec's
similarity mapped so that facerec's threshold reads :data:`~facerec.serve.dropin.DEEPSTACK_ANCHOR`
(see :mod:`facerec.serve.dropin`).

Keyless clients (CodeProject.AI-style, such as Double Take's "aiserver" detector) may
recognise and detect, never register or delete, when their address is listed in
``serve.keyless_clients``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile

from facerec.serve.dropin import (
    DEEPSTACK_ANCHOR,
    DEEPSTACK_PREFIX,
    DropinError,
    KeylessClients,
    ScoreScale,
    as_dropin_error,
    enroll_photos,
    error_body,
    int_box,
    interface_view,
    key_matches,
    parse_unit,
    read_part,
)

log = logging.getLogger(__name__)

#: The path prefix of the API's face routes.
PREFIX = DEEPSTACK_PREFIX + "face"

#: What the audit log names as the source of changes made through this API.
INTERFACE = "deepstack"

#: Most photos in one register request (as facerec's own enrollment).
MAX_IMAGES = 20

UNAUTHORIZED = "missing or wrong api_key (send facerec's API token as the form field api_key)"

Handler = Callable[[FormData], Awaitable[dict[str, Any]]]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_body(PREFIX, status, message), status_code=status)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _image_parts(form: FormData) -> list[tuple[str, UploadFile | str]]:
    return [(k, v) for k, v in form.multi_items() if k.startswith("image")]


def add_deepstack_routes(app: FastAPI, srv: Any, token: str) -> None:
    """Mount the DeepStack face API on ``app``.

    Args:
        app: the application of ``facerec serve``.
        srv: its route state (:class:`facerec.serve.state.ServeState`).
        token: facerec's API token, the only ``api_key`` accepted.
    """
    router = APIRouter(prefix=PREFIX, tags=["deepstack"])
    keyless = KeylessClients(srv.cfg.serve.keyless_clients)
    det_scale = ScoreScale(float(srv.cfg.detection.conf_thres), DEEPSTACK_ANCHOR)

    def rec_scale() -> ScoreScale:  # read per request: the threshold comes with the models
        return ScoreScale(float(srv.service.threshold), DEEPSTACK_ANCHOR)

    async def answer(request: Request, handler: Handler, keyless_ok: bool) -> JSONResponse:
        """Parse the form, check the key, run ``handler``; every refusal in DeepStack's shape."""
        try:
            async with request.form(max_files=MAX_IMAGES + 1, max_part_size=srv.max_bytes) as form:
                sent = form.get("api_key")
                key = sent if isinstance(sent, str) else None
                if not key_matches(key, token):
                    host = request.client.host if request.client else None
                    if key or not keyless_ok or not keyless.allows(host):
                        return _error(401, UNAUTHORIZED)
                body = await handler(form)
        except Exception as e:  # noqa: BLE001 - each becomes the client's error shape or is re-raised
            err = as_dropin_error(e)
            return _error(err.status, err.message)
        return JSONResponse({"success": True, **body})

    async def one_image(form: FormData) -> Any:
        part = form.get("image")
        if part is None:
            raise DropinError(400, "no photo: send it as the file field 'image'")
        return await read_part(part, srv, "image")

    async def recognize(form: FormData) -> dict[str, Any]:
        """Every face with its ``userid`` (``unknown`` below facerec's threshold or ``min_confidence``)."""
        scale = rec_scale()
        need = scale.required(parse_unit(form.get("min_confidence"), "min_confidence"))
        up = await one_image(form)
        faces = await srv.model(srv.service.identify_image, up.image)
        h, w = up.image.shape[:2]
        predictions = []
        for f in faces:
            x1, y1, x2, y2 = int_box(f["box"], w, h)
            named = f["name"] is not None and float(f["similarity"]) >= need
            predictions.append({
                "userid": f["name"] if named else "unknown",
                "confidence": round(scale.to_client(f["similarity"]), 4) if named else 0.0,
                "x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2,
            })
        return {"predictions": predictions, "duration": 0}

    async def detect(form: FormData) -> dict[str, Any]:
        """Every face's box and detector confidence; ``min_confidence`` filters."""
        need = det_scale.required(parse_unit(form.get("min_confidence"), "min_confidence"))
        up = await one_image(form)
        det = await srv.model(srv.service.detect, up.image)
        h, w = up.image.shape[:2]
        predictions = []
        for box, score in zip(det.xyxy, det.score):
            if float(score) < need:
                continue
            x1, y1, x2, y2 = int_box(box, w, h)
            predictions.append({"confidence": round(det_scale.to_client(float(score)), 4),
                                "x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2})
        return {"predictions": predictions, "duration": 0}

    async def register(form: FormData) -> dict[str, Any]:
        """Add the photos' faces to ``userid`` (created if needed) through facerec's enrollment."""
        name = srv.valid_name(_text(form, "userid"))
        parts = _image_parts(form)
        if not parts:
            raise DropinError(400, "no photo: send one or more file fields named image, image1, ...")
        if len(parts) > MAX_IMAGES:
            raise DropinError(400, f"{len(parts)} photos in one request; send at most {MAX_IMAGES}")
        photos = [await read_part(part, srv, field) for field, part in parts]
        done = await enroll_photos(srv, name, photos, INTERFACE)
        return {"message": "face added" if done.added else "face already registered"}

    async def list_faces(form: FormData) -> dict[str, Any]:
        """Every person of facerec's gallery."""
        people = await srv.io(srv.store.people)
        return {"faces": sorted((p.name for p in people), key=str.casefold)}

    async def delete(form: FormData) -> dict[str, Any]:
        """Remove ``userid`` with every sample, as ``DELETE /api/people/{name}``."""
        from facerec.unknowns import purge_person

        name = srv.valid_name(_text(form, "userid"))
        if await srv.io(srv.store.has_person, name):
            await srv.io(purge_person, interface_view(srv.service, INTERFACE), name, interface=INTERFACE)
        else:  # DeepStack answers a delete of an unknown userid with success too
            log.info("deepstack delete: no person named %r", name)
        return {}

    def endpoint(handler: Handler, keyless_ok: bool) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def call(request: Request) -> JSONResponse:
            return await answer(request, handler, keyless_ok)
        return call

    for path, handler, keyless_ok, summary in (
        ("", detect, True, "Detect faces"),
        ("/recognize", recognize, True, "Recognise faces"),
        ("/register", register, False, "Register a person"),
        ("/list", list_faces, False, "List registered people"),
        ("/delete", delete, False, "Delete a person"),
    ):
        router.add_api_route(path, endpoint(handler, keyless_ok), methods=["POST"], summary=f"{summary} (DeepStack)",
                             description=handler.__doc__, name=f"deepstack_{handler.__name__}")

    app.include_router(router)

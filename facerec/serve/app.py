"""The HTTP API and web page of ``facerec serve``.

:func:`create_app` builds a FastAPI application around one
:class:`~facerec.gallery.service.GalleryService`. Layout:

* ``/health``, ``/``, ``/static/*``, ``/openapi.json``, ``/docs``: open (the page shell asks
  for the token and sends it with every request it makes).
* ``/api/*``: bearer token required (checked before a request body is read).

Model work is CPU-bound and the torch modules are not shared between threads here: it
runs in the thread pool under one lock, so the event loop stays free for cheap requests
(people list, thumbnails, the live stream) while a photo is analysed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from facerec import __version__
from facerec.config import Config
from facerec.errors import GalleryError, ImageReadError
from facerec.gallery.backend import GalleryUnavailable
from facerec.gallery.service import GalleryService
from facerec.gallery.store import validate_name
from facerec.serve.auth import BearerGuard, resolve_token, token_dependency
from facerec.serve.docs import add_api_docs
from facerec.serve.uploads import (
    MB,
    BodySizeLimit,
    ImageUpload,
    display_name,
    read_image_upload,
    read_upload,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Most events one ``GET /api/events`` returns.
MAX_EVENTS = 500

BOX_HELP = ("Which face to enroll, as its index in /api/identify's faces for the same photo "
            "(one photo only); default: the largest face.")
FORCE_HELP = ("Add photos that enroll check would flag (closer to another person, an outlier of "
              "this person's photos, probably not a face) anyway; default: they are skipped with the reason.")

#: Most photos in one enrollment request.
MAX_FILES = 20

T = TypeVar("T")


@runtime_checkable
class LiveFeed(Protocol):
    """What the web page needs from the running daemon (one or several cameras).

    ``facerec serve`` fills this from :class:`facerec.cli.serve_cmd.DaemonFeed`; tests pass
    a stub. Every method is called from the event loop and must return quickly.
    """

    def cameras(self) -> list[str]:
        """The camera names, in config order (the first is the default view)."""
        ...

    def recent_events(self, n: int, camera: str | None = None) -> list[dict]:
        """The last ``n`` events (of ``camera``, or of every camera), oldest first, as
        JSON-ready v1 records."""
        ...

    def latest_jpeg(self, camera: str | None = None) -> bytes | None:
        """The newest annotated frame of ``camera`` (default: the first) as JPEG bytes,
        or ``None`` before the first one.

        Return the same object until a new frame is ready: the stream sends a frame only
        when the object changes.
        """
        ...

    def camera_stats(self) -> dict[str, dict]:
        """Per camera: ``frames``, ``fps``, ``faces_seen``, ``tracks``, ``events``,
        ``dropped`` and ``running``."""
        ...


# ---------------------------------------------------------------------------- request bodies


class RenameBody(BaseModel):
    name: str = Field(description="The person's new name.")


class MergeBody(BaseModel):
    into: str = Field(description="The person who receives every sample (created if needed).")


class MoveBody(BaseModel):
    person: str = Field(description="The person the sample moves to (created if needed).")


# ---------------------------------------------------------------------------- helpers


class _SecurityHeaders:
    """ASGI middleware adding a strict content security policy and friends to every response.

    The page loads only its own files, so ``'self'`` (plus ``blob:`` images for thumbnails
    and live frames fetched with the token) is all it needs.
    """

    HEADERS = [
        (b"content-security-policy",
         b"default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
         b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    ]

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _round(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def _face_json(face: dict, index: int) -> dict:
    return {
        "index": index,
        "box": [_round(v, 1) for v in face["box"]],
        "score": _round(face.get("score", 0.0)),
        "name": face.get("name"),
        "similarity": _round(face.get("similarity", 0.0)),
        "top": [[str(n), _round(s)] for n, s in face.get("top", [])],
    }


def _gallery_http_error(e: GalleryError, code: int = 400) -> HTTPException:
    return HTTPException(code, str(e))


# ---------------------------------------------------------------------------- the app


class _Server:
    """State shared by the routes: the service, the feed and the analyzer lock."""

    def __init__(self, cfg: Config, service: GalleryService, feed: LiveFeed | None) -> None:
        self.cfg = cfg
        self.service = service
        self.store = service.store
        self.feed = feed
        self.model_lock = threading.Lock()
        self.max_bytes = int(cfg.serve.max_upload_mb * MB)
        self.max_import_bytes = int(cfg.serve.max_import_mb * MB)
        self.max_pixels = int(cfg.serve.max_image_pixels)

    # -- running things off the event loop

    async def model(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in the thread pool while holding the analyzer lock."""

        def locked() -> T:
            with self.model_lock:
                return fn(*args, **kwargs)

        return await run_in_threadpool(locked)

    async def io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store operation in the thread pool (the store has its own lock)."""
        return await run_in_threadpool(fn, *args, **kwargs)

    # -- checks that give precise status codes before the store is asked

    def require_person(self, name: str) -> str:
        try:
            canon = validate_name(name)
        except GalleryError as e:
            raise _gallery_http_error(e, 400) from None
        if not self.store.has_person(canon):
            raise HTTPException(404, f"no person named {canon!r} in the gallery")
        return canon

    def valid_name(self, name: str) -> str:
        try:
            return validate_name(name)
        except GalleryError as e:
            raise _gallery_http_error(e, 400) from None

    def require_sample(self, sample_id: int):
        try:
            return self.store.sample(sample_id)
        except GalleryUnavailable:
            raise
        except GalleryError as e:
            raise _gallery_http_error(e, 404) from None

    def require_feed(self) -> LiveFeed:
        if self.feed is None:
            raise HTTPException(
                503, "no live source is attached: start the server with `facerec serve --source SRC` "
                     "(a webcam index, a video file or a stream URL)")
        return self.feed

    # -- gallery views

    def people_json(self) -> dict:
        version = self.store.version()
        people = self.store.people()
        by_person: dict[str, list[dict]] = {p.name: [] for p in people}
        for s in self.store.samples():
            by_person.setdefault(s.person, []).append({
                "id": s.id,
                "url": f"/api/samples/{s.id}/image",
                "quality": _round(s.quality, 3),
                "added": s.added,
            })
        return {
            "version": version,
            "people": [
                {"name": p.name, "sample_count": len(by_person[p.name]), "created": p.created,
                 "samples": by_person[p.name]}
                for p in sorted(people, key=lambda p: p.name.casefold())
            ],
        }

    def info(self) -> dict:
        analyzer = self.service.analyzer  # built here, off the event loop, if not yet
        people = self.store.people()
        return {
            "version": __version__,
            "detector": getattr(analyzer.detector, "name", type(analyzer.detector).__name__),
            "embedder": str(getattr(analyzer.embedder, "key", type(analyzer.embedder).__name__)),
            "threshold": _round(self.service.threshold),
            "top_k": self.cfg.recognition.top_k,
            "live": self.feed is not None,
            "cameras": self.feed.cameras() if self.feed is not None else [],
            "people": len(people),
            "samples": sum(p.samples for p in people),
            "max_upload_mb": self.cfg.serve.max_upload_mb,
            "gallery_warning": self.gallery_warning(analyzer.embedder),
        }

    def gallery_warning(self, embedder: Any) -> str | None:
        """Why the gallery names nobody with this embedder, and the fix (or ``None``)."""
        from facerec.gallery.readiness import gallery_warning

        return gallery_warning(self.store, getattr(embedder, "key", ""), self.store.label)

    def identify(self, image: np.ndarray) -> list[dict]:
        return [_face_json(f, i) for i, f in enumerate(self.service.identify_image(image))]

    def enroll(self, name: str, image: np.ndarray, source: str, sha256: str, face: int | None,
               force: bool = False) -> dict:
        """Enroll one face of one photo (``face``: index in :meth:`identify`'s list, else
        the service's own choice); a photo that ``enroll check`` would flag as belonging to
        someone else is refused unless ``force`` (as ``enroll add``); returns ``{"file",
        "sample_id", "status", "reason", "code", "warnings", "check"}`` (``code``: why nothing was
        added, :data:`facerec.gallery.reports.ReasonCode`)."""
        if face is not None:
            image = self.isolate_face(image, face, source)
            sha256 = hashlib.sha256(f"{sha256}#face{face}".encode()).hexdigest()
        result = self.service.enroll_image(name, image, source_path=source, source_sha256=sha256,
                                           refuse_conflicts=not force)
        return {
            "file": source,
            "sample_id": result.sample.id if result.sample is not None else None,
            "status": result.status,
            "reason": result.reason,
            "code": result.code,
            "warnings": list(result.warnings),
            "check": result.check,
        }

    def isolate_face(self, image: np.ndarray, face: int, source: str) -> np.ndarray:
        """A view of ``image`` in which face number ``face`` is the only complete face.

        The service enrolls the largest face of a photo; to enroll a chosen one, the photo
        is cut to that face with a margin of one face size on each side and any other
        face reaching into the cut is blacked out. The alignment only uses the area
        around the eyes and mouth, which the margin keeps intact.
        """
        det = self.service.detect(image)
        if face >= len(det):
            raise HTTPException(422, f"{source}: face {face} was chosen but the photo has {len(det)} face(s)")
        h, w = image.shape[:2]
        x1, y1, x2, y2 = det.xyxy[face]
        m = max(x2 - x1, y2 - y1)
        cx1, cy1 = int(max(0, x1 - m)), int(max(0, y1 - m))
        cx2, cy2 = int(min(w, x2 + m)), int(min(h, y2 + m))
        out = image[cy1:cy2, cx1:cx2].copy()
        for j, (ox1, oy1, ox2, oy2) in enumerate(det.xyxy):
            if j == face:
                continue
            bx1, by1 = int(max(ox1 - cx1, 0)), int(max(oy1 - cy1, 0))
            bx2, by2 = int(min(ox2 - cx1, out.shape[1])), int(min(oy2 - cy1, out.shape[0]))
            if bx2 > bx1 and by2 > by1:
                out[by1:by2, bx1:bx2] = 0
        return out

    def compare(self, a: np.ndarray, b: np.ndarray) -> dict:
        analyzer = self.service.analyzer
        ra, rb = analyzer.analyze(a), analyzer.analyze(b)
        return {"a": ra, "b": rb}


def create_app(cfg: Config, service: GalleryService | None = None, token: str | None = None,
               feed: LiveFeed | None = None) -> FastAPI:
    """Build the application.

    Args:
        cfg: validated configuration (``serve`` limits, gallery location, models).
        service: a :class:`~facerec.gallery.service.GalleryService`; built from ``cfg`` when
            ``None`` (its models load on first use).
        token: the bearer token every ``/api/`` route requires; ``None`` reads
            ``FACEREC_API_TOKEN`` or generates one (see
            :func:`~facerec.serve.auth.resolve_token`), kept in ``app.state.api_token``.
        feed: the live view's source of events and frames; ``None`` makes ``/api/events``
            and ``/api/stream`` answer 503.
    """
    if service is None:
        service = GalleryService(cfg, interface="api")
    else:
        service.interface = "api"  # every gallery change through this app came over HTTP
    if token is None:
        token, _ = resolve_token(cfg.serve.host)
    srv = _Server(cfg, service, feed)

    app = FastAPI(
        title="facerec",
        version=__version__,
        summary="Enroll, identify and manage the face gallery; watch a live source.",
        docs_url=None,  # FastAPI's docs load scripts from a CDN; facerec.serve.docs serves them offline
        redoc_url=None,
    )
    app.state.api_token = token
    app.state.server = srv

    @app.exception_handler(GalleryError)
    async def gallery_error(request: Request, exc: GalleryError) -> JSONResponse:
        if isinstance(exc, GalleryUnavailable):  # the database is away: retry later, nothing was changed
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(ImageReadError)
    async def image_error(request: Request, exc: ImageReadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    # ------------------------------------------------------------------ open routes

    @app.get("/health", tags=["open"])
    async def health() -> dict:
        """Liveness: always ``{"status": "ok"}`` while the process serves requests."""
        return {"status": "ok", "version": __version__}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    add_api_docs(app)

    # ------------------------------------------------------------------ the API

    api = APIRouter(prefix="/api", dependencies=[Depends(token_dependency(token))])

    @api.get("/info", tags=["gallery"])
    async def info() -> dict:
        """Models, the decision threshold and whether a live source is attached."""
        return await srv.model(srv.info)

    @api.get("/people", tags=["gallery"])
    async def list_people() -> dict:
        """Everyone enrolled, with their sample ids and thumbnail URLs (token-guarded)."""
        return await srv.io(srv.people_json)

    @api.get("/samples/{sample_id}/image", tags=["gallery"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def sample_image(sample_id: int) -> Response:
        """The aligned 112x112 crop of one sample, as PNG."""
        sample = await srv.io(srv.require_sample, sample_id)
        try:
            png = await srv.io(srv.store.crop_png, sample.id)
        except GalleryUnavailable:
            raise
        except GalleryError as e:
            raise HTTPException(404, str(e)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, no-cache"})

    async def _read_images(files: list[UploadFile]) -> list[ImageUpload]:
        if not files:
            raise HTTPException(422, "no photo uploaded (send one or more `files`)")
        if len(files) > MAX_FILES:
            raise HTTPException(422, f"{len(files)} photos in one request; send at most {MAX_FILES}")
        return [await read_image_upload(f, srv.max_bytes, srv.max_pixels) for f in files]

    async def _enroll_many(name: str, images: list[ImageUpload], face: int | None, force: bool = False) -> dict:
        if face is not None and len(images) != 1:
            raise HTTPException(422, "`box` chooses a face of one photo; send exactly one file with it")
        results = [await srv.model(srv.enroll, name, up.image, up.name, up.sha256, face, force) for up in images]
        added = [r for r in results if r["sample_id"] is not None]
        if not added:
            reasons = "; ".join(r["reason"] for r in results)
            code = 409 if all(r["status"] == "skipped" for r in results) else 422
            raise HTTPException(code, f"nothing enrolled for {name!r}: {reasons}")
        return {
            "person": name,
            "added": [{"file": r["file"], "sample_id": r["sample_id"], "warnings": r["warnings"]} for r in added],
            "skipped": [{"file": r["file"], "reason": r["reason"]} for r in results if r["sample_id"] is None],
        }

    @api.post("/people", tags=["gallery"], status_code=201)
    async def add_person(
        name: Annotated[str, Form(description="The new person's name.")],
        files: Annotated[list[UploadFile], File(description="One or more photos of them.")],
        box: Annotated[int | None, Form(ge=0, description=BOX_HELP)] = None,
        force: Annotated[bool, Form(description=FORCE_HELP)] = False,
    ) -> dict:
        """Enroll a new person from photos. A photo without a usable face is skipped and
        reported; when no photo gives a face, nothing is stored and the answer is 422."""
        canon = srv.valid_name(name)
        if await srv.io(srv.store.has_person, canon):
            raise HTTPException(409, f"{canon!r} is already enrolled: add samples to them instead")
        images = await _read_images(files)
        return await _enroll_many(canon, images, box, force)

    @api.post("/people/{name}/samples", tags=["gallery"], status_code=201)
    async def add_samples(
        name: str,
        files: Annotated[list[UploadFile], File(description="One or more photos.")],
        box: Annotated[int | None, Form(ge=0, description=BOX_HELP)] = None,
        force: Annotated[bool, Form(description=FORCE_HELP)] = False,
    ) -> dict:
        """Add photos of an enrolled person."""
        canon = await srv.io(srv.require_person, name)
        images = await _read_images(files)
        return await _enroll_many(canon, images, box, force)

    @api.patch("/people/{name}", tags=["gallery"])
    async def rename_person(name: str, body: RenameBody) -> dict:
        """Rename a person (their crops move with them). 409 when the new name is taken."""
        old = await srv.io(srv.require_person, name)
        new = srv.valid_name(body.name)
        if new != old and await srv.io(srv.store.has_person, new):
            raise HTTPException(409, f"{new!r} is already enrolled; merge the two people instead")
        await srv.io(srv.service.rename_person, old, new)
        return {"name": new, "previous": old}

    @api.post("/people/{name}/merge", tags=["gallery"])
    async def merge_people(name: str, body: MergeBody) -> dict:
        """Move every sample of ``name`` into ``into`` and remove ``name``."""
        src = await srv.io(srv.require_person, name)
        dst = srv.valid_name(body.into)
        if dst == src:
            raise HTTPException(400, f"cannot merge {src!r} into itself")
        await srv.io(srv.service.merge_people, src, dst)
        return {"name": dst, "merged": src}

    @api.delete("/people/{name}", tags=["gallery"])
    async def delete_person(name: str) -> dict:
        """Remove a person with every sample, crop file, embedding and negative sample."""
        from facerec.unknowns import purge_person

        canon = await srv.io(srv.require_person, name)
        return await srv.io(purge_person, srv.service, canon, interface="api")

    @api.post("/samples/{sample_id}/move", tags=["gallery"])
    async def move_sample(sample_id: int, body: MoveBody) -> dict:
        """Give one sample to another person (created if needed)."""
        sample = await srv.io(srv.require_sample, sample_id)
        dst = srv.valid_name(body.person)
        await srv.io(srv.service.move_sample, sample.id, dst)
        return {"id": sample.id, "person": dst, "previous": sample.person}

    @api.delete("/samples/{sample_id}", tags=["gallery"])
    async def delete_sample(sample_id: int) -> dict:
        """Remove one sample (the person stays, possibly with no samples)."""
        sample = await srv.io(srv.require_sample, sample_id)
        await srv.io(srv.service.delete_sample, sample.id)
        return {"deleted": sample.id, "person": sample.person}

    @api.post("/identify", tags=["recognition"])
    async def identify(file: Annotated[UploadFile, File(description="A photo.")]) -> dict:
        """Every face in the photo with its decided name (``null`` = unknown) and top-k candidates.

        Boxes are ``[x1, y1, x2, y2]`` in pixels of the uploaded image (after EXIF rotation).
        """
        up = await read_image_upload(file, srv.max_bytes, srv.max_pixels)
        image = up.image
        faces = await srv.model(srv.identify, image)
        h, w = image.shape[:2]
        return {"faces": faces, "width": w, "height": h, "threshold": _round(srv.service.threshold)}

    @api.post("/compare", tags=["recognition"])
    async def compare(a: Annotated[UploadFile, File(description="First photo.")],
                      b: Annotated[UploadFile, File(description="Second photo.")]) -> dict:
        """Cosine similarity of every face in ``a`` with every face in ``b``, and a verdict.

        ``same`` is true when the best pair reaches the threshold; ``best`` gives, for each
        face of ``a``, its closest face in ``b``.
        """
        up_a = await read_image_upload(a, srv.max_bytes, srv.max_pixels)
        up_b = await read_image_upload(b, srv.max_bytes, srv.max_pixels)
        img_a, name_a, img_b, name_b = up_a.image, up_a.name, up_b.image, up_b.name
        res = await srv.model(srv.compare, img_a, img_b)
        ra, rb = res["a"], res["b"]
        for r, label in ((ra, name_a), (rb, name_b)):
            if len(r) == 0:
                raise HTTPException(422, f"{label}: no face found")
        sim = ra.embeddings.vectors @ rb.embeddings.vectors.T
        t = float(srv.service.threshold)
        i, j = np.unravel_index(int(np.argmax(sim)), sim.shape)
        return {
            "a": {"faces": ra.detections.to_json(), "width": img_a.shape[1], "height": img_a.shape[0]},
            "b": {"faces": rb.detections.to_json(), "width": img_b.shape[1], "height": img_b.shape[0]},
            "matrix": [[_round(v) for v in row] for row in sim],
            "best": [{"a": k, "b": int(np.argmax(sim[k])), "similarity": _round(sim[k].max()),
                      "same": bool(sim[k].max() >= t)} for k in range(len(sim))],
            "similarity": _round(sim[i, j]),
            "pair": [int(i), int(j)],
            "threshold": _round(t),
            "same": bool(sim[i, j] >= t),
        }

    @api.get("/export", tags=["gallery"], response_class=FileResponse,
             responses={200: {"content": {"application/zip": {}}}})
    async def export() -> FileResponse:
        """The whole gallery (database snapshot + crops) as a zip archive."""
        tmpdir = Path(tempfile.mkdtemp(prefix="facerec-serve-export-"))
        name = time.strftime("facerec-gallery-%Y%m%d-%H%M%S.zip")
        try:
            await srv.io(srv.service.export_archive, tmpdir / name)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        return FileResponse(tmpdir / name, media_type="application/zip", filename=name,
                            background=BackgroundTask(shutil.rmtree, tmpdir, ignore_errors=True))

    @api.post("/import", tags=["gallery"])
    async def import_archive(file: Annotated[UploadFile, File(description="An archive from /api/export.")]) -> dict:
        """Merge an exported gallery into this one; returns how many samples were added."""
        data = await read_upload(file, srv.max_import_bytes)
        if not data:
            raise HTTPException(422, f"{display_name(file)}: the file is empty (0 bytes)")
        with tempfile.TemporaryDirectory(prefix="facerec-serve-import-") as tmpdir:
            path = Path(tmpdir) / "upload.archive"
            await srv.io(path.write_bytes, data)
            try:
                n = await srv.io(srv.service.import_archive, path)
            except GalleryUnavailable:
                raise
            except GalleryError as e:
                raise HTTPException(400, str(e).replace(str(path), display_name(file))) from None
        return {"imported": n}

    def require_camera(feed: LiveFeed, camera: str | None) -> str | None:
        if camera is not None and camera not in feed.cameras():
            raise HTTPException(404, f"no camera named {camera!r}; the cameras are {feed.cameras()}")
        return camera

    @api.get("/cameras", tags=["live"], responses={503: {"description": "No live source attached."}})
    async def cameras() -> dict:
        """Every camera of the daemon with its stats (frames, fps, faces, tracks, events)."""
        feed = srv.require_feed()
        stats = feed.camera_stats()
        return {"cameras": [{"name": name, "stats": stats.get(name, {})} for name in feed.cameras()]}

    @api.get("/events", tags=["live"], responses={503: {"description": "No live source attached."},
                                                  404: {"description": "No such camera."}})
    async def events(n: Annotated[int, Query(ge=1, le=MAX_EVENTS, description="How many recent events.")] = 50,
                     camera: Annotated[str | None, Query(description="Only this camera's events.")] = None) -> dict:
        """Recent events of the live cameras (or of one), oldest first."""
        feed = srv.require_feed()
        return {"events": feed.recent_events(n, require_camera(feed, camera))}

    @api.get("/stream", tags=["live"], response_class=StreamingResponse,
             responses={200: {"content": {"multipart/x-mixed-replace; boundary=frame": {}}},
                        503: {"description": "No live source attached."}, 404: {"description": "No such camera."}})
    async def stream(
        request: Request,
        fps: Annotated[float, Query(gt=0, le=30, description="Most frames per second sent.")] = 10.0,
        frames: Annotated[int | None, Query(ge=1, description="Stop after this many frames (default: never).")] = None,
        camera: Annotated[str | None, Query(description="The camera shown (default: the first).")] = None,
    ) -> StreamingResponse:
        """The annotated live frames as MJPEG (``multipart/x-mixed-replace``); each part
        carries ``Content-Length`` so a script can cut the stream without scanning."""
        feed = srv.require_feed()
        return StreamingResponse(_mjpeg(feed, request, 1.0 / fps, frames, require_camera(feed, camera)),
                                 media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store"})

    from facerec.serve.unknowns_routes import add_unknowns_routes

    app.state.unknowns = add_unknowns_routes(api, srv)
    from facerec.serve.check_routes import add_check_routes

    add_check_routes(api, srv)
    app.include_router(api)

    # The DeepStack and CompreFace APIs for the clients people already run.
    from facerec.serve import compreface, deepstack, dropin

    deepstack.add_deepstack_routes(app, srv, token)
    compreface.add_compreface_routes(app, srv)

    # The outermost layers: headers on everything, then the token (before any body is
    # read), then the body size limit.
    def limit_for(path: str) -> int:
        return srv.max_import_bytes if path.rstrip("/") == "/api/import" else srv.max_bytes

    app.add_middleware(BodySizeLimit, limit_for=limit_for, shape=dropin.error_body)
    app.add_middleware(BearerGuard, token=token, prefix="/api/", exempt=(compreface.PREFIX,))
    app.add_middleware(compreface.ApiKeyGuard, token=token, prefix=compreface.PREFIX)
    app.add_middleware(_SecurityHeaders)
    return app


async def _mjpeg(feed: LiveFeed, request: Request, interval: float, frames: int | None,
                 camera: str | None = None) -> AsyncIterator[bytes]:
    last: bytes | None = None
    sent = 0
    while frames is None or sent < frames:
        if await request.is_disconnected():
            return
        jpg = feed.latest_jpeg(camera)
        if jpg is not None and jpg is not last:
            last = jpg
            sent += 1
            yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpg)).encode()
                   + b"\r\n\r\n" + jpg + b"\r\n")
        await asyncio.sleep(interval)

"""The HTTP API and web page of ``facerec serve``.

:func:`create_app` builds a FastAPI application around one
:class:`~facerec.gallery.service.GalleryService`. Layout:

* ``/health``, ``/``, ``/static/*``, ``/openapi.json``, ``/docs``: open (the page shell asks
  for the token and sends it with every request it makes).
* ``/api/*``: bearer token required (checked before a request body is read).

The routes live in modules by kind, each adding itself to the app: ``gallery_routes``
(people, samples, identify, compare, export, import), ``live_routes`` (cameras, events,
the MJPEG stream), ``unknowns_routes``, ``check_routes`` and the drop-in DeepStack and
CompreFace APIs; :class:`~facerec.serve.state.ServeState` is what they share. This module
wires them together with the open routes, the error handlers and the middleware.

Model work is CPU-bound and the torch modules are not shared between threads here: it
runs in the thread pool under one lock, so the event loop stays free for cheap requests
(people list, thumbnails, the live stream) while a photo is analysed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from facerec import __version__
from facerec.config import Config
from facerec.errors import GalleryError, ImageReadError
from facerec.gallery.backend import GalleryUnavailable
from facerec.gallery.service import GalleryService
from facerec.serve.auth import BearerGuard, resolve_token, token_dependency
from facerec.serve.docs import add_api_docs
from facerec.serve.gallery_routes import MAX_FILES, add_gallery_routes
from facerec.serve.live_routes import MAX_EVENTS, add_live_routes
from facerec.serve.state import LiveFeed, ServeState
from facerec.serve.uploads import BodySizeLimit

__all__ = ["MAX_EVENTS", "MAX_FILES", "STATIC_DIR", "LiveFeed", "ServeState", "create_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"


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
    srv = ServeState(cfg, service, feed)

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

    add_gallery_routes(api, srv)
    add_live_routes(api, srv)

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

"""The state every route of ``facerec serve`` shares, and what a live source must offer.

:class:`ServeState` holds the gallery service, the optional :class:`LiveFeed` and the lock
that keeps model work to one thread at a time; its methods are the checks that turn a bad
name or id into a precise status code, and the views (people, info, identify, enroll,
compare) that run off the event loop. The route modules (``gallery_routes``,
``live_routes``, ``unknowns_routes``, ``check_routes``, the drop-in APIs) reach the gallery
only through it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from facerec import __version__
from facerec.config import Config
from facerec.errors import GalleryError
from facerec.gallery.backend import GalleryUnavailable
from facerec.gallery.service import GalleryService
from facerec.gallery.store import SampleInfo, validate_name
from facerec.serve.uploads import MB

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


def rounded(x: float, nd: int = 4) -> float:
    """``x`` as a plain float rounded to ``nd`` decimals, for JSON answers."""
    return round(float(x), nd)


def face_json(face: dict, index: int) -> dict:
    """One face of :meth:`~facerec.gallery.service.GalleryService.identify_image` as the
    API returns it (box in pixels, scores rounded, ``index`` its place in the photo)."""
    return {
        "index": index,
        "box": [rounded(v, 1) for v in face["box"]],
        "score": rounded(face.get("score", 0.0)),
        "name": face.get("name"),
        "similarity": rounded(face.get("similarity", 0.0)),
        "top": [[str(n), rounded(s)] for n, s in face.get("top", [])],
    }


def gallery_http_error(e: GalleryError, code: int = 400) -> HTTPException:
    """``e`` as an HTTP error with status ``code``, its message as the detail."""
    return HTTPException(code, str(e))


class ServeState:
    """State shared by the routes: the service, the feed and the analyzer lock.

    Args:
        cfg: validated configuration (``serve`` upload limits in MB and pixels).
        service: the gallery service every route goes through.
        feed: the live source, or ``None`` when the server runs without one.
    """

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
        """``name`` as stored; 400 for an invalid name, 404 when nobody has it."""
        try:
            canon = validate_name(name)
        except GalleryError as e:
            raise gallery_http_error(e, 400) from None
        if not self.store.has_person(canon):
            raise HTTPException(404, f"no person named {canon!r} in the gallery")
        return canon

    def valid_name(self, name: str) -> str:
        """``name`` in its canonical form; 400 when it cannot be a person's name."""
        try:
            return validate_name(name)
        except GalleryError as e:
            raise gallery_http_error(e, 400) from None

    def require_sample(self, sample_id: int) -> SampleInfo:
        """The sample ``sample_id``; 404 when there is none (503 when the database is away)."""
        try:
            return self.store.sample(sample_id)
        except GalleryUnavailable:
            raise
        except GalleryError as e:
            raise gallery_http_error(e, 404) from None

    def require_feed(self) -> LiveFeed:
        """The live source; 503 with the way to attach one when there is none."""
        if self.feed is None:
            raise HTTPException(
                503, "no live source is attached: start the server with `facerec serve --source SRC` "
                     "(a webcam index, a video file or a stream URL)")
        return self.feed

    # -- gallery views

    def people_json(self) -> dict:
        """Everyone enrolled, sorted by name, with their samples' ids, thumbnail URLs and
        quality, and the gallery's change counter (``version``)."""
        version = self.store.version()
        people = self.store.people()
        by_person: dict[str, list[dict]] = {p.name: [] for p in people}
        for s in self.store.samples():
            by_person.setdefault(s.person, []).append({
                "id": s.id,
                "url": f"/api/samples/{s.id}/image",
                "quality": rounded(s.quality, 3),
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
        """The models, the threshold, the live cameras, the gallery's size and, when nobody
        can be named, why (loads the models on first call: run it off the event loop)."""
        analyzer = self.service.analyzer  # built here, off the event loop, if not yet
        people = self.store.people()
        return {
            "version": __version__,
            "detector": getattr(analyzer.detector, "name", type(analyzer.detector).__name__),
            "embedder": str(getattr(analyzer.embedder, "key", type(analyzer.embedder).__name__)),
            "threshold": rounded(self.service.threshold),
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
        """Every face of ``image`` (BGR) as :func:`face_json` gives it."""
        return [face_json(f, i) for i, f in enumerate(self.service.identify_image(image))]

    def enroll(self, name: str, image: np.ndarray, source: str, sha256: str, face: int | None,
               force: bool = False, service: GalleryService | None = None) -> dict:
        """Enroll one face of one photo (``face``: index in :meth:`identify`'s list, else
        the service's own choice); a photo that ``enroll check`` would flag as belonging to
        someone else is refused unless ``force`` (as ``enroll add``); returns ``{"file",
        "sample_id", "status", "reason", "code", "warnings", "check"}`` (``code``: why nothing was
        added, :data:`facerec.gallery.reports.ReasonCode`). ``service``: the view whose interface
        the audit entry names (a drop-in API), else the app's own (``api``)."""
        if face is not None:
            image = self.isolate_face(image, face, source)
            sha256 = hashlib.sha256(f"{sha256}#face{face}".encode()).hexdigest()
        result = (service or self.service).enroll_image(name, image, source_path=source, source_sha256=sha256,
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
        """Both photos analysed (detections and embeddings): ``{"a": ..., "b": ...}``."""
        analyzer = self.service.analyzer
        ra, rb = analyzer.analyze(a), analyzer.analyze(b)
        return {"a": ra, "b": rb}

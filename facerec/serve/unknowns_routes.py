"""``/api/unknowns/*`` and ``/api/audit``: candidate people from unknown sightings.

The page's "Unknown people" view lists candidates with their best crops and names,
merges or dismisses them; each change goes to the audit log with interface ``api``.
"""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from facerec.errors import GalleryError
from facerec.gallery.backend import GalleryUnavailable

log = logging.getLogger(__name__)


class NameBody(BaseModel):
    name: str = Field(description="The new person's name.")


class IntoBody(BaseModel):
    into: str = Field(description="An enrolled person who receives the candidate's crops.")


class _Unknowns:
    """The gallery backend holding the sightings and the candidates, opened on first use (one per app)."""

    def __init__(self, srv: Any) -> None:
        self.srv = srv
        self._lock = threading.Lock()
        self._strangers: Any = None

    def get(self):
        with self._lock:
            if self._strangers is None:
                from facerec.cli.unknowns_cmd import open_strangers

                store, self._strangers = open_strangers(self.srv.cfg)
            elif not self._strangers.embedder:
                self._strangers.embedder = self._strangers.store.latest_embedder() or ""
            return self._strangers

    def close(self) -> None:
        with self._lock:
            if self._strangers is not None:
                self._strangers.store.close()
                self._strangers = None


def _card(c) -> dict:
    d = c.to_json(details=True)
    d["crop_urls"] = [f"/api/unknowns/crops/{i}" for i in d["crops"]]
    return d


def add_unknowns_routes(api: APIRouter, srv: Any) -> _Unknowns:
    """Add the routes to ``api`` (the token-protected ``/api`` router of the app)."""
    un = _Unknowns(srv)

    def fail(e: GalleryError, code: int = 404) -> HTTPException:
        return HTTPException(code, str(e))

    @api.get("/unknowns", tags=["unknowns"])
    async def list_unknowns(
        all: Annotated[bool, Query(description="Also list ungrouped sightings.")] = False,  # noqa: A002
    ) -> dict:
        """Candidate people, the most sighted first: sightings, cameras, first and last seen, best crops."""
        def run() -> dict:
            s = un.get()
            return {"candidates": [_card(c) for c in s.candidates(include_noise=all)], "stats": s.store.unknowns_stats(),
                    "min_faces": s.params.min_faces, "max_distance": s.params.max_distance}
        return await srv.io(run)

    @api.get("/unknowns/crops/{crop_id}", tags=["unknowns"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    async def unknown_crop(crop_id: int) -> Response:
        """One kept crop (JPEG)."""
        try:
            data = await srv.io(lambda: un.get().store.unknown_crop(crop_id))
        except GalleryUnavailable:
            raise
        except GalleryError as e:
            raise fail(e) from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-cache"})

    @api.get("/unknowns/{cid}", tags=["unknowns"])
    async def show_unknown(cid: int) -> dict:
        """One candidate with every sighting."""
        try:
            return await srv.io(lambda: _card(un.get().candidate(cid)))
        except GalleryUnavailable:
            raise
        except GalleryError as e:
            raise fail(e) from None

    async def _enroll(cid: int, person: str, new: bool) -> dict:
        s = un.get()
        try:
            await srv.io(s.candidate, cid)
        except GalleryUnavailable:
            raise
        except GalleryError as e:
            raise fail(e) from None
        person = srv.valid_name(person)
        exists = await srv.io(srv.store.has_person, person)
        if new and exists:
            raise HTTPException(409, f"{person!r} is already enrolled: merge the candidate into them instead")
        if not new and not exists:
            raise HTTPException(404, f"no person named {person!r} in the gallery")
        try:
            return await srv.model(s.enroll, cid, person, srv.service, new=new, interface="api")
        except GalleryUnavailable:
            raise
        except GalleryError as e:
            raise fail(e, 400) from None

    @api.post("/unknowns/{cid}/name", tags=["unknowns"], status_code=201)
    async def name_unknown(cid: int, body: NameBody) -> dict:
        """Enroll the candidate as a new person from all its kept crops (at once); the
        sightings are then forgotten. 409 when the name is taken."""
        return await _enroll(cid, body.name, True)

    @api.post("/unknowns/{cid}/merge", tags=["unknowns"])
    async def merge_unknown(cid: int, body: IntoBody) -> dict:
        """Add the candidate's crops to an enrolled person."""
        return await _enroll(cid, body.into, False)

    @api.delete("/unknowns/{cid}", tags=["unknowns"])
    async def dismiss_unknown(cid: int) -> dict:
        """Dismiss a candidate: its sightings and crops are deleted."""
        try:
            return await srv.io(lambda: un.get().dismiss(cid, interface="api"))
        except GalleryUnavailable:
            raise
        except GalleryError as e:
            raise fail(e) from None

    @api.post("/feedback/not", tags=["unknowns"], status_code=201)
    async def not_person(
        person: Annotated[str, Form(description="The name the face was wrongly given.")],
        file: Annotated[UploadFile, File(description="The photo with the face.")],
        box: Annotated[int | None, Form(ge=0, description="The face's index in /api/identify's faces; default: the largest.")] = None,
    ) -> dict:
        """"That's not X": keep the face as a negative sample of ``person``. A later face
        closer to one of X's negatives than to X is not named X."""
        from facerec.serve.uploads import read_image_upload
        from facerec.unknowns import mark_not

        canon = await srv.io(srv.require_person, person)
        up = await read_image_upload(file, srv.max_bytes, srv.max_pixels)
        try:
            return await srv.model(mark_not, srv.service, canon, up.image, face=box, interface="api", source=up.name)
        except GalleryUnavailable:
            raise
        except GalleryError as e:
            raise fail(e, 422) from None

    @api.get("/audit", tags=["unknowns"])
    async def audit(limit: Annotated[int, Query(ge=1, le=1000, description="Newest entries to return.")] = 100) -> dict:
        """The append-only audit log of gallery changes, newest first."""
        return {"entries": await srv.io(lambda: [e.to_json() for e in un.get().store.audit_log(limit)])}

    return un

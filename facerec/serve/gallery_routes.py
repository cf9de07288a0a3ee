"""``/api/info``, ``/api/people*``, ``/api/samples*``, ``/api/identify``, ``/api/compare``,
``/api/export`` and ``/api/import``: the gallery and the photos the page sends.

Every route goes through :class:`~facerec.serve.state.ServeState`: model work under its
lock in the thread pool, store calls in the thread pool, names and ids checked first so a
bad one gets a precise status code. Uploads are read with the limits of
:mod:`facerec.serve.uploads`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from facerec.errors import GalleryError
from facerec.gallery.backend import GalleryUnavailable
from facerec.serve.state import ServeState, rounded
from facerec.serve.uploads import ImageUpload, display_name, read_image_upload, read_upload

BOX_HELP = ("Which face to enroll, as its index in /api/identify's faces for the same photo "
            "(one photo only); default: the largest face.")
FORCE_HELP = ("Add photos that enroll check would flag (closer to another person, an outlier of "
              "this person's photos, probably not a face) anyway; default: they are skipped with the reason.")

#: Most photos in one enrollment request.
MAX_FILES = 20


class RenameBody(BaseModel):
    name: str = Field(description="The person's new name.")


class MergeBody(BaseModel):
    into: str = Field(description="The person who receives every sample (created if needed).")


class MoveBody(BaseModel):
    person: str = Field(description="The person the sample moves to (created if needed).")


def add_gallery_routes(api: APIRouter, srv: ServeState) -> None:
    """Register the gallery and photo routes on ``api`` (the token-guarded ``/api`` router).

    Args:
        api: the ``/api`` router of the app.
        srv: the app's shared state.
    """

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
        return {"faces": faces, "width": w, "height": h, "threshold": rounded(srv.service.threshold)}

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
            "matrix": [[rounded(v) for v in row] for row in sim],
            "best": [{"a": k, "b": int(np.argmax(sim[k])), "similarity": rounded(sim[k].max()),
                      "same": bool(sim[k].max() >= t)} for k in range(len(sim))],
            "similarity": rounded(sim[i, j]),
            "pair": [int(i), int(j)],
            "threshold": rounded(t),
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

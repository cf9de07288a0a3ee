"""Enrollment: one photo (:func:`enroll_image`) or many (:func:`enroll_paths`) become samples.

A photo goes through the duplicate check (by content hash), the one-face choice, the size
and quality floors and the ``enroll check`` gate; each refusal carries a
:data:`~facerec.gallery.reports.ReasonCode` beside its message. The functions take the
:class:`~facerec.gallery.service.GalleryService` whose backend, models and audit log they
use; call them through its methods.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal

import numpy as np

from facerec.align import align
from facerec.errors import ImageReadError
from facerec.gallery.faces import choose_face
from facerec.gallery.quality import blur_measure
from facerec.gallery.reports import SKIPPED_CODES, BatchReport, EnrollResult, _progress, _strip_name
from facerec.gallery.store import validate_name
from facerec.imageio import decode_image, list_images
from facerec.types import Embeddings

if TYPE_CHECKING:
    from facerec.gallery.service import GalleryService


def enroll_image(svc: GalleryService, name: str, image: np.ndarray, *, source_path: str | None = None,
                 source_sha256: str | None = None, refuse_conflicts: bool = False) -> EnrollResult:
    """:meth:`GalleryService.enroll_image` (see there)."""
    name = validate_name(name)
    label = source_path or "<image>"
    g = svc.cfg.gallery
    if source_sha256 is None:
        source_sha256 = hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()
    warnings: list[str] = []
    for s in svc.store.find_sha256(source_sha256):
        if s.person == name:
            return EnrollResult(name, source_path, "skipped", f"{label}: already enrolled as sample {s.id}",
                                code="already_enrolled")
        conflict = f"{label}: the same photo is already enrolled for {s.person!r} (sample {s.id})"
        if refuse_conflicts:
            return EnrollResult(name, source_path, "failed", f"{conflict}; not added (--force adds it anyway)",
                                code="enrolled_for_other")
        warnings.append(conflict)
    det, code, reason, w = choose_face(svc.detect(image), g.multiple_faces, label, g.min_face_size)
    warnings += w
    if det is None:
        status: Literal["skipped", "failed"] = "skipped" if code in SKIPPED_CODES else "failed"
        return EnrollResult(name, source_path, status, f"{label}: {reason}", warnings=warnings, code=code)
    faces = align(image, det.landmarks)
    emb = svc.embed_faces(faces)
    floor, what = svc.quality_floor
    quality = float(emb.norm[0]) if svc.embedder.quality_is_norm else blur_measure(faces.images[0])
    if quality < floor:
        return EnrollResult(
            name, source_path, "failed",
            f"{label}: quality too low: {what} {quality:.1f} < {floor:.1f} "
            "(use a sharper, larger, frontal photo, or lower gallery.min_quality)",
            quality=quality, warnings=warnings, code="low_quality",
        )
    similar = similarity_warnings(svc, name, emb, label)
    verdict = svc.judge(name, emb.vectors[0], float(det.score[0]))
    if verdict.reason is not None:
        conflict = f"{label}: {verdict.reason}: {verdict.message};"
        if refuse_conflicts:
            return EnrollResult(name, source_path, "failed", f"{conflict} not added (--force adds it anyway)",
                                quality=quality, warnings=warnings, check=verdict.reason, code="check_failed")
        warnings.append(conflict.rstrip(";"))
    warnings += similar
    stem = Path(source_path).stem if source_path else None
    sample = svc.store.add_sample(name, faces.images[0], source_path=source_path, source_sha256=source_sha256,
                                   quality=quality, embeddings=emb, stem=stem,
                                   audit=svc.note("samples.add", name, added=1))
    return EnrollResult(name, source_path, "added", sample=sample, quality=quality, warnings=warnings,
                        check=verdict.reason)


def similarity_warnings(svc: GalleryService, name: str, emb: Embeddings, label: str) -> list[str]:
    out: list[str] = []
    ids, names, vec, _ = svc._sample_vectors()
    if not len(ids):
        return out
    sims = vec @ emb.vectors[0]
    j = int(np.argmax(sims))
    if sims[j] >= svc.cfg.gallery.duplicate_similarity:
        out.append(f"{label}: near-duplicate of sample {int(ids[j])} of {names[j]!r} (cosine {sims[j]:.3f})")
    return out


def enroll_paths(svc: GalleryService, name: str, paths: Iterable[str | os.PathLike], progress: bool = False,
                 refuse_conflicts: bool = False) -> BatchReport:
    """:meth:`GalleryService.enroll_paths` (see there)."""
    name = validate_name(name)
    t0 = time.perf_counter()
    report = BatchReport()
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [f for f in list_images(p) if not f.name.startswith(".")]
            if not found:
                report.skipped.append((str(p), "no image files in the folder"))
            files += found
        else:
            files.append(p)
    for f in _progress(files, desc=f"enroll {name}", enabled=progress, unit="photo"):
        try:
            data = f.read_bytes()
        except OSError as e:
            report.failed.append((str(f), f"{f}: cannot be read ({e.strerror or e})"))
            continue
        try:
            image = decode_image(data, str(f))
        except ImageReadError as e:
            report.failed.append((str(f), _strip_name(str(e), str(f))))
            continue
        r = svc.enroll_image(name, image, source_path=str(f), source_sha256=hashlib.sha256(data).hexdigest(),
                              refuse_conflicts=refuse_conflicts)
        report.warnings += r.warnings
        reason = _strip_name(r.reason, str(f))
        if r.status == "added":
            report.done.append(str(f))
        elif r.status == "skipped":
            (report.unchanged.append(str(f)) if r.code == "already_enrolled" else report.skipped.append((str(f), reason)))
        else:
            report.failed.append((str(f), reason))
            if r.code == "check_failed":
                report.refused.append(str(f))
    report.seconds = time.perf_counter() - t0
    return report

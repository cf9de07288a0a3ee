"""Bringing the gallery in step: crops written into ``preprocessed/`` become samples
(:func:`sync_preprocessed`), samples without a vector get one (:func:`embed_all`, here or on
a cluster through an :data:`EmbedRunner`), both together as ``facerec embed`` (:func:`embed`).

The functions take the :class:`~facerec.gallery.service.GalleryService` whose backend,
models and audit log they use; call them through its methods.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from facerec.errors import GalleryError, ImageReadError
from facerec.gallery.align_data import MANIFEST_NAME
from facerec.gallery.quality import blur_measure
from facerec.gallery.reports import BatchReport, _progress, _sha256_file, _strip_name
from facerec.gallery.store import CROPS_DIR, SampleInfo, validate_name
from facerec.imageio import IMAGE_SUFFIXES, decode_image, read_image
from facerec.types import ALIGNED_SIZE, Embeddings

if TYPE_CHECKING:
    from facerec.gallery.service import GalleryService


# ---------------------------------------------------------------------------- work shared by every executor


@dataclass
class CropItem:
    """One stored aligned crop to embed, as it travels to whoever embeds it.

    Attributes:
        sample_id: the sample the vector belongs to.
        crop_path: its name in reports (``preprocessed/<Person>/<file>``).
        png: the crop's encoded bytes; ``None`` when it could not be read.
        error: why it could not be read.
    """

    sample_id: int
    crop_path: str
    png: bytes | None
    error: str = ""


@dataclass
class EmbeddedBatch:
    """The vectors of one batch of :class:`CropItem`, ready to be written.

    Attributes:
        ids: samples that got a vector, in the order of ``embeddings`` rows.
        embeddings: their vectors (``None`` when none of the batch could be embedded).
        failed: ``(crop path, reason)`` of crops that could not be decoded or were not
            112x112.
        count: crops in the batch (progress).
        host: where it was computed (messages).
    """

    ids: list[int]
    embeddings: Embeddings | None
    failed: list[tuple[str, str]]
    count: int
    host: str = ""


#: Computes the vectors of crop batches, yielding one result per batch in any order.
EmbedRunner = Callable[[Iterator[list[CropItem]]], Iterator[EmbeddedBatch]]


def embed_crops(embed: Callable[[np.ndarray], Embeddings], items: list[CropItem], host: str = "") -> EmbeddedBatch:
    """Decode and embed one batch of crops (here, or on a worker of a cluster).

    Args:
        embed: aligned ``(n, 112, 112, 3)`` uint8 BGR crops -> their vectors.
        items: the batch; unreadable, undecodable or wrongly sized crops are reported in
            ``failed``, the rest embedded in one call.
    """
    ids: list[int] = []
    crops: list[np.ndarray] = []
    failed: list[tuple[str, str]] = []
    for it in items:
        if it.png is None:
            failed.append((it.crop_path, it.error))
            continue
        try:
            img = decode_image(it.png, it.crop_path)
        except ImageReadError as e:
            failed.append((it.crop_path, _strip_name(str(e), it.crop_path)))
            continue
        if img.shape[:2] != (ALIGNED_SIZE, ALIGNED_SIZE):
            failed.append((it.crop_path, f"not a {ALIGNED_SIZE}x{ALIGNED_SIZE} crop ({img.shape[1]}x{img.shape[0]})"))
            continue
        ids.append(it.sample_id)
        crops.append(img)
    emb = embed(np.stack(crops)) if crops else None
    return EmbeddedBatch(ids, emb, failed, len(items), host)



# ---------------------------------------------------------------------------- preprocessed/ and embeddings


def _align_manifest(svc: GalleryService) -> dict[str, dict]:
    """Crop (relative to ``preprocessed/``) -> source record from ``facerec align``'s manifest."""
    path = svc.data_dir / CROPS_DIR / MANIFEST_NAME
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {e["output"]: e for e in files.values() if isinstance(e, dict) and e.get("output")}


def embed(svc: GalleryService, prune: bool = False, progress: bool = True, batch_size: int | None = None,
          run: EmbedRunner | None = None) -> tuple[BatchReport, BatchReport]:
    """:meth:`GalleryService.embed` (see there)."""
    sync = svc.sync_preprocessed(prune=prune, progress=progress)
    report = svc.embed_all(progress=progress, batch_size=batch_size, run=run)
    forgotten = len(sync.removed) if prune else 0
    if sync.done or forgotten or report.done:  # a job of many transactions: one summary entry after them
        svc.audit("gallery.embed", "*", samples_added=len(sync.done), samples_forgotten=forgotten,
                   vectors=len(report.done), embedder=str(svc.key))
    return sync, report


def sync_preprocessed(svc: GalleryService, prune: bool = False, progress: bool = False) -> BatchReport:
    """:meth:`GalleryService.sync_preprocessed` (see there)."""
    t0 = time.perf_counter()
    report = BatchReport()
    root = svc.data_dir / CROPS_DIR
    known = svc.store.crop_hashes()
    # crops have no feature norm until embedded: the sharpness floor applies where it is the measure
    floor = svc.quality_floor[0] if root.is_dir() and not svc.embedder.quality_is_norm else None
    sources = _align_manifest(svc)
    seen: set[str] = set()
    new: list[tuple] = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if d.name.startswith("."):
                continue
            if not d.is_dir():
                report.skipped.append((str(d), "not in a person folder"))
                continue
            try:
                person = validate_name(d.name)
            except GalleryError as e:
                report.skipped.append((str(d), f"folder name refused: {e}"))
                continue
            if person != d.name:
                report.skipped.append((str(d), f"folder name is not in canonical form (rename it to {person!r})"))
                continue
            for f in _progress(sorted(d.iterdir()), desc=f"sync {person}", enabled=progress, unit="file"):
                if f.name.startswith(".") or not f.is_file():
                    continue
                rel = f"{CROPS_DIR}/{person}/{f.name}"
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    report.skipped.append((rel, f"not an image (suffix {f.suffix or 'none'})"))
                    continue
                seen.add(rel)
                try:
                    crop_sha = _sha256_file(f)
                except OSError as e:
                    report.failed.append((rel, f"cannot be read ({e.strerror or e})"))
                    continue
                if rel in known and known[rel][1] == crop_sha:
                    report.unchanged.append(rel)
                    continue
                try:
                    img = read_image(f)
                except ImageReadError as e:
                    report.failed.append((rel, _strip_name(str(e), str(f))))
                    continue
                if img.shape[:2] != (ALIGNED_SIZE, ALIGNED_SIZE):
                    report.skipped.append((rel, f"not a {ALIGNED_SIZE}x{ALIGNED_SIZE} aligned crop "
                                                f"({img.shape[1]}x{img.shape[0]}; run facerec align on the photo)"))
                    continue
                quality = blur_measure(img)
                if floor is not None and quality < floor:  # the enrollment floor, as for enroll add
                    report.skipped.append((rel, f"quality too low: sharpness {quality:.1f} < {floor:.1f} "
                                                "(use a sharper, larger photo, or lower gallery.min_quality)"))
                    continue
                src = sources.get(f"{person}/{f.name}", {})
                if rel in known:
                    svc.store.update_sample_file(known[rel][0], crop_sha, quality, src.get("sha256"), png=f.read_bytes())
                else:
                    new.append((person, f, crop_sha, src.get("sha256") or crop_sha, quality, src.get("source")))
                report.done.append(rel)
    for i in range(0, len(new), 500):
        svc.store.add_existing_crops(new[i : i + 500])
    gone = sorted(set(known) - seen)
    report.removed = gone
    if gone and prune:
        svc.store.forget_samples([known[r][0] for r in gone])
    report.seconds = time.perf_counter() - t0
    return report


def embed_all(svc: GalleryService, progress: bool = True, batch_size: int | None = None,
              run: EmbedRunner | None = None) -> BatchReport:
    """:meth:`GalleryService.embed_all` (see there)."""
    t0 = time.perf_counter()
    report = BatchReport()
    key = svc.key
    todo = svc.store.missing_embeddings(key)
    bs = batch_size or svc.cfg.recognition.batch_size
    use_norm = svc.embedder.quality_is_norm
    batches = (_crop_batch(svc, todo[i : i + bs]) for i in range(0, len(todo), bs))
    results = run(batches) if run is not None else (embed_crops(svc.embed_faces, b) for b in batches)
    bar = _progress(total=len(todo), desc=f"embed {key.model}", enabled=progress, unit="face")
    try:
        for r in results:
            report.failed += r.failed
            if r.embeddings is not None and r.ids:
                if r.embeddings.key != key:
                    raise GalleryError(
                        f"a batch came back embedded with {r.embeddings.key}, not {key}: the weights file on "
                        f"{r.host or 'a worker'} differs from this host's; nothing of that batch was written "
                        "(give every host the same weights, then rerun)")
                svc.store.put_embeddings(key, r.ids, r.embeddings, quality=r.embeddings.norm if use_norm else None)
                report.done += [str(x) for x in r.ids]
            bar.update(r.count)
    finally:
        bar.close()
        close = getattr(results, "close", None)
        if close is not None:
            close()
    report.seconds = time.perf_counter() - t0
    return report


def _crop_batch(svc: GalleryService, samples: list[SampleInfo]) -> list[CropItem]:
    """The stored crops of ``samples`` as bytes (a crop that cannot be read carries its reason)."""
    items = []
    for s in samples:
        try:
            items.append(CropItem(s.id, s.crop_path, svc.store.crop_png(s.id)))
        except GalleryError as e:
            items.append(CropItem(s.id, s.crop_path, None, _strip_name(str(e), s.crop_path)))
    return items

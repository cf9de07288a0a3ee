"""Open-set identification on ``<person>/<photo>`` folders, and the helpers shared with the
gallery checks: embedding a folder of people and scoring probes against person templates.

A *gallery* folder holds the enrolled people; a *probe* folder holds search photos, some of
people who are not enrolled (their searches should answer "unknown"). Each photo
contributes its largest face, as enrollment does; a photo without a face is skipped with a
warning and counted.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facerec.align import align
from facerec.analyze import FaceAnalyzer
from facerec.errors import FacerecError, ImageReadError
from facerec.evaluate.metrics import IdentificationReport, identification_report
from facerec.gallery.search import GalleryIndex
from facerec.gallery.service import detect_faces
from facerec.imageio import list_images, read_image

log = logging.getLogger(__name__)

#: How a person is compared with a face; the same names as ``gallery.template``.
TEMPLATES = ("mean", "quality_mean", "max")


@dataclass
class FolderEmbeddings:
    """One vector per usable photo of a ``<person>/<photo>`` folder.

    Attributes:
        paths: photo paths, one per row.
        names: the person (sub-folder name) of each row.
        vectors: ``(n, d)`` unit vectors.
        quality: ``(n,)`` raw feature norms.
        skipped: photos without a face or unreadable, with the reason.
    """

    paths: list[Path]
    names: list[str]
    vectors: np.ndarray
    quality: np.ndarray
    skipped: dict[Path, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def people(self) -> list[str]:
        return sorted(set(self.names))


def person_folders(root: str | os.PathLike) -> list[Path]:
    """Sub-folders of ``root`` that hold people (names starting with ``_`` or ``.`` are not).

    Raises:
        FacerecError: ``root`` is not a folder or holds no person folder.
    """
    r = Path(root)
    if not r.is_dir():
        raise FacerecError(f"{r}: not a folder (expected <person>/<photo> sub-folders)")
    dirs = sorted(d for d in r.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    if not dirs:
        raise FacerecError(f"{r}: no <person> sub-folders found")
    return dirs


def embed_folder(analyzer: FaceAnalyzer, root: str | os.PathLike, progress: bool = False,
                 desc: str = "embedding", pad_retry: float = 0.0) -> FolderEmbeddings:
    """Embed the largest face of every photo under ``root/<person>/``.

    Args:
        pad_retry: as ``gallery.pad_retry``: when no face is found, retry once with a
            black border of this fraction of the long side (as enrollment does).
    """
    items = [(p, d.name) for d in person_folders(root) for p in list_images(d)]
    paths, names, vecs, quals = [], [], [], []
    skipped: dict[Path, str] = {}
    for path, name in tqdm(items, desc=desc, unit="img", file=sys.stderr, disable=not progress, leave=False):
        try:
            img = read_image(path)
        except ImageReadError as e:
            log.warning("%s; skipped", e)
            skipped[path] = str(e)
            continue
        det = detect_faces(analyzer.detector, img, pad_retry).largest()
        if len(det) == 0:
            log.warning("no face found in %s; skipped", path)
            skipped[path] = "no face found"
            continue
        emb = analyzer.embed_faces(align(img, det.landmarks))
        paths.append(path)
        names.append(name)
        vecs.append(emb.vectors[0])
        quals.append(emb.norm[0])
    dim = analyzer.embedder.dim
    return FolderEmbeddings(
        paths, names,
        np.asarray(vecs, np.float32).reshape(-1, dim),
        np.asarray(quals, np.float32).reshape(-1),
        skipped,
    )


def score_people(probes: np.ndarray, vectors: np.ndarray, names: list[str], quality: np.ndarray | None = None,
                 template: str = "mean") -> tuple[list[str], np.ndarray]:
    """Similarity of each probe to each person, exactly as the gallery search computes it.

    Args:
        probes: ``(m, d)`` unit vectors.
        vectors, names, quality: the gallery's samples.
        template: ``mean`` / ``quality_mean`` (cosine to the person's template) or ``max``
            (best cosine over the person's samples), as ``gallery.template``.

    Returns:
        ``(people, scores (m, people))``, people sorted by name.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")
    index = GalleryIndex(list(names), vectors, quality, template, index="exact")  # type: ignore[arg-type]
    return list(index.people), np.asarray(index.similarities(probes), np.float64)


@dataclass
class IdentifyResult:
    """Scores of probe photos against gallery people, plus counts."""

    people: list[str]
    scores: np.ndarray
    mate: np.ndarray
    probe_paths: list[Path]
    probe_names: list[str]
    gallery_photos: int
    skipped: dict[Path, str]
    seconds: float

    def report(self) -> IdentificationReport:
        return identification_report(self.scores, self.mate)


def identify_folders(analyzer: FaceAnalyzer, gallery: str | os.PathLike, probes: str | os.PathLike,
                     template: str = "mean", progress: bool = False, pad_retry: float = 0.0) -> IdentifyResult:
    """Embed both folders and score every probe photo against every gallery person.

    Raises:
        FacerecError: a folder is missing or yields no usable photo.
    """
    t0 = time.perf_counter()
    gal = embed_folder(analyzer, gallery, progress, "gallery", pad_retry)
    if len(gal) == 0:
        raise FacerecError(f"{gallery}: no usable gallery photo (no face found in any)")
    prb = embed_folder(analyzer, probes, progress, "probes", pad_retry)
    if len(prb) == 0:
        raise FacerecError(f"{probes}: no usable probe photo (no face found in any)")
    people, scores = score_people(prb.vectors, gal.vectors, gal.names, gal.quality, template)
    col = {p: i for i, p in enumerate(people)}
    mate = np.array([col.get(n, -1) for n in prb.names], np.int64)
    return IdentifyResult(people, scores, mate, prb.paths, prb.names, len(gal),
                          {**gal.skipped, **prb.skipped}, time.perf_counter() - t0)


def summary(result: IdentifyResult) -> dict:
    """The flat dictionary ``facerec eval identify --json`` prints."""
    rep = result.report()
    out: dict = {
        "top1": rep.top1,
        "top5": rep.top5,
    }
    for p in rep.operating_points:
        tag = f"{p.target_fpir:g}"
        out[f"fnir_at_fpir_{tag}"] = p.fnir
        out[f"threshold_at_fpir_{tag}"] = p.threshold
    out.update({
        "probes": rep.probes,
        "mated": rep.mated,
        "nonmated": rep.nonmated,
        "identities": rep.identities,
        "gallery_photos": result.gallery_photos,
        "skipped": len(result.skipped),
        "seconds": round(result.seconds, 2),
    })
    return out

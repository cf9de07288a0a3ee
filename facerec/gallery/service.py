"""The gallery as the command line, the web app and the live daemon use it.

:class:`GalleryService` ties the store, the search index and the models together:
enrollment with quality checks and warnings, identification, bringing embeddings in step
with the samples (``facerec embed``), syncing crops written by ``facerec align`` and the
seed's feature-list format. :func:`align_dataset` is ``align_data.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Literal

import cv2
import numpy as np
from tqdm import tqdm

from facerec.align import align
from facerec.config import Config
from facerec.errors import GalleryError, ImageReadError
from facerec.gallery.check import CheckReport, CheckRules, Profile, Verdict, check_gallery, judge_new
from facerec.gallery.quality import DEFAULT_MIN_SHARPNESS, blur_measure, face_size
from facerec.gallery.search import GalleryIndex
from facerec.gallery.backend import GalleryBackend, open_backend
from facerec.gallery.store import CROPS_DIR, GalleryStore, SampleInfo, validate_name, write_atomic
from facerec.imageio import IMAGE_SUFFIXES, decode_image, list_images, read_image
from facerec.types import ALIGNED_SIZE, AlignedFaces, Detections, EmbedderKey, Embeddings

if TYPE_CHECKING:
    from face_embedding import Embedder
    from facerec.analyze import FaceAnalyzer
    from facerec.detect import Detector

log = logging.getLogger(__name__)

#: Default floor of the MagFace feature norm when the embedder declares none
#: (MagFace trains norms into [10, 110]; unrecognisable faces end near the bottom).
DEFAULT_MIN_NORM = 15.0
MANIFEST_NAME = ".align_manifest.json"
LABEL_MAP_NAME = "label_map.json"


# ---------------------------------------------------------------------------- reports


@dataclass
class EnrollResult:
    """The outcome of enrolling one photo.

    Attributes:
        name: the person (canonical form).
        source: the photo's path, when known.
        status: ``added``, ``skipped`` (nothing wrong, nothing to do: already enrolled,
            several faces with ``multiple_faces: skip``) or ``failed`` (no usable face).
        reason: why it was skipped or failed, naming the file and the measured value.
        sample: the new sample when added.
        quality: the measured quality (MagFace norm or sharpness), when a face was found.
        warnings: near-duplicates, a better match with another person, several faces.
        check: the reason ``enroll check`` gives this photo (``outlier``, ``closer_to_other``,
            ``not_a_face``; see :mod:`facerec.gallery.check`), ``None`` when it passes.
    """

    name: str
    source: str | None
    status: Literal["added", "skipped", "failed"]
    reason: str = ""
    sample: SampleInfo | None = None
    quality: float | None = None
    warnings: list[str] = field(default_factory=list)
    check: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "added"


@dataclass
class BatchReport:
    """What a batch job did, item by item.

    Attributes:
        done: items processed (crops written, samples added or embedded).
        unchanged: items already up to date (incremental runs).
        skipped: ``(item, reason)`` left out on purpose (no face, too small, hidden...).
        failed: ``(item, reason)`` that could not be processed (unreadable...).
        removed: items that disappeared since the last run (reported; see ``--prune``).
        warnings: messages that did not stop an item.
        seconds: wall time of the job.
    """

    done: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.done) + len(self.unchanged) + len(self.skipped) + len(self.failed)

    def merge(self, other: BatchReport) -> BatchReport:
        for f in ("done", "unchanged", "skipped", "failed", "removed", "warnings"):
            getattr(self, f).extend(getattr(other, f))
        self.seconds += other.seconds
        return self

    def summary(self, what: str = "items", details: bool = False) -> str:
        """Counts on one line, then reasons grouped (or every item with ``details``)."""
        head = (f"{what}: {len(self.done)} done, {len(self.unchanged)} unchanged, "
                f"{len(self.skipped)} skipped, {len(self.failed)} failed")
        if self.removed:
            head += f", {len(self.removed)} removed"
        lines = [head + f" ({self.seconds:.1f} s)"]
        for label, items in (("skipped", self.skipped), ("failed", self.failed)):
            if not items:
                continue
            if details:
                lines += [f"  {label}: {item}: {reason}" for item, reason in items]
            else:
                groups: dict[str, int] = {}
                for _, reason in items:
                    groups[_reason_kind(reason)] = groups.get(_reason_kind(reason), 0) + 1
                lines += [f"  {label} {n}: {kind}" for kind, n in sorted(groups.items(), key=lambda kv: -kv[1])]
        if self.removed:
            shown = self.removed if details else self.removed[:5]
            lines += [f"  gone: {r}" for r in shown]
            if len(shown) < len(self.removed):
                lines.append(f"  ... and {len(self.removed) - len(shown)} more (--details lists all)")
        if details:
            lines += [f"  done: {d}" for d in self.done]
        lines += [f"  warning: {w}" for w in (self.warnings if details else self.warnings[:20])]
        if not details and len(self.warnings) > 20:
            lines.append(f"  ... and {len(self.warnings) - 20} more warnings (--details lists all)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "done": self.done, "unchanged": self.unchanged,
            "skipped": [{"item": i, "reason": r} for i, r in self.skipped],
            "failed": [{"item": i, "reason": r} for i, r in self.failed],
            "removed": self.removed, "warnings": self.warnings, "seconds": round(self.seconds, 3),
        }


def _strip_name(message: str, name: str) -> str:
    """``"photo.jpg: not a readable image"`` -> ``"not a readable image"`` (the item is listed anyway)."""
    return message[len(name) + 2 :] if message.startswith(f"{name}: ") else message


def _reason_kind(reason: str) -> str:
    """The reason without its measured numbers, for grouping (``face too small``)."""
    return reason.split(":")[0].split("(")[0].strip()


def _progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", enabled: bool = True,
              unit: str = "it") -> tqdm:
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                disable=not (enabled and sys.stderr.isatty()), dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------------------- detection helpers


def detect_faces(detector: Detector, image: np.ndarray, pad: float = 0.0) -> Detections:
    """Detect faces; when none is found and ``pad > 0``, retry once on a padded copy.

    Tightly cropped faces (a face filling the whole photo) are often missed because the
    detector never saw a face without context; a black border of ``pad`` times the long
    side restores it. Boxes and landmarks are returned in the original image's pixels
    (boxes clipped to it).
    """
    det = detector(image)
    if len(det) or pad <= 0:
        return det
    h, w = image.shape[:2]
    b = int(round(pad * max(h, w)))
    padded = cv2.copyMakeBorder(image, b, b, b, b, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    det = detector(padded)
    if not len(det):
        return det
    xyxy = det.xyxy - b
    xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, w)
    xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, h)
    keep = (xyxy[:, 2] - xyxy[:, 0] > 1) & (xyxy[:, 3] - xyxy[:, 1] > 1)
    return Detections(xyxy[keep], det.score[keep], (det.landmarks - b)[keep])


def pick_face(det: Detections, multiple: str, name: str, min_size: int) -> tuple[Detections | None, str, list[str]]:
    """Choose the one face of an enrollment/alignment photo.

    Returns:
        ``(one face or None, reason when None, warnings)``.
    """
    warnings: list[str] = []
    if len(det) == 0:
        return None, "no face found", warnings
    if len(det) > 1:
        if multiple == "skip":
            return None, f"{len(det)} faces (gallery.multiple_faces is skip)", warnings
        warnings.append(f"{name}: {len(det)} faces, took the largest")
        det = det.largest()
    size = face_size(det.xyxy[0])
    if size < min_size:
        return None, f"face too small: {size:.0f} px < gallery.min_face_size {min_size} px", warnings
    return det, "", warnings


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def faces_of(detector: Detector, embed: Callable[[AlignedFaces], Embeddings], image: np.ndarray,
             pad: float = 0.0) -> tuple[Detections, Embeddings | None]:
    """Detect, align and embed every face of one BGR image (``None``: no face); the
    first half of :meth:`GalleryService.identify_image`, which a cluster worker runs."""
    det = detect_faces(detector, image, pad)
    if not len(det):
        return det, None
    return det, embed(align(image, det.landmarks))


# ---------------------------------------------------------------------------- the service


class GalleryService:
    """Enrollment, identification and maintenance of one gallery.

    Args:
        cfg: the configuration (``gallery.*`` and the models).
        analyzer: detector + embedder to use; built from ``cfg`` on first use when ``None``
            (so listing or renaming people never loads a model).
        readonly: open the store read-only (identification of an existing gallery).
        store: an open backend to use instead of the configured one.
        interface: what the audit log names as the source of this instance's changes
            (``cli``, ``api``, ``daemon``; see :data:`facerec.gallery.sightings.INTERFACES`).

    Attributes:
        store: the :class:`~facerec.gallery.backend.GalleryBackend` (``gallery.backend``).
            Change the gallery through the service's own methods (:meth:`rename_person`,
            :meth:`merge_people`, ...), not the store's: only they write the audit log.
    """

    def __init__(self, cfg: Config, analyzer: FaceAnalyzer | None = None, *, readonly: bool = False,
                 store: GalleryBackend | None = None, interface: str = "cli") -> None:
        from facerec.gallery.sightings import INTERFACES

        if interface not in INTERFACES:
            raise ValueError(f"unknown interface {interface!r}: one of {', '.join(INTERFACES)}")
        self.interface = interface
        self.cfg = cfg
        self.data_dir = Path(cfg.gallery.data_dir).expanduser().absolute()
        self.store: GalleryBackend = store if store is not None else open_backend(cfg.gallery, readonly=readonly)
        self._analyzer = analyzer
        self._detector: Detector | None = None
        self._embedder: Embedder | None = None
        self._index: GalleryIndex | None = None
        self._index_state: tuple | None = None
        self._vectors: tuple | None = None
        self._vectors_state: tuple | None = None
        self._profile: tuple[Any, Profile] | None = None
        self._cache_lock = threading.RLock()

    def close(self) -> None:
        self.store.close()

    # -------------------------------------------------------------- audited changes

    def audit(self, action: str, subject: str, **detail: Any) -> None:
        """Append one gallery change to the audit log, naming :attr:`interface`.

        Every mutating method of the service calls this once, so each interface (CLI,
        HTTP API, daemon) is logged by the same code. The change is already done when
        this runs: a log that cannot be written is a warning, not a failed change.

        Args:
            action: what happened, ``<thing>.<verb>`` (``person.rename``, ``samples.add``).
            subject: the person (or sample) it happened to.
            **detail: counts and ids, stored as JSON.
        """
        from facerec.gallery.sightings import open_sightings

        try:
            with open_sightings(self.cfg) as log_store:
                log_store.audit(self.interface, action, subject, **detail)
        except Exception as e:  # noqa: BLE001 - see the docstring
            log.warning("audit log entry %s %s not written: %s", action, subject, e)

    def _negative_store(self):
        """The sightings store when it exists (negatives to keep in step), else ``None``."""
        from facerec.gallery.sightings import open_sightings

        g = self.cfg.gallery
        if g.backend != "postgres" and not (Path(g.data_dir) / "unknowns.db").exists():
            return None
        return open_sightings(self.cfg)

    def rename_person(self, old: str, new: str) -> None:
        """Rename a person; their negative samples ("not X") follow the new name."""
        self.store.rename_person(old, new)
        old, new = validate_name(old), validate_name(new)
        negatives = 0
        store = self._negative_store()
        if store is not None:
            with store:
                negatives = store.rename_negatives(old, new)
        self.audit("person.rename", new, previous=old, negatives=negatives)

    def merge_people(self, src: str, dst: str) -> int:
        """Move every sample of ``src`` to ``dst`` (created if needed) and remove ``src``;
        ``src``'s negatives become ``dst``'s. Returns the samples moved."""
        src, dst = validate_name(src), validate_name(dst)
        n = len(self.store.samples(src))
        self.store.merge_people(src, dst)
        negatives = 0
        store = self._negative_store()
        if store is not None:
            with store:
                negatives = store.rename_negatives(src, dst)
        self.audit("person.merge", dst, merged=src, samples=n, negatives=negatives)
        return n

    def move_sample(self, sample_id: int, person: str) -> str:
        """Give one sample to ``person`` (created if needed); returns its previous person."""
        before = self.store.sample(sample_id).person
        self.store.move_sample(sample_id, person)
        self.audit("sample.move", validate_name(person), sample=int(sample_id), previous=before)
        return before

    def delete_sample(self, sample_id: int) -> str:
        """Remove one sample (its person stays); returns that person."""
        person = self.store.sample(sample_id).person
        self.store.delete_sample(sample_id)
        self.audit("sample.delete", person, sample=int(sample_id))
        return person

    def clear(self) -> tuple[int, int]:
        """Remove every person, sample and vector; returns ``(people, samples)`` removed."""
        people, samples = len(self.store.people()), self.store.count()
        self.store.clear()
        self.audit("gallery.clear", "*", people=people, samples=samples)
        return people, samples

    # -------------------------------------------------------------- archives (any backend)

    def export_archive(self, path: str | os.PathLike) -> None:
        """Write the gallery to a ``.zip``/``.tar``/``.tar.gz`` archive (see
        :meth:`GalleryStore.export_archive`); other backends go through a temporary SQLite copy."""
        if isinstance(self.store, GalleryStore):
            self.store.export_archive(path)
            return
        import tempfile

        with tempfile.TemporaryDirectory(prefix="facerec-export-") as tmp, GalleryStore(tmp) as snap:
            people, samples = self.store.dump()
            snap.add_dumped(people, samples)
            snap.export_archive(path)

    def import_archive(self, path: str | os.PathLike) -> int:
        """Merge an archive into the gallery; returns the samples added (see
        :meth:`GalleryStore.import_archive` for the rules)."""
        n = self._import_archive(path)
        if n:  # an archive whose samples are all here already changed nothing
            self.audit("gallery.import", Path(path).name, samples=n)
        return n

    def _import_archive(self, path: str | os.PathLike) -> int:
        if isinstance(self.store, GalleryStore):
            return self.store.import_archive(path)
        import tempfile

        with tempfile.TemporaryDirectory(prefix="facerec-import-") as tmp, GalleryStore(tmp) as snap:
            snap.import_archive(path)
            people, samples = snap.dump()
        conflicts, todo = [], []
        for d in samples:
            here = self.store.find_sha256(d.sha256)
            if any(h.person != d.person for h in here):
                conflicts.append(f"{d.stem} ({d.person} in the archive, {', '.join(sorted({h.person for h in here}))} here)")
            elif not here:
                todo.append(d)
        if conflicts:
            raise GalleryError(f"{path}: {len(conflicts)} sample(s) are enrolled under another person here; "
                               "nothing imported:\n  " + "\n  ".join(conflicts[:20]))
        return self.store.add_dumped(people, todo)

    def __enter__(self) -> GalleryService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- models

    @property
    def analyzer(self) -> FaceAnalyzer:
        """Detector + embedder, built from the config on first use (sharing models already built)."""
        if self._analyzer is None:
            from facerec.analyze import FaceAnalyzer
            from facerec.models import threshold_for

            emb = self.embedder
            self._analyzer = FaceAnalyzer(self.detector, emb, self.cfg.recognition.flip_tta, threshold_for(self.cfg, emb))
        return self._analyzer

    @property
    def detector(self) -> Detector:
        """The analyzer's detector, or the configured one alone (alignment needs no embedder)."""
        if self._analyzer is not None:
            return self._analyzer.detector
        if self._detector is None:
            from facerec.models import build_detector

            name = self.cfg.models.detector
            self._detector = build_detector(self.cfg, None if name == "auto" else name)
        return self._detector

    @property
    def embedder(self) -> Embedder:
        """The analyzer's embedder, or the configured one alone (embedding crops needs no detector)."""
        if self._analyzer is not None:
            return self._analyzer.embedder
        if self._embedder is None:
            from facerec.models import build_embedder

            name = self.cfg.models.embedder
            self._embedder = build_embedder(self.cfg, None if name == "auto" else name)
        return self._embedder

    def embed_faces(self, faces) -> Embeddings:
        """Embed aligned crops with the configured flip setting."""
        if self._analyzer is not None:
            return self._analyzer.embed_faces(faces)
        return self.embedder.embed(faces, flip=self.cfg.recognition.flip_tta)

    @property
    def key(self) -> EmbedderKey:
        return self.embedder.key

    @property
    def threshold(self) -> float:
        """``recognition.threshold``, or the embedder's default when unset."""
        t = self.cfg.recognition.threshold
        if t is not None:
            return float(t)
        return float(self._analyzer.threshold if self._analyzer is not None else self.embedder.default_threshold)

    @property
    def quality_floor(self) -> tuple[float, str]:
        """The enrollment quality floor and what it measures."""
        emb = self.embedder
        if emb.quality_is_norm:
            default, what = getattr(emb, "default_min_quality", DEFAULT_MIN_NORM), "feature norm"
        else:
            default, what = DEFAULT_MIN_SHARPNESS, "sharpness (variance of the Laplacian)"
        q = self.cfg.gallery.min_quality
        return float(default if q is None else q), what

    def detect(self, image: np.ndarray) -> Detections:
        return detect_faces(self.detector, image, self.cfg.gallery.pad_retry)

    # -------------------------------------------------------------- search

    def index(self) -> GalleryIndex:
        """The search index for the current embedder, rebuilt when the gallery changes."""
        g = self.cfg.gallery
        with self._cache_lock:
            negatives = self._negatives()
            state = (self.store.version(), self.key, g.template, g.index, g.index_min_size, negatives[2])
            if self._index is None or self._index_state != state:
                self._index = GalleryIndex.from_store(self.store, self.key, g.template, g.index, g.index_min_size)
                if negatives[0]:
                    self._index.set_negatives(negatives[0], negatives[1])
                self._index_state = state
            return self._index

    def _negatives(self) -> tuple[list[str], np.ndarray, int]:
        """Negative samples ("not X") of the current embedder, and a change counter."""
        from facerec.gallery.sightings import negatives_of

        return negatives_of(self.cfg, str(self.key))

    def _sample_vectors(self) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        with self._cache_lock:
            state = (self.store.version(), self.key)
            if self._vectors is None or self._vectors_state != state:
                self._vectors = self.store.vectors(self.key)
                self._vectors_state = state
            return self._vectors

    def search(self, emb: Embeddings):
        return self.index().search(emb, self.threshold, self.cfg.recognition.top_k)

    def identify_image(self, image: np.ndarray) -> list[dict]:
        """Name every face of one BGR image.

        Returns:
            One dict per face: ``box`` ``[x1, y1, x2, y2]`` (pixels), detector ``score``,
            ``name`` (``None`` = unknown), ``similarity`` of the best candidate and ``top``
            ``[[name, similarity], ...]`` best first regardless of the threshold.
        """
        det, emb = faces_of(self.detector, self.embed_faces, image, self.cfg.gallery.pad_retry)
        return self.describe_faces(det, emb)

    def describe_faces(self, det: Detections, emb: Embeddings | None) -> list[dict]:
        """The faces of one image matched against the gallery, as :meth:`identify_image`
        returns them (``det`` and ``emb`` may come from another process or host)."""
        if not len(det) or emb is None:
            return []
        matches = self.search(emb)
        return [
            {
                "box": [round(float(v), 1) for v in det.xyxy[i]],
                "score": round(float(det.score[i]), 4),
                "name": m.name,
                "similarity": round(float(m.similarity), 4),
                "top": [[n, round(float(s), 4)] for n, s in m.top],
            }
            for i, m in enumerate(matches)
        ]

    # -------------------------------------------------------------- enrollment

    def enroll_image(self, name: str, image: np.ndarray, *, source_path: str | None = None,
                     source_sha256: str | None = None, refuse_conflicts: bool = False,
                     audit: bool = True) -> EnrollResult:
        """Enroll the face of one photo as a sample of ``name`` (created if needed).

        One face per photo: several follow ``gallery.multiple_faces`` (largest or skip).
        Faces under ``gallery.min_face_size`` or the quality floor are refused with the
        measured value. Near-duplicates of existing samples are reported as warnings.
        A conflict with another person (the same photo already enrolled for them, a face
        that matches them better than ``name``, or a new name for a face that matches an
        enrolled person) is a warning, or with ``refuse_conflicts`` a ``failed`` result
        (nothing added): a face under two names makes the live loop name people wrongly.
        An added sample is one audit entry (``samples.add``) unless ``audit`` is false (a
        caller enrolling a batch writes one entry for the whole batch).

        Raises:
            GalleryError: ``name`` is not a valid name.
        """
        name = validate_name(name)
        label = source_path or "<image>"
        g = self.cfg.gallery
        if source_sha256 is None:
            source_sha256 = hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()
        warnings: list[str] = []
        for s in self.store.find_sha256(source_sha256):
            if s.person == name:
                return EnrollResult(name, source_path, "skipped", f"{label}: already enrolled as sample {s.id}")
            conflict = f"{label}: the same photo is already enrolled for {s.person!r} (sample {s.id})"
            if refuse_conflicts:
                return EnrollResult(name, source_path, "failed", f"{conflict}; not added (--force adds it anyway)")
            warnings.append(conflict)
        det, reason, w = pick_face(self.detect(image), g.multiple_faces, label, g.min_face_size)
        warnings += w
        if det is None:
            status: Literal["skipped", "failed"] = "skipped" if "multiple_faces" in reason else "failed"
            return EnrollResult(name, source_path, status, f"{label}: {reason}", warnings=warnings)
        faces = align(image, det.landmarks)
        emb = self.embed_faces(faces)
        floor, what = self.quality_floor
        quality = float(emb.norm[0]) if self.embedder.quality_is_norm else blur_measure(faces.images[0])
        if quality < floor:
            return EnrollResult(
                name, source_path, "failed",
                f"{label}: quality too low: {what} {quality:.1f} < {floor:.1f} "
                "(use a sharper, larger, frontal photo, or lower gallery.min_quality)",
                quality=quality, warnings=warnings,
            )
        similar = self._similarity_warnings(name, emb, label)
        verdict = self.judge(name, emb.vectors[0], float(det.score[0]))
        if verdict.reason is not None:
            conflict = f"{label}: {verdict.reason}: {verdict.message};"
            if refuse_conflicts:
                return EnrollResult(name, source_path, "failed", f"{conflict} not added (--force adds it anyway)",
                                    quality=quality, warnings=warnings, check=verdict.reason)
            warnings.append(conflict.rstrip(";"))
        warnings += similar
        stem = Path(source_path).stem if source_path else None
        sample = self.store.add_sample(name, faces.images[0], source_path=source_path, source_sha256=source_sha256,
                                       quality=quality, embeddings=emb, stem=stem)
        if audit:
            self.audit("samples.add", name, added=1, samples=[sample.id])
        return EnrollResult(name, source_path, "added", sample=sample, quality=quality, warnings=warnings,
                            check=verdict.reason)

    def _similarity_warnings(self, name: str, emb: Embeddings, label: str) -> list[str]:
        out: list[str] = []
        ids, names, vec, _ = self._sample_vectors()
        if not len(ids):
            return out
        sims = vec @ emb.vectors[0]
        j = int(np.argmax(sims))
        if sims[j] >= self.cfg.gallery.duplicate_similarity:
            out.append(f"{label}: near-duplicate of sample {int(ids[j])} of {names[j]!r} (cosine {sims[j]:.3f})")
        return out

    @property
    def check_rules(self) -> CheckRules:
        """The thresholds of ``enroll check`` and of the enrollment gate for this gallery."""
        return CheckRules.from_threshold(self.threshold, self.cfg.gallery.duplicate_similarity, self.quality_floor[0])

    def profile(self) -> Profile:
        """Per-person sums of the current embedder's vectors (cached per gallery version)."""
        with self._cache_lock:
            ids, names, vec, _ = self._sample_vectors()
            if self._profile is None or self._profile[0] is not self._vectors:
                self._profile = (self._vectors, Profile(names, vec))
            return self._profile[1]

    def judge(self, name: str, vector: np.ndarray, detector_score: float | None = None) -> Verdict:
        """The ``enroll check`` rule for one photo about to become a sample of ``name``."""
        return judge_new(self.profile(), validate_name(name), vector, self.check_rules, detector_score=detector_score)

    def check(self) -> CheckReport:
        """``facerec enroll check``: every suspicious sample of the gallery (see
        :func:`facerec.gallery.check.check_gallery`)."""
        g = self.cfg.gallery

        def crop_score(sample_id: int) -> float:
            crop = decode_image(self.store.crop_png(sample_id), f"sample {sample_id}")
            det = self.detect(crop)
            return float(det.score.max()) if len(det) else 0.0

        return check_gallery(self.store, self.key, self.check_rules, index=g.index, index_min_size=g.index_min_size,
                             crop_score=crop_score)

    def person_similarity(self, a: str, b: str) -> float | None:
        """Cosine between the mean unit vectors of two people for the current embedder;
        ``None`` when either has no vector. Below the recognition threshold they are
        clearly different people (a merge would be a mistake)."""
        _, names, vec, _ = self._sample_vectors()
        owners = np.asarray(names, dtype=object)
        means = []
        for who in (a.strip(), b.strip()):
            rows = vec[owners == who] if len(vec) else vec
            if not len(rows):
                return None
            m = rows.mean(0)
            means.append(m / max(float(np.linalg.norm(m)), 1e-12))
        return float(np.dot(means[0], means[1]))

    def enroll_paths(self, name: str, paths: Iterable[str | os.PathLike], progress: bool = False,
                     refuse_conflicts: bool = False) -> BatchReport:
        """Enroll every photo in ``paths`` (folders are expanded, not recursively); see
        :meth:`enroll_image` for ``refuse_conflicts``. One audit entry for the batch when
        anything was added."""
        name = validate_name(name)
        t0 = time.perf_counter()
        report = BatchReport()
        added: list[int] = []
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
            r = self.enroll_image(name, image, source_path=str(f), source_sha256=hashlib.sha256(data).hexdigest(),
                                  refuse_conflicts=refuse_conflicts, audit=False)
            if r.sample is not None:
                added.append(r.sample.id)
            report.warnings += r.warnings
            reason = _strip_name(r.reason, str(f))
            if r.status == "added":
                report.done.append(str(f))
            elif r.status == "skipped":
                (report.unchanged.append(str(f)) if "already enrolled" in reason else report.skipped.append((str(f), reason)))
            else:
                report.failed.append((str(f), reason))
        report.seconds = time.perf_counter() - t0
        if added:
            self.audit("samples.add", name, added=len(added), samples=added, skipped=len(report.skipped),
                       failed=len(report.failed))
        return report

    # -------------------------------------------------------------- preprocessed/ and embeddings

    def _align_manifest(self) -> dict[str, dict]:
        """Crop (relative to ``preprocessed/``) -> source record from ``facerec align``'s manifest."""
        path = self.data_dir / CROPS_DIR / MANIFEST_NAME
        try:
            files = json.loads(path.read_text(encoding="utf-8")).get("files", {})
        except (OSError, ValueError, AttributeError):
            return {}
        return {e["output"]: e for e in files.values() if isinstance(e, dict) and e.get("output")}

    def embed(self, prune: bool = False, progress: bool = True, batch_size: int | None = None,
              run: EmbedRunner | None = None) -> tuple[BatchReport, BatchReport]:
        """``facerec embed``: :meth:`sync_preprocessed` then :meth:`embed_all` (``run``:
        where the vectors are computed), logged as one audit entry (``gallery.embed``) when
        either changed anything.

        Returns:
            ``(sync report, embed report)``.
        """
        sync = self.sync_preprocessed(prune=prune, progress=progress)
        report = self.embed_all(progress=progress, batch_size=batch_size, run=run)
        forgotten = len(sync.removed) if prune else 0
        if sync.done or forgotten or report.done:
            self.audit("gallery.embed", "*", samples_added=len(sync.done), samples_forgotten=forgotten,
                       vectors=len(report.done), embedder=str(self.key))
        return sync, report

    def sync_preprocessed(self, prune: bool = False, progress: bool = False) -> BatchReport:
        """Bring the store in step with the crops in ``data_dir/preprocessed/<Person>/``.

        New crop files become samples, files whose content changed get their embeddings
        dropped (to be recomputed), and samples whose file is gone are reported in
        ``removed`` (and forgotten with ``prune``). Files that are not 112x112 aligned
        crops, are unreadable, or fall under the enrollment sharpness floor (embedders
        without a quality norm) are skipped with the reason.
        """
        t0 = time.perf_counter()
        report = BatchReport()
        root = self.data_dir / CROPS_DIR
        known = self.store.crop_hashes()
        # crops have no feature norm until embedded: the sharpness floor applies where it is the measure
        floor = self.quality_floor[0] if root.is_dir() and not self.embedder.quality_is_norm else None
        sources = self._align_manifest()
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
                        self.store.update_sample_file(known[rel][0], crop_sha, quality, src.get("sha256"),
                                                      png=None if isinstance(self.store, GalleryStore) else f.read_bytes())
                    else:
                        new.append((person, f, crop_sha, src.get("sha256") or crop_sha, quality, src.get("source")))
                    report.done.append(rel)
        for i in range(0, len(new), 500):
            self.store.add_existing_crops(new[i : i + 500])
        gone = sorted(set(known) - seen)
        report.removed = gone
        if gone and prune:
            self.store.forget_samples([known[r][0] for r in gone])
        report.seconds = time.perf_counter() - t0
        return report

    def embed_all(self, progress: bool = True, batch_size: int | None = None,
                  run: EmbedRunner | None = None) -> BatchReport:
        """Embed every sample that has no vector for the current embedder yet.

        Batches of ``batch_size`` (default ``recognition.batch_size``) are committed one
        by one, so an interrupted run loses at most one batch and a rerun continues where
        it stopped. Other embedders' vectors are left alone.

        Args:
            run: computes the vectors of the crop batches, in any order (e.g. on a Ray
                cluster, :mod:`facerec.distributed`); default: here, batch by batch.
                Which samples need vectors and how results are written stay here.

        Raises:
            GalleryError: a batch came back embedded with another embedder (the weights
                on a worker differ from this host's); batches written before stay.
        """
        t0 = time.perf_counter()
        report = BatchReport()
        key = self.key
        todo = self.store.missing_embeddings(key)
        bs = batch_size or self.cfg.recognition.batch_size
        use_norm = self.embedder.quality_is_norm
        batches = (self._crop_batch(todo[i : i + bs]) for i in range(0, len(todo), bs))
        results = run(batches) if run is not None else (embed_crops(self.embed_faces, b) for b in batches)
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
                    self.store.put_embeddings(key, r.ids, r.embeddings, quality=r.embeddings.norm if use_norm else None)
                    report.done += [str(x) for x in r.ids]
                bar.update(r.count)
        finally:
            bar.close()
            close = getattr(results, "close", None)
            if close is not None:
                close()
        report.seconds = time.perf_counter() - t0
        return report

    def _crop_batch(self, samples: list[SampleInfo]) -> list[CropItem]:
        """The stored crops of ``samples`` as bytes (a crop that cannot be read carries its reason)."""
        items = []
        for s in samples:
            try:
                items.append(CropItem(s.id, s.crop_path, self.store.crop_png(s.id)))
            except GalleryError as e:
                items.append(CropItem(s.id, s.crop_path, None, _strip_name(str(e), s.crop_path)))
        return items

    # -------------------------------------------------------------- the seed's feature list

    def export_feat_list(self, path: str | os.PathLike) -> tuple[int, int]:
        """Write the current embedder's vectors in the seed's feature-list format.

        One ``<label index> <f1> ... <fd>`` line per sample with the raw feature (unit
        vector times its norm, so MagFace quality survives), persons numbered in name
        order and samples in crop-file order (the order ``embedding_feat.py`` uses), and
        ``label_map.json`` beside the file.

        Returns:
            ``(samples written, samples without a vector for this embedder)``.
        """
        from face_embedding.embedding_feat import write_feat_list, write_label_map

        out = Path(path)
        rows = [(n, c, v, m, len(v)) for n, c, v, m in self.store.raw_vectors(self.key)]
        missing = len(self.store.missing_embeddings(self.key))
        people = sorted({r[0] for r in rows})
        label = {p: i for i, p in enumerate(people)}
        rows.sort(key=lambda r: (label[r[0]], Path(r[1]).name))
        dim = rows[0][4] if rows else self.embedder.dim
        feats = np.stack([r[2] * r[3] for r in rows]) if rows else np.zeros((0, dim), np.float32)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_feat_list(out, [label[r[0]] for r in rows], feats)
        write_label_map(out.with_name(LABEL_MAP_NAME), people)
        return len(rows), missing

    def import_feat_list(self, path: str | os.PathLike) -> int:
        """Attach vectors from a seed feature list to the crops they were computed from.

        The seed's ``embedding_feat.py`` numbers the folders of ``preprocessed/`` in sorted
        order and embeds their images in sorted order; the lines are matched to the crops
        the same way (person by person, via ``label_map.json`` beside the file), after a
        sync of ``preprocessed/``. The vectors are stored for the current embedder.

        Returns:
            The number of samples that received a vector.

        Raises:
            GalleryError: unreadable list, no label map, a dimension that differs from the
                embedder's, or a person whose line count differs from their crop count.
        """
        from face_embedding.embedding_feat import read_feat_list, read_label_map

        src = Path(path)
        try:
            labels, feats = read_feat_list(src)
            label_map = read_label_map(src.with_name(LABEL_MAP_NAME))
        except (OSError, ValueError) as e:
            raise GalleryError(f"cannot import {src}: {e}") from None
        if len(feats) and feats.shape[1] != self.embedder.dim:
            raise GalleryError(f"{src} has {feats.shape[1]}-d features; {self.key.model} makes {self.embedder.dim}-d")
        self.sync_preprocessed()
        crops = self.store.crop_hashes()
        ids: list[int] = []
        rows: list[int] = []
        for lab in sorted(set(labels.tolist())):
            if lab not in label_map:
                raise GalleryError(f"{src}: label {lab} is not in {LABEL_MAP_NAME}")
            person = validate_name(label_map[lab])
            folder = self.data_dir / CROPS_DIR / person
            files = [f for f in list_images(folder) if not f.name.startswith(".")] if folder.is_dir() else []
            lines = np.flatnonzero(labels == lab)
            if len(files) != len(lines):
                raise GalleryError(
                    f"{src}: {person!r} has {len(lines)} lines but {len(files)} crops in {folder}; "
                    "the list was made from other crops (re-embed with facerec embed instead)"
                )
            for f, line in zip(files, lines):
                rel = f"{CROPS_DIR}/{person}/{f.name}"
                if rel in crops:
                    ids.append(crops[rel][0])
                    rows.append(int(line))
        if not ids:
            return 0
        emb = Embeddings.from_raw(feats[rows], self.key)
        use_norm = self.embedder.quality_is_norm
        self.store.put_embeddings(self.key, ids, emb, quality=emb.norm if use_norm else None)
        self.audit("gallery.embed", "*", vectors=len(ids), embedder=str(self.key), source=src.name)
        return len(ids)


# ---------------------------------------------------------------------------- align_data


def _load_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("files"), dict):
            return data
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable alignment manifest %s (%s); every photo is redone", path, e)
    return {"version": 1, "files": {}}


def _save_manifest(path: Path, manifest: dict) -> None:
    write_atomic(path, json.dumps(manifest, indent=1, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def align_dataset(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    detector: Detector,
    *,
    multiple_faces: str = "largest",
    min_face_size: int = 32,
    pad_retry: float = 0.5,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
) -> BatchReport:
    """Turn ``raw_dir/<Person>/*`` photos into ``out_dir/<Person>/<stem>.png`` aligned crops.

    One face per photo (several: the largest, or skip the photo with
    ``multiple_faces="skip"``; none or too small: skipped with the reason). Incremental:
    a manifest in ``out_dir`` records each photo's sha256 and the ``settings`` it was
    processed with, so an unchanged photo is not redone. Crops and the manifest are
    written atomically and only inside ``out_dir``; hidden folders and folder names that
    are not valid person names are refused.

    Args:
        detector: any detector; ``settings`` should name it and its thresholds so a
            change of detector redoes every photo.

    Returns:
        The report; ``done`` and ``unchanged`` hold ``Person/file`` names.
    """
    t0 = time.perf_counter()
    raw, out = Path(raw_dir), Path(out_dir)
    report = BatchReport()
    if not raw.is_dir():
        raise GalleryError(f"{raw} is not a folder of <Person>/<photo> images")
    out.mkdir(parents=True, exist_ok=True)
    out_root = out.resolve()
    manifest_path = out / MANIFEST_NAME
    manifest = _load_manifest(manifest_path)
    fingerprint = json.dumps(settings or {}, sort_keys=True)
    old = manifest["files"]
    files: dict[str, dict] = {}
    claimed = {e["output"]: k for k, e in old.items() if isinstance(e, dict) and e.get("output")}
    work: list[tuple[str, str, Path]] = []
    for d in sorted(raw.iterdir()):
        if d.name.startswith("."):
            report.skipped.append((d.name, "hidden folder refused"))
            continue
        if not d.is_dir():
            report.skipped.append((d.name, "not in a person folder"))
            continue
        try:
            person = validate_name(d.name)
        except GalleryError as e:
            report.skipped.append((d.name, f"folder name refused: {e}"))
            continue
        for f in sorted(d.iterdir()):
            if f.name.startswith("."):
                continue
            if f.is_dir():
                report.skipped.append((f"{d.name}/{f.name}", "sub-folder ignored (one level of person folders)"))
            elif f.suffix.lower() not in IMAGE_SUFFIXES:
                report.skipped.append((f"{d.name}/{f.name}", f"not an image (suffix {f.suffix or 'none'})"))
            else:
                work.append((person, f"{d.name}/{f.name}", f))
    try:
        for n, (person, key, f) in enumerate(_progress(work, desc="align", enabled=progress, unit="photo")):
            try:
                data = f.read_bytes()
            except OSError as e:
                report.failed.append((key, f"cannot be read ({e.strerror or e})"))
                continue
            sha = hashlib.sha256(data).hexdigest()
            prev = old.get(key)
            if (isinstance(prev, dict) and prev.get("sha256") == sha and prev.get("settings") == fingerprint
                    and (not prev.get("output") or (out / prev["output"]).is_file())):
                files[key] = prev
                if prev.get("output"):
                    report.unchanged.append(key)
                else:  # the same photo failed or was skipped last time: not retried, still reported
                    why = (key, f"{prev.get('reason', 'no crop')} (unchanged photo, not retried)")
                    (report.failed if prev.get("status") == "failed" else report.skipped).append(why)
                continue
            entry: dict[str, Any] = {"sha256": sha, "settings": fingerprint, "source": str(f), "output": None}
            try:
                image = decode_image(data, key)
            except ImageReadError as e:
                entry.update(status="failed", reason=_strip_name(str(e), key))
                report.failed.append((key, entry["reason"]))
                files[key] = entry
                continue
            det, reason, warns = pick_face(detect_faces(detector, image, pad_retry), multiple_faces, key, min_face_size)
            report.warnings += warns
            if det is None:
                entry.update(status="skipped", reason=reason)
                report.skipped.append((key, reason))
                files[key] = entry
                continue
            crop = align(image, det.landmarks).images[0]
            rel = f"{person}/{f.stem}.png"
            if claimed.get(rel, key) != key:
                rel = f"{person}/{f.name}.png"
            target = (out / rel).resolve()
            if not target.is_relative_to(out_root):
                report.skipped.append((key, "output path would leave the output folder"))
                continue
            ok, buf = cv2.imencode(".png", crop)
            if not ok:
                report.failed.append((key, "could not encode the crop as PNG"))
                continue
            write_atomic(target, buf.tobytes())
            claimed[rel] = key
            entry.update(status="done", output=rel, score=round(float(det.score[0]), 4),
                         face_px=round(face_size(det.xyxy[0]), 1))
            files[key] = entry
            report.done.append(key)
            if n % 50 == 49:
                _save_manifest(manifest_path, {"version": 1, "files": {**old, **files}})
    finally:
        gone = sorted(set(old) - {k for _, k, _ in work})
        report.removed = gone
        _save_manifest(manifest_path, {"version": 1, "files": {**{k: v for k, v in old.items() if k not in gone}, **files}})
    report.seconds = time.perf_counter() - t0
    return report

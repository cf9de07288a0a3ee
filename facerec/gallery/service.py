"""The gallery as the command line, the web app and the live daemon use it.

:class:`GalleryService` is a thin facade: it owns the backend, the models (built on first
use) and the search-index cache, writes the audit log, and hands each job to the module
that holds its idea:

* :mod:`facerec.gallery.enroll`: enrolling photos (quality floors, the ``enroll check`` gate);
* :mod:`facerec.gallery.faces`: finding the faces of one still image (the padding retry);
* :mod:`facerec.gallery.sync`: ``preprocessed/`` crops to samples, samples to vectors
  (``facerec embed``, here or on a cluster);
* :mod:`facerec.gallery.feat_list`: the seed's feature-list format;
* :mod:`facerec.gallery.archive_io`: archives for any backend;
* :mod:`facerec.gallery.align_data`: :func:`align_dataset` (``align_data.py``);
* :mod:`facerec.gallery.reports`: :class:`EnrollResult` (with its reason code) and
  :class:`BatchReport`.

The names those modules export are importable from here too, as before the split.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from facerec.config import Config
from facerec.gallery import archive_io, enroll, feat_list, sync
from facerec.gallery.align_data import MANIFEST_NAME, align_dataset
from facerec.gallery.backend import GalleryBackend, open_backend
from facerec.gallery.records import INTERFACES, AuditNote
from facerec.gallery.check import CheckReport, CheckRules, Profile, Verdict, check_gallery, judge_new
from facerec.gallery.faces import detect_faces, faces_of, pick_face
from facerec.gallery.feat_list import LABEL_MAP_NAME
from facerec.gallery.quality import DEFAULT_MIN_SHARPNESS
from facerec.gallery.reports import BatchReport, EnrollResult, ReasonCode, _progress, _sha256_file, _strip_name
from facerec.gallery.search import GalleryIndex
from facerec.gallery.store import validate_name
from facerec.gallery.sync import CropItem, EmbeddedBatch, EmbedRunner, embed_crops
from facerec.imageio import decode_image
from facerec.types import Detections, EmbedderKey, Embeddings

if TYPE_CHECKING:
    from face_embedding import Embedder
    from facerec.analyze import FaceAnalyzer
    from facerec.detect import Detector

__all__ = [
    "DEFAULT_MIN_NORM", "LABEL_MAP_NAME", "MANIFEST_NAME", "BatchReport", "CropItem", "EmbedRunner", "EmbeddedBatch",
    "EnrollResult", "GalleryService", "ReasonCode", "align_dataset", "detect_faces", "embed_crops", "faces_of",
    "pick_face", "_progress", "_sha256_file", "_strip_name",
]

log = logging.getLogger(__name__)

#: Default floor of the MagFace feature norm when the embedder declares none
#: (MagFace trains norms into [10, 110]; unrecognisable faces end near the bottom).
DEFAULT_MIN_NORM = 15.0


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
            (``cli``, ``api``, ``daemon``; see :data:`facerec.gallery.records.INTERFACES`).

    Attributes:
        store: the :class:`~facerec.gallery.backend.GalleryBackend` (``gallery.backend``).
            Change the gallery through the service's own methods (:meth:`rename_person`,
            :meth:`merge_people`, ...), not the store's: only they write the audit log.
    """

    def __init__(self, cfg: Config, analyzer: FaceAnalyzer | None = None, *, readonly: bool = False,
                 store: GalleryBackend | None = None, interface: str = "cli") -> None:
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
        self._neg: tuple[list[str], np.ndarray, int] | None = None
        self._neg_key = ""
        #: how many times the negatives' vectors were read (not just their version)
        self.negative_loads = 0

    def close(self) -> None:
        self.store.close()

    # -------------------------------------------------------------- audited changes

    def note(self, action: str, subject: str, **detail: Any) -> AuditNote:
        """The audit entry of a change this service makes, naming :attr:`interface`.

        Every mutating method passes one to the backend, which writes it in the same
        transaction as the change (a change and its entry are stored together or not at
        all; a log that cannot be written fails the change).

        Args:
            action: what happened, ``<thing>.<verb>`` (``person.rename``, ``samples.add``).
            subject: the person (or sample) it happened to.
            **detail: counts and ids, stored as JSON.
        """
        return AuditNote(self.interface, action, subject, detail)

    def audit(self, action: str, subject: str, **detail: Any) -> None:
        """Log the summary of a job made of many transactions (``facerec embed``) in its own."""
        self.store.audit(self.note(action, subject, **detail))

    def rename_person(self, old: str, new: str) -> None:
        """Rename a person; their negative samples ("not X") follow the new name."""
        old, new = validate_name(old), validate_name(new)
        self.store.rename_person(old, new, audit=self.note("person.rename", new, previous=old))

    def merge_people(self, src: str, dst: str) -> int:
        """Move every sample of ``src`` to ``dst`` (created if needed) and remove ``src``;
        ``src``'s negatives become ``dst``'s. Returns the samples moved."""
        src, dst = validate_name(src), validate_name(dst)
        n = len(self.store.samples(src))
        self.store.merge_people(src, dst, audit=self.note("person.merge", dst, merged=src))
        return n

    def move_sample(self, sample_id: int, person: str) -> str:
        """Give one sample to ``person`` (created if needed); returns its previous person."""
        before = self.store.sample(sample_id).person
        self.store.move_sample(sample_id, person, audit=self.note("sample.move", validate_name(person),
                                                                   sample=int(sample_id), previous=before))
        return before

    def delete_sample(self, sample_id: int) -> str:
        """Remove one sample (its person stays); returns that person."""
        person = self.store.sample(sample_id).person
        self.store.delete_sample(sample_id, audit=self.note("sample.delete", person, sample=int(sample_id)))
        return person

    def clear(self) -> tuple[int, int]:
        """Remove every person, sample and vector; returns ``(people, samples)`` removed."""
        people, samples = len(self.store.people()), self.store.count()
        self.store.clear(audit=self.note("gallery.clear", "*"))
        return people, samples

    # -------------------------------------------------------------- archives (any backend)

    def export_archive(self, path: str | os.PathLike) -> None:
        """Write the gallery to a ``.zip``/``.tar``/``.tar.gz`` archive (:mod:`facerec.gallery.archive_io`)."""
        archive_io.export_archive(self.store, path)

    def import_archive(self, path: str | os.PathLike) -> int:
        """Merge an archive into the gallery; returns the samples added (see
        :func:`facerec.gallery.archive_io.import_archive` for the rules)."""
        return archive_io.import_archive(self.store, path, self.note("gallery.import", Path(path).name))

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
            self._analyzer = FaceAnalyzer(self.detector, emb, self.cfg.recognition.flip_tta, threshold_for(self.cfg, emb),
                                          self.cfg.gallery.pad_retry)
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
        """Negative samples ("not X") of the current embedder and their version; read again
        only when the version changed (one cheap query per check)."""
        with self._cache_lock:
            version = self.store.negatives_version()
            key = str(self.key)
            if self._neg is None or self._neg[2] != version or self._neg_key != key:
                names, vec = self.store.negatives(key)
                self._neg, self._neg_key = (names, vec, version), key
                self.negative_loads += 1
            return self._neg

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
                     source_sha256: str | None = None, refuse_conflicts: bool = False) -> EnrollResult:
        """Enroll the face of one photo as a sample of ``name`` (created if needed).

        One face per photo: several follow ``gallery.multiple_faces`` (largest or skip).
        Faces under ``gallery.min_face_size`` or the quality floor are refused with the
        measured value. Near-duplicates of existing samples are reported as warnings.
        A conflict with another person (the same photo already enrolled for them, a face
        that matches them better than ``name``, or a new name for a face that matches an
        enrolled person) is a warning, or with ``refuse_conflicts`` a ``failed`` result
        (nothing added): a face under two names makes the live loop name people wrongly.
        An added sample is one audit entry (``samples.add``), written in the transaction that
        adds it.

        Raises:
            GalleryError: ``name`` is not a valid name.
        """
        return enroll.enroll_image(self, name, image, source_path=source_path, source_sha256=source_sha256,
                                   refuse_conflicts=refuse_conflicts)

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
        :meth:`enroll_image` for ``refuse_conflicts``. Each added sample is its own
        transaction with its own audit entry, so an interrupted batch keeps what it added."""
        return enroll.enroll_paths(self, name, paths, progress=progress, refuse_conflicts=refuse_conflicts)

    # -------------------------------------------------------------- preprocessed/ and embeddings

    def embed(self, prune: bool = False, progress: bool = True, batch_size: int | None = None,
              run: EmbedRunner | None = None) -> tuple[BatchReport, BatchReport]:
        """``facerec embed``: :meth:`sync_preprocessed` then :meth:`embed_all` (``run``:
        where the vectors are computed), logged as one audit entry (``gallery.embed``) when
        either changed anything.

        Returns:
            ``(sync report, embed report)``.
        """
        return sync.embed(self, prune=prune, progress=progress, batch_size=batch_size, run=run)

    def sync_preprocessed(self, prune: bool = False, progress: bool = False) -> BatchReport:
        """Bring the store in step with the crops in ``data_dir/preprocessed/<Person>/``.

        New crop files become samples, files whose content changed get their embeddings
        dropped (to be recomputed), and samples whose file is gone are reported in
        ``removed`` (and forgotten with ``prune``). Files that are not 112x112 aligned
        crops, are unreadable, or fall under the enrollment sharpness floor (embedders
        without a quality norm) are skipped with the reason.
        """
        return sync.sync_preprocessed(self, prune=prune, progress=progress)

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
        return sync.embed_all(self, progress=progress, batch_size=batch_size, run=run)

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
        return feat_list.export_feat_list(self, path)

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
        return feat_list.import_feat_list(self, path)

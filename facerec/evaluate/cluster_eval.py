"""``facerec eval cluster``: how well the unknown-face clustering finds people.

Every photo under ``ROOT/<person>/`` is one sighting (its largest face, as enrollment and
``eval identify`` take it); the sightings are grouped by :mod:`facerec.unknowns` with the
daemon's ``unknowns`` parameters, and the grouping is scored against the folders with
BCubed precision and recall (Amigo et al. 2009): for each face, the share of its cluster
that is the same person (precision) and the share of its person found in its cluster
(recall), averaged over faces. A face left as noise counts as a cluster of its own, which
is what the user sees: a face no candidate holds.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facerec.unknowns import NOISE, ClusterParams, cluster_density


@dataclass(frozen=True)
class BCubed:
    """BCubed scores of a clustering, each in [0, 1]."""

    precision: float
    recall: float

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def bcubed(labels: np.ndarray, truth: list[str] | np.ndarray) -> BCubed:
    """BCubed precision and recall of ``labels`` against ``truth``.

    Args:
        labels: ``(n,)`` cluster ids; :data:`~facerec.unknowns.NOISE` (-1) items are each
            a cluster of their own.
        truth: ``(n,)`` true identities.

    Returns:
        Precision and recall; both 1.0 for an empty input.
    """
    lab = np.asarray(labels, np.int64)
    n = len(lab)
    if n != len(truth):
        raise ValueError(f"{n} labels for {len(truth)} true identities")
    if n == 0:
        return BCubed(1.0, 1.0)
    # noise items get unique negative ids so each is alone
    lab = np.where(lab == NOISE, -2 - np.arange(n), lab)
    tru = [str(t) for t in truth]
    cluster_size = Counter(lab.tolist())
    person_size = Counter(tru)
    both = Counter(zip(lab.tolist(), tru))
    p = sum(both[(c, t)] / cluster_size[c] for c, t in zip(lab.tolist(), tru)) / n
    r = sum(both[(c, t)] / person_size[t] for c, t in zip(lab.tolist(), tru)) / n
    return BCubed(float(p), float(r))


@dataclass
class ClusterEval:
    """Result of clustering labelled folders.

    Attributes:
        params: the density parameters used.
        names: true person of each embedded photo.
        paths: the photos, one per row of ``labels``.
        labels: candidate id per photo, -1 = noise.
        skipped: photos without a usable face (or unreadable), with the reason.
        people_left_out: person folders below ``min_photos``.
        seconds: embedding plus clustering, s.
        cluster_seconds: clustering alone, s.
    """

    params: ClusterParams
    names: list[str]
    paths: list[Path]
    labels: np.ndarray
    skipped: dict[Path, str] = field(default_factory=dict)
    people_left_out: int = 0
    seconds: float = 0.0
    cluster_seconds: float = 0.0

    def summary(self) -> dict:
        score = bcubed(self.labels, self.names)
        clusters = sorted({int(v) for v in self.labels if v != NOISE})
        pure = 0
        for c in clusters:
            members = {self.names[i] for i in np.flatnonzero(self.labels == c)}
            pure += len(members) == 1
        return {
            "bcubed_precision": round(score.precision, 4),
            "bcubed_recall": round(score.recall, 4),
            "bcubed_f1": round(score.f1, 4),
            "clusters": len(clusters),
            "pure_clusters": pure,
            "people": len(set(self.names)),
            "faces": len(self.names),
            "noise": int(np.sum(self.labels == NOISE)),
            "skipped": len(self.skipped),
            "people_left_out": self.people_left_out,
            "min_faces": self.params.min_faces,
            "max_distance": self.params.max_distance,
            "seconds": round(self.seconds, 2),
            "cluster_seconds": round(self.cluster_seconds, 3),
        }


def select_people(root: str | os.PathLike, min_photos: int = 1, max_people: int | None = None) -> tuple[list[Path], int]:
    """Person folders of ``root`` with at least ``min_photos`` photos, the first ``max_people`` by name.

    Returns:
        The folders and how many were left out.
    """
    from facerec.evaluate.identify import person_folders
    from facerec.imageio import list_images

    dirs = person_folders(root)
    kept = [d for d in dirs if len(list_images(d)) >= min_photos]
    if max_people is not None:
        kept = kept[:max_people]
    return kept, len(dirs) - len(kept)


def evaluate_clustering(analyzer, root: str | os.PathLike, params: ClusterParams, min_photos: int = 1,
                        max_people: int | None = None, progress: bool = False, pad_retry: float = 0.0) -> ClusterEval:
    """Embed the largest face of every photo under ``root/<person>/`` and cluster them.

    Args:
        analyzer: a :class:`~facerec.analyze.FaceAnalyzer`.
        min_photos: leave out people with fewer photos (LFW: 2, so every person can form a group).
        max_people: keep only the first people by folder name (to cap the run time).
        pad_retry: as ``gallery.pad_retry``.
    """
    import tempfile

    from facerec.errors import FacerecError
    from facerec.evaluate.identify import embed_folder

    t0 = time.perf_counter()
    dirs, left_out = select_people(root, min_photos, max_people)
    if not dirs:
        raise FacerecError(f"{root}: no person folder with at least {min_photos} photos")
    with tempfile.TemporaryDirectory(prefix="facerec-cluster-") as tmp:
        # embed_folder walks one root; a folder of links to the chosen people is that root
        for d in dirs:
            os.symlink(d.resolve(), Path(tmp) / d.name)
        fe = embed_folder(analyzer, tmp, progress, "embedding", pad_retry)
    t1 = time.perf_counter()
    labels = cluster_density(fe.vectors, params)
    t2 = time.perf_counter()
    root_p = Path(root)
    paths = [root_p / p.parent.name / p.name for p in fe.paths]
    skipped = {root_p / p.parent.name / p.name: r for p, r in fe.skipped.items()}
    return ClusterEval(params, list(fe.names), paths, labels, skipped, left_out, t2 - t0, t2 - t1)

"""Grouping unlabelled faces by identity.

The faces form a graph with an edge wherever two vectors are at least ``threshold``
similar (cosine). Two ways to cut it into identities, both NumPy only:

* ``chinese_whispers`` (default; the method dlib's face clustering uses): every face
  repeatedly takes the label carrying the most edge weight among its neighbours. Unlike
  connected components, one stray edge between two people does not fuse them.
* ``components``: connected components (single linkage); simple, but chains merge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from facerec.align import align
from facerec.errors import ImageReadError
from facerec.imageio import read_image

if TYPE_CHECKING:
    from facerec.analyze import FaceAnalyzer

Method = Literal["chinese_whispers", "components"]


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Labels 0..k-1, the biggest cluster first (ties: first appearance)."""
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = sorted(range(len(uniq)), key=lambda i: (-counts[i], first[i]))
    mapping = {int(uniq[i]): new for new, i in enumerate(order)}
    return np.array([mapping[int(v)] for v in labels], np.int64)


def cluster_vectors(vectors: np.ndarray, threshold: float, method: Method = "chinese_whispers",
                    iterations: int = 50, seed: int = 0) -> np.ndarray:
    """Identity labels for unit vectors.

    Args:
        vectors: ``(n, d)`` unit rows.
        threshold: cosine similarity from which two faces are linked.
        method: ``chinese_whispers`` or ``components`` (see the module docstring).
        iterations: upper bound of Chinese-whispers sweeps (it usually settles in a few).
        seed: visiting order of Chinese whispers; fixed so results are reproducible.

    Returns:
        ``(n,)`` int64 labels ``0..k-1``, the largest group first.
    """
    vec = np.asarray(vectors, np.float32)
    n = len(vec)
    if n == 0:
        return np.zeros((0,), np.int64)
    sims = vec @ vec.T
    np.fill_diagonal(sims, -np.inf)
    adj = sims >= threshold
    if method == "components":
        parent = np.arange(n)

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = int(parent[i])
            return i

        for i, j in zip(*np.nonzero(np.triu(adj, 1))):
            ri, rj = find(int(i)), find(int(j))
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
        return _relabel_by_size(np.array([find(i) for i in range(n)]))
    if method != "chinese_whispers":
        raise ValueError(f"unknown clustering method {method!r}: choose chinese_whispers or components")
    weights = np.where(adj, sims, 0.0).astype(np.float64)
    neighbours = [np.flatnonzero(adj[i]) for i in range(n)]
    labels = np.arange(n)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for i in rng.permutation(n):
            nb = neighbours[i]
            if not len(nb):
                continue
            votes: dict[int, float] = {}
            for j in nb:
                votes[int(labels[j])] = votes.get(int(labels[j]), 0.0) + float(weights[i, j])
            best = min(votes, key=lambda lab: (-votes[lab], lab))
            if best != labels[i]:
                labels[i] = best
                changed += 1
        if not changed:
            break
    return _relabel_by_size(labels)


@dataclass
class ClusterReport:
    """Faces of a set of photos grouped by identity.

    Attributes:
        faces: one dict per face: ``image``, ``box``, ``cluster``.
        groups: clusters with at least two faces, largest first: lists of face indices.
        singletons: faces that resemble nobody else (face indices).
        no_face: photos without a detected face.
        failed: ``(photo, reason)`` that could not be read.
    """

    faces: list[dict] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)
    singletons: list[int] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    threshold: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "threshold": self.threshold,
            "groups": [[self.faces[i] for i in g] for g in self.groups],
            "singletons": [self.faces[i] for i in self.singletons],
            "no_face": self.no_face,
            "failed": [{"image": p, "reason": r} for p, r in self.failed],
        }

    def summary(self) -> str:
        lines = [f"{len(self.faces)} faces: {len(self.groups)} groups, {len(self.singletons)} singletons, "
                 f"{len(self.no_face)} photos without a face, {len(self.failed)} unreadable "
                 f"(threshold {self.threshold:.3f}, {self.seconds:.1f} s)"]
        for k, g in enumerate(self.groups):
            files = sorted({self.faces[i]["image"] for i in g})
            lines.append(f"group {k + 1} ({len(g)} faces):")
            lines += [f"  {f}" for f in files]
        if self.singletons:
            lines.append("singletons:")
            lines += [f"  {self.faces[i]['image']} {self.faces[i]['box']}" for i in self.singletons]
        lines += [f"no face: {p}" for p in self.no_face]
        lines += [f"unreadable: {p}: {r}" for p, r in self.failed]
        return "\n".join(lines)


def cluster_images(analyzer: FaceAnalyzer, paths: list[Path], threshold: float,
                   method: Method = "chinese_whispers", pad: float = 0.0) -> ClusterReport:
    """Detect, align and embed every face of ``paths`` and group them by identity.

    Args:
        pad: border for a second detection attempt on photos without a face (tight crops).
    """
    from facerec.gallery.service import detect_faces

    t0 = time.perf_counter()
    report = ClusterReport(threshold=threshold)
    vecs = []
    for p in paths:
        try:
            image = read_image(p)
        except ImageReadError as e:
            report.failed.append((str(p), str(e)))
            continue
        det = detect_faces(analyzer.detector, image, pad)
        if not len(det):
            report.no_face.append(str(p))
            continue
        emb = analyzer.embed_faces(align(image, det.landmarks))
        for i in range(len(det)):
            report.faces.append({"image": str(p), "box": [round(float(v), 1) for v in det.xyxy[i]]})
        vecs.append(emb.vectors)
    if vecs:
        labels = cluster_vectors(np.concatenate(vecs), threshold, method)
        for face, lab in zip(report.faces, labels):
            face["cluster"] = int(lab)
        members: dict[int, list[int]] = {}
        for i, lab in enumerate(labels):
            members.setdefault(int(lab), []).append(i)
        for lab in sorted(members):
            (report.groups.append(members[lab]) if len(members[lab]) > 1 else report.singletons.extend(members[lab]))
    report.seconds = time.perf_counter() - t0
    return report

"""Grouping unknown faces into candidate people, one sighting at a time.

A *sighting* is one unknown face (a finished unknown track in the daemon, one photo in
``facerec eval cluster``) with one unit vector. Sightings are grouped by density, as
DBSCAN does and as Immich groups the faces of a photo library:

* two sightings are *neighbours* when their cosine distance ``1 - cos`` is at most
  ``max_distance``;
* a sighting with at least ``min_faces`` sightings within that distance (itself included)
  is a *core*; cores that are neighbours belong to the same candidate person;
* a non-core sighting next to a core joins the candidate of its nearest core (ties: the
  older core), so the result does not depend on the order sightings arrived in;
* anything else is *noise*: seen, kept, but not yet anyone (it may become part of a
  candidate when similar faces arrive).

A new sighting costs one similarity row against the kept sightings (``O(n d)``) and a few
union-find merges; nothing is recomputed from scratch. Removing sightings (a candidate was
named or dismissed) rebuilds the grouping from the kept neighbour lists, again without
computing a single similarity.

A candidate's id is the id of its oldest core sighting: stable while sightings arrive,
and the smaller of the two ids when two candidates merge.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from facerec.errors import GalleryError
from facerec.gallery.records import AuditNote
from facerec.sighting_sink import SightingSink as SightingSink
from facerec.sighting_sink import encode_jpeg as encode_jpeg
from facerec.sighting_sink import sighting_vector as sighting_vector

log = logging.getLogger(__name__)

NOISE = -1


@dataclass(frozen=True)
class ClusterParams:
    """Density parameters (``unknowns.min_faces``, ``unknowns.max_distance``).

    Attributes:
        min_faces: sightings within ``max_distance`` of a sighting (itself included) that
            make it a core of a candidate person; 1 makes every sighting a candidate.
        max_distance: cosine distance ``1 - cos`` up to which two sightings are neighbours.
    """

    min_faces: int
    max_distance: float

    def __post_init__(self) -> None:
        if self.min_faces < 1:
            raise ValueError(f"min_faces must be at least 1, got {self.min_faces}")
        if not 0 <= self.max_distance <= 2:
            raise ValueError(f"max_distance is a cosine distance in [0, 2], got {self.max_distance}")


class DensityClusters:
    """Incremental density clustering of unit vectors keyed by integer sighting ids.

    Args:
        params: the density parameters.
        dim: vector length; taken from the first vector when ``None``.
    """

    def __init__(self, params: ClusterParams, dim: int | None = None) -> None:
        self.params = params
        self._dim = dim
        self._vec = np.zeros((0, dim or 0), np.float32)   # rows [0, len(self)) in use
        self._keys: list[int] = []          # row -> key (rows of removed keys are dropped)
        self._row: dict[int, int] = {}
        self._nb: dict[int, dict[int, float]] = {}   # key -> {neighbour key: cosine}
        self._parent: dict[int, int] = {}   # union-find over core keys; root = smallest key

    # ---------------------------------------------------------------- union-find
    def _find(self, k: int) -> int:
        parent = self._parent
        root = k
        while parent[root] != root:
            root = parent[root]
        while parent[k] != root:
            parent[k], k = root, parent[k]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self._parent[hi] = lo

    def _is_core(self, k: int) -> bool:
        return len(self._nb[k]) + 1 >= self.params.min_faces

    def _make_core(self, k: int) -> None:
        self._parent[k] = k
        for j in self._nb[k]:
            if j in self._parent:
                self._union(k, j)

    # ---------------------------------------------------------------- updates
    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: int) -> bool:
        return key in self._row

    def add(self, key: int, vector: np.ndarray) -> None:
        """Add one sighting.

        Args:
            key: a new sighting id (ids decide which core is "older": smaller is older).
            vector: ``(d,)`` unit vector.

        Raises:
            ValueError: ``key`` is already present, or the vector has the wrong length.
        """
        key = int(key)
        if key in self._row:
            raise ValueError(f"sighting {key} is already clustered")
        v = np.asarray(vector, np.float32).reshape(-1)
        if self._dim is None:
            self._dim = len(v)
            self._vec = np.zeros((0, self._dim), np.float32)
        if len(v) != self._dim:
            raise ValueError(f"sighting {key}: vector of length {len(v)}, the others have {self._dim}")
        n = len(self._keys)
        sims = self._vec[:n] @ v
        close = np.flatnonzero(sims >= 1.0 - self.params.max_distance - 1e-6)
        nb = {self._keys[i]: float(sims[i]) for i in close}
        self._row[key] = len(self._keys)
        self._keys.append(key)
        if n == len(self._vec):  # grow by doubling: adding stays O(n d) per sighting
            grown = np.zeros((max(16, 2 * n), self._dim), np.float32)
            grown[:n] = self._vec[:n]
            self._vec = grown
        self._vec[n] = v
        self._nb[key] = nb
        became_core = [key] if self._is_core(key) else []
        for j, s in nb.items():
            self._nb[j][key] = s
            if j not in self._parent and self._is_core(j):
                became_core.append(j)
        for k in became_core:
            self._make_core(k)

    def add_many(self, keys: Iterable[int], vectors: np.ndarray) -> None:
        """:meth:`add` for each ``(key, vector)`` in order."""
        for k, v in zip(keys, np.asarray(vectors, np.float32)):
            self.add(int(k), v)

    def remove(self, keys: Iterable[int]) -> None:
        """Forget sightings (named, merged or dismissed) and regroup the rest.

        Unknown keys are ignored. No similarity is recomputed: the neighbour lists are kept.
        """
        gone = {int(k) for k in keys if int(k) in self._row}
        if not gone:
            return
        keep_rows = [r for r, k in enumerate(self._keys) if k not in gone]
        self._vec = self._vec[keep_rows].copy()
        self._keys = [self._keys[r] for r in keep_rows]
        self._row = {k: r for r, k in enumerate(self._keys)}
        for k in gone:
            del self._nb[k]
        for nb in self._nb.values():
            for k in gone & nb.keys():
                del nb[k]
        self._parent = {}
        for k in sorted(self._keys):
            if self._is_core(k):
                self._make_core(k)

    # ---------------------------------------------------------------- queries
    def label(self, key: int) -> int:
        """The candidate id of a sighting, or :data:`NOISE`.

        Raises:
            KeyError: unknown sighting.
        """
        key = int(key)
        if key not in self._row:
            raise KeyError(f"sighting {key} is not clustered")
        if key in self._parent:
            return self._find(key)
        best: tuple[float, int] | None = None
        for j, s in self._nb[key].items():
            if j in self._parent and (best is None or (-s, j) < best):
                best = (-s, j)
        return NOISE if best is None else self._find(best[1])

    def labels(self) -> dict[int, int]:
        """``{sighting id: candidate id or NOISE}`` for every kept sighting."""
        return {k: self.label(k) for k in self._keys}

    def clusters(self) -> dict[int, list[int]]:
        """``{candidate id: sorted sighting ids}``, noise left out."""
        out: dict[int, list[int]] = {}
        for k, lab in self.labels().items():
            if lab != NOISE:
                out.setdefault(lab, []).append(k)
        return {c: sorted(m) for c, m in sorted(out.items())}

    def vector(self, key: int) -> np.ndarray:
        return self._vec[self._row[int(key)]].copy()


def cluster_density(vectors: np.ndarray, params: ClusterParams) -> np.ndarray:
    """Density labels for a batch, by the same incremental code the daemon runs.

    Args:
        vectors: ``(n, d)`` unit rows; row ``i`` is sighting ``i``.

    Returns:
        ``(n,)`` int64: the candidate id (the smallest core row of the group) or -1 for noise.
    """
    vec = np.asarray(vectors, np.float32)
    dc = DensityClusters(params, vec.shape[1] if vec.ndim == 2 else None)
    dc.add_many(range(len(vec)), vec)
    lab = dc.labels()
    return np.array([lab[i] for i in range(len(vec))], np.int64)


# --------------------------------------------------------------------------------------
# candidate people: what `facerec unknowns`, the API and the page show and act on


@dataclass
class Candidate:
    """A group of sightings that looks like one person.

    Attributes:
        id: the candidate id (its oldest core sighting).
        sightings: its sightings, oldest first.
    """

    id: int
    sightings: list

    @property
    def cameras(self) -> list[str]:
        return sorted({s.camera for s in self.sightings})

    @property
    def first_seen(self) -> float:
        return min(s.first_seen for s in self.sightings)

    @property
    def last_seen(self) -> float:
        return max(s.last_seen for s in self.sightings)

    def best_crops(self, n: int = 4) -> list[int]:
        """Crop ids of the ``n`` best sightings (by face quality), their best crop each."""
        ranked = sorted(self.sightings, key=lambda s: (-s.quality, s.id))
        return [s.crop_ids[0] for s in ranked if s.crop_ids][:n]

    def to_json(self, details: bool = False) -> dict:
        d = {"id": self.id, "sightings": len(self.sightings), "cameras": self.cameras,
             "first_seen": self.first_seen, "last_seen": self.last_seen, "crops": self.best_crops()}
        if details:
            d["items"] = [s.to_json() for s in self.sightings]
        return d


class Strangers:
    """Candidate people from the stored sightings, kept up to date incrementally.

    :meth:`refresh` adds the sightings stored since the last call and forgets the deleted
    ones (one similarity row per new sighting); the candidate ids are the same in every
    process that looks at the same sightings.

    Args:
        store: the gallery backend (:class:`~facerec.gallery.backend.GalleryBackend`) keeping the sightings.
        params: the density parameters (``unknowns.min_faces``, ``unknowns.max_distance``).
        embedder: key string of the embedder whose sightings are grouped.
    """

    def __init__(self, store, params: ClusterParams, embedder: str) -> None:
        self.store = store
        self.params = params
        self.embedder = embedder
        self.clusters = DensityClusters(params)
        self._last_id = 0
        self._lock = threading.RLock()

    def refresh(self) -> None:
        with self._lock:
            ids, vec = self.store.sighting_vectors(self.embedder, after=self._last_id)
            stored = set(self.store.sighting_ids())
            gone = [k for k in self.clusters.labels() if k not in stored]
            self.clusters.remove(gone)
            self.clusters.add_many(ids, vec)
            if ids:
                self._last_id = max(ids)

    def candidates(self, include_noise: bool = False) -> list[Candidate]:
        """Candidates, the most sighted first (ties: the most recently seen first).

        Args:
            include_noise: also return each ungrouped sighting as a candidate of its own
                (id = the sighting id), for review.
        """
        with self._lock:
            self.refresh()
            groups = self.clusters.clusters()
            if include_noise:
                for k, lab in self.clusters.labels().items():
                    if lab == NOISE:
                        groups[k] = [k]
        found = {s.id: s for s in self.store.sightings(ids=[k for m in groups.values() for k in m])}
        out = [Candidate(c, [found[k] for k in members if k in found]) for c, members in groups.items()]
        out = [c for c in out if c.sightings]
        return sorted(out, key=lambda c: (-len(c.sightings), -c.last_seen, c.id))

    def candidate(self, cid: int) -> Candidate:
        """One candidate (or an ungrouped sighting by its id).

        Raises:
            GalleryError: no such candidate now (named, dismissed, expired, or merged
                into another: the ids come from ``list``).
        """

        for c in self.candidates(include_noise=True):
            if c.id == int(cid):
                return c
        raise GalleryError(f"no unknown candidate {cid}: it was named, dismissed or expired, or merged "
                           "into another candidate; see `facerec unknowns list`")

    def enroll(self, cid: int, person: str, service, *, new: bool, interface: str) -> dict:
        """Enroll every kept crop of a candidate as samples of ``person``, then forget it.

        Args:
            new: ``person`` must not exist yet (``name``) or must exist (``merge``).
            service: a :class:`~facerec.gallery.service.GalleryService`.
            interface: for the audit log (``cli``, ``api``).

        Every crop passes the gate of ``enroll add``: the quality floor (a tiny face upscaled
        to the crop size measures blurry) and the outlier / closer_to_other rule of
        :func:`facerec.gallery.check.judge_new`; crops that fail are left out and counted.

        Returns:
            ``{"person", "candidate", "added", "sightings", "crops", "left_out": {reason: count},
            "summary"}`` (``summary``: ``"6 crops: 2 enrolled, 4 too small or blurry"``).

        Raises:
            GalleryError: bad name, person exists (name) or not (merge), no candidate, or no
                crop usable (nothing is changed; the reason is in the message).
        """
        from facerec.gallery.quality import blur_measure
        from facerec.gallery.store import sha256_bytes, validate_name
        from facerec.types import Embeddings

        person = validate_name(person)
        exists = service.store.has_person(person)
        if new and exists:
            raise GalleryError(f"{person!r} is already enrolled: use merge to add this candidate to them")
        if not new and not exists:
            raise GalleryError(f"no enrolled person {person!r}: use name to create them, or check `facerec enroll list`")
        cand = self.candidate(cid)
        ids = [s.id for s in cand.sightings]
        by_id = {s.id: s for s in cand.sightings}
        rows = self.store.unknown_crops(ids)
        crops: list[np.ndarray] = []
        for _, crop_id, _, jpeg in rows:
            img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise GalleryError(f"candidate {cid}: kept crop {crop_id} cannot be decoded; nothing enrolled")
            crops.append(img)
        if not crops:
            raise GalleryError(f"candidate {cid} has no kept crop; nothing enrolled")
        emb = service.embed_faces(np.stack(crops))
        floor, what = service.quality_floor
        left_out: dict[str, int] = {}
        todo = []
        for i, ((sid, crop_id, _, jpeg), img) in enumerate(zip(rows, crops)):
            quality = float(emb.norm[i]) if service.embedder.quality_is_norm else blur_measure(img)
            if quality < floor:  # tiny faces are upscaled to the crop size: they measure blurry
                left_out["too small or blurry"] = left_out.get("too small or blurry", 0) + 1
                continue
            todo.append((i, sid, crop_id, jpeg, img, quality))
        if not todo:
            raise GalleryError(
                f"candidate {cid}: none of its {len(rows)} crops is usable ({what} under the enrollment floor "
                f"{floor:.1f}: faces too small or blurry); nothing enrolled. Dismiss it, or wait for a closer view")
        # the gate of enroll add and enroll check: best crops first, each judged against the
        # gallery including the crops of this group already accepted
        todo.sort(key=lambda t: -t[5])
        added = 0
        for i, sid, crop_id, jpeg, img, quality in todo:
            s = by_id[sid]
            verdict = service.judge(person, emb.vectors[i])
            if verdict.reason is not None:
                left_out[verdict.reason] = left_out.get(verdict.reason, 0) + 1
                continue
            one = Embeddings(emb.vectors[i:i + 1], emb.norm[i:i + 1], emb.key)
            service.store.add_sample(person, img, source_path=f"unknown:{s.camera}:track{s.track_id}:{crop_id}",
                                     source_sha256=sha256_bytes(jpeg), quality=quality, embeddings=one,
                                     stem=f"unknown_{sid}_{crop_id}",
                                     audit=AuditNote(interface, "samples.add", person, {"added": 1, "candidate": int(cid)}))
            added += 1
        summary = f"{len(rows)} crops: {added} enrolled" + "".join(f", {n} {why}" for why, n in left_out.items())
        if not added:
            raise GalleryError(f"candidate {cid}: {summary}; nothing enrolled")
        self.store.delete_sightings(ids, audit=AuditNote(interface, "unknown.name" if new else "unknown.merge", person,
                                                          {"candidate": int(cid), "sightings": ids, "samples": added,
                                                           "left_out": left_out}))
        self.refresh()
        return {"person": person, "candidate": int(cid), "added": added, "sightings": len(ids),
                "crops": len(rows), "left_out": left_out, "summary": summary}

    def dismiss(self, cid: int, *, interface: str) -> dict:
        """Delete a candidate's sightings and crops (nothing of them is kept)."""
        cand = self.candidate(cid)
        ids = [s.id for s in cand.sightings]
        self.store.delete_sightings(ids, audit=AuditNote(interface, "unknown.dismiss", f"candidate {cid}",
                                                          {"sightings": ids}))
        self.refresh()
        return {"candidate": int(cid), "deleted": len(ids)}


# --------------------------------------------------------------------------------------
# negative feedback and privacy


def mark_not(service, person: str, image: np.ndarray, *, face: int | None = None, interface: str,
             source: str = "<image>") -> dict:
    """Keep a face of ``image`` as a negative sample of ``person`` ("that's not X").

    Args:
        service: a :class:`~facerec.gallery.service.GalleryService`.
        face: index of the face among the photo's detections; default the largest.
        interface: for the audit log.

    Returns:
        ``{"person", "negative", "similarity"}`` (similarity of the face to ``person``).

    Raises:
        GalleryError: unknown person, no face, or a face index out of range.
    """
    from facerec.align import align
    from facerec.gallery.store import validate_name

    person = validate_name(person)
    if not service.store.has_person(person):
        raise GalleryError(f"no enrolled person {person!r}: only a recognised name can be marked wrong")
    det = service.detect(image)
    if not len(det):
        raise GalleryError(f"{source}: no face found")
    if face is None:
        face = int(np.argmax((det.xyxy[:, 2] - det.xyxy[:, 0]) * (det.xyxy[:, 3] - det.xyxy[:, 1])))
    if not 0 <= face < len(det):
        raise GalleryError(f"{source}: face {face} was chosen but the photo has {len(det)} face(s)")
    crops = align(image, det.landmarks[face:face + 1])
    emb = service.embed_faces(crops)
    index = service.index()
    sims = dict(zip(index.people, index.similarities(emb)[0].tolist()))
    nid = service.store.add_negative(person, str(emb.key), emb.vectors[0], encode_jpeg(crops.images[0]),
                                     audit=AuditNote(interface, "negative.add", person, {"source": source}))
    return {"person": person, "negative": nid, "similarity": round(float(sims.get(person, -1.0)), 4)}


def purge_person(service, name: str, *, interface: str) -> dict:
    """Delete a person with every sample, crop and vector (the gallery) and every
    negative sample of theirs, in one transaction with its audit entry.

    Returns:
        ``{"deleted", "samples", "negatives"}``.
    """
    from facerec.gallery.store import validate_name

    name = validate_name(name)
    negatives = service.store.negative_counts().get(name, 0)
    samples = service.store.delete_person(name, audit=AuditNote(interface, "person.delete", name))
    return {"deleted": name, "samples": samples, "negatives": negatives}

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

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

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

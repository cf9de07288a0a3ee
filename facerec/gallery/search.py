"""Matching face vectors against the gallery by angle (cosine similarity).

A person is represented by a *template* (``gallery.template``):

* ``mean``: the mean of their unit vectors, re-normalised (one row per person);
* ``quality_mean``: the same, each sample weighted by its quality;
* ``max``: every sample is kept and a person's similarity is the best of theirs.

Search is exact with NumPy by default (one matrix product; fast up to ~10^5 rows). FAISS is
used when ``index`` is ``faiss``, or ``auto`` and the gallery has at least
``index_min_size`` rows. Which FAISS index (``faiss_kind="auto"``):

* below ``index_min_size`` rows: ``IndexFlatIP``, exact (the same answers as NumPy);
* up to :data:`IVF_MIN_SIZE` rows: ``IndexHNSWFlat`` with inner product (approximate);
* above: ``IndexIVFFlat`` with inner product (approximate), because building an HNSW graph
  of a million 512-d vectors takes tens of minutes on a small CPU.

Defaults (HNSW M=32, efConstruction=40, efSearch=512; IVF ~sqrt(n) lists, nprobe=256) were
chosen with ``bench/gallery.py`` on uniformly random templates. That is the realistic case,
not a pessimistic one: templates of different people are close to orthogonal, so a gallery
has no cluster structure for an approximate index to exploit. Measured on two cores (probes
at cosine 0.65 to their template): HNSW at 100k x 512 found the exact top-1 for 94% of
probes with efSearch=256 and 99.5% with 512 (2 ms per probe); IVF at 1M x 128 for 75% with
nprobe=64 and 96% with 256 (5 ms per probe, against 19 ms for exact NumPy on one face).
Exact NumPy stays the ``auto`` choice below 200k rows (about 1 ms per face in a batch at
100k x 512): below that, an approximate index saves fractions of a millisecond and costs
accuracy.

A change to a few people does not rebuild the index: :meth:`GalleryIndex.with_people`
recomputes only their templates and patches a copy of the rows (the live daemon's watcher
uses it), with the same rows as a full build. A FAISS index is not rebuilt either: the
built FAISS index (the *base*) is shared, never modified, by every version derived from
it; a version marks the base rows of changed people dead and searches their new rows
exactly with NumPy (the *delta*), merging both. Once dead and delta rows pass
:data:`DELTA_MAX_FRACTION` of the base, the next change builds a fresh base. FAISS is
imported only when used.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Sequence

import numpy as np

from facerec.errors import GalleryError
from facerec.types import EmbedderKey, Embeddings, Match, Matches

log = logging.getLogger(__name__)

Template = Literal["mean", "quality_mean", "max"]
IndexKind = Literal["auto", "exact", "faiss"]
FaissKind = Literal["auto", "flat", "hnsw", "ivf"]

#: Rows from which ``faiss_kind="auto"`` builds an IVF index instead of HNSW.
IVF_MIN_SIZE = 500_000

#: Similarity reported for a face when the gallery is empty (no candidate at all).
NO_CANDIDATE = -1.0

#: Dead plus delta rows, as a share of a FAISS base, above which a change rebuilds the base.
#: At 5 % of a 200k-row base the delta is 10k rows: one exact product of about 1 ms per face,
#: while an HNSW build of 200k x 512 takes minutes on two cores.
DELTA_MAX_FRACTION = 0.05


class _FaissBase:
    """A built FAISS index, shared read-only by every :class:`GalleryIndex` derived from
    the one that built it (the IVF quantizer must live as long as the index)."""

    def __init__(self, index, kind: str, quantizer=None) -> None:
        self.index, self.kind, self.quantizer = index, kind, quantizer
        self.n = int(index.ntotal)


def import_faiss(required: bool = True):
    """The ``faiss`` module, or ``None`` when missing and not ``required``.

    Raises:
        GalleryError: FAISS is required and not installed.
    """
    try:
        import faiss  # noqa: PLC0415 (optional dependency, imported on use)
    except ImportError:
        if required:
            raise GalleryError(
                "gallery.index is faiss but FAISS is not installed: pip install 'facerec[faiss]' "
                "(or set gallery.index to exact)"
            ) from None
        return None
    return faiss


def _unit_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


#: Samples summed per step in float64 when building templates (bounds the float64 working
#: copy to about 256 MB at 512-d instead of a copy of the whole gallery).
TEMPLATE_CHUNK = 65_536


def _sample_weights(inverse: np.ndarray, n_people: int, quality: np.ndarray | None, n: int,
                    template: Template) -> np.ndarray:
    if template == "mean":
        return np.ones(n, np.float64)
    if template == "quality_mean":
        if quality is None:
            raise GalleryError("the quality_mean template needs a quality per sample")
        w = np.clip(np.asarray(quality, np.float64).reshape(-1), 0.0, None)
        if len(w) != n:
            raise GalleryError(f"{len(w)} quality values for {n} vectors")
        # a person whose samples all have quality 0 falls back to the plain mean
        totals = np.bincount(inverse, weights=w, minlength=n_people)
        return np.where(totals[inverse] > 0, w, 1.0)
    raise GalleryError(f"unknown template {template!r}: choose mean, quality_mean or max")


def build_templates(names: Sequence[str], vectors: np.ndarray, quality: np.ndarray | None,
                    template: Template) -> tuple[list[str], np.ndarray]:
    """Per-person template rows.

    A person's rows depend only on their own samples (and their order), so the rows of a
    few people can be recomputed alone and patched into an index
    (:meth:`GalleryIndex.with_people`) with the same values as a full build. Weighted sums
    are taken in float64, :data:`TEMPLATE_CHUNK` samples at a time.

    Returns:
        ``(row owner names, rows (m, d) float32 unit)``; for ``max`` every sample is a row,
        sorted by person (stable), otherwise one row per person in name order.
    """
    names = list(names)
    vec = np.asarray(vectors, np.float32)
    if len(names) != len(vec):
        raise GalleryError(f"{len(names)} names for {len(vec)} vectors")
    if template not in ("mean", "quality_mean", "max"):
        raise GalleryError(f"unknown template {template!r}: choose mean, quality_mean or max")
    if len(vec) == 0:
        return [], np.zeros((0, vec.shape[1] if vec.ndim == 2 else 0), np.float32)
    people, inverse = np.unique(np.asarray(names, dtype=object), return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    if template == "max":
        return [names[i] for i in order], _unit_rows(vec[order])
    w = _sample_weights(inverse, len(people), quality, len(vec), template)
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    ends = np.r_[starts[1:], len(order)]
    out = np.empty((len(people), vec.shape[1]), np.float32)
    g = 0
    while g < len(starts):  # whole people per chunk, at least one
        g2 = max(g + 1, int(np.searchsorted(ends, starts[g] + TEMPLATE_CHUNK, side="right")))
        sel = order[starts[g]:ends[g2 - 1]]
        part = vec[sel].astype(np.float64) * w[sel, None]
        out[g:g2] = _unit_rows(np.add.reduceat(part, starts[g:g2] - starts[g], axis=0))
        g = g2
    return [str(p) for p in people], out


class GalleryIndex:
    """Nearest people for face vectors.

    Args:
        names: owner of each vector.
        vectors: ``(n, d)`` unit vectors (one per sample).
        quality: ``(n,)`` sample quality, used by ``quality_mean``.
        template: ``mean``, ``quality_mean`` or ``max`` (see the module docstring).
        index: ``exact`` (NumPy), ``faiss``, or ``auto`` (FAISS from ``index_min_size`` rows).
        index_min_size: rows from which ``auto`` uses FAISS, and from which FAISS uses
            HNSW instead of a flat index.
        faiss_kind: force ``flat``, ``hnsw`` or ``ivf`` when FAISS is used.
        key: the embedder of ``vectors``; queries from another embedder are refused.
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build effort (build time grows about linearly with it).
        ef_search: HNSW search effort (raised to the number of candidates fetched).
        nprobe: IVF lists visited per query (of about ``sqrt(rows)`` lists).
    """

    def __init__(
        self,
        names: list[str],
        vectors: np.ndarray,
        quality: np.ndarray | None = None,
        template: Template = "mean",
        index: IndexKind = "auto",
        index_min_size: int = 200_000,
        *,
        faiss_kind: FaissKind = "auto",
        key: EmbedderKey | None = None,
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 512,
        nprobe: int = 256,
    ) -> None:
        vec = np.asarray(vectors, np.float32)
        if vec.ndim != 2:
            vec = vec.reshape(len(names), -1) if len(names) else np.zeros((0, 0), np.float32)
        if index not in ("auto", "exact", "faiss"):
            raise GalleryError(f"unknown gallery index {index!r}: choose auto, exact or faiss")
        self.template: Template = template
        self.key = key
        self.sample_ids: np.ndarray | None = None
        self.dim = int(vec.shape[1])
        self.n_samples = len(vec)
        self._opts: dict[str, Any] = dict(index=index, index_min_size=index_min_size, faiss_kind=faiss_kind, hnsw_m=hnsw_m,
                          ef_construction=ef_construction, ef_search=ef_search, nprobe=nprobe)
        self._negatives: dict[str, np.ndarray] = {}
        row_names, rows = build_templates(names, vec, quality, template)
        people = sorted(set(row_names))
        person_index = {p: i for i, p in enumerate(people)}
        row_person = np.fromiter((person_index[n] for n in row_names), np.int64, len(row_names))
        self._set_rows(people, person_index, row_person, rows)

    def _set_rows(self, people: list[str], person_index: dict[str, int], row_person: np.ndarray,
                  rows: np.ndarray, derive: tuple | None = None) -> None:
        """Install template rows (grouped by person, people sorted) and their search backend.

        ``derive`` = ``(parent, old_to_new, new_rows, new_person)`` from :meth:`with_people`:
        ``old_to_new`` maps the parent's person indices to this version's (-1 for removed
        or changed people), ``new_rows``/``new_person`` are the changed people's rows. With
        it the parent's FAISS base is reused when it stays clean enough.
        """
        self.rows = rows
        self.people: list[str] = people
        self._person_index = person_index
        self._row_person = row_person
        self.row_names = [people[i] for i in row_person.tolist()]
        # rows are grouped by person (sorted), so a person's rows are one contiguous run
        self._starts = np.flatnonzero(np.r_[True, np.diff(row_person) != 0]) if len(rows) else np.zeros(0, np.int64)
        self._base: _FaissBase | None = None
        self.backend = "exact"
        o = self._opts
        index, index_min_size, faiss_kind = o["index"], o["index_min_size"], o["faiss_kind"]
        use_faiss = index == "faiss" or (index == "auto" and len(self.rows) >= index_min_size)
        if not (use_faiss and len(self.rows)):
            return
        faiss = import_faiss(required=index == "faiss")
        if faiss is None:
            log.warning("FAISS is not installed; searching %d rows exactly with NumPy "
                        "(pip install 'facerec[faiss]' for an index)", len(self.rows))
            return
        n = len(self.rows)
        kind = faiss_kind
        if kind == "auto":
            kind = "flat" if n < index_min_size else "hnsw" if n < IVF_MIN_SIZE else "ivf"
        if kind not in ("flat", "hnsw", "ivf"):
            raise GalleryError(f"unknown FAISS index kind {faiss_kind!r}: choose auto, flat, hnsw or ivf")
        self._ef_search = o["ef_search"]
        self.backend = f"faiss-{kind}"
        if derive is not None and self._derive_base(kind, *derive):
            return
        rows = np.ascontiguousarray(self.rows)
        quantizer = None
        if kind == "hnsw":
            idx = faiss.IndexHNSWFlat(self.dim, o["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = o["ef_construction"]
            idx.hnsw.efSearch = o["ef_search"]
        elif kind == "ivf":
            nlist = int(min(1024, max(1, np.sqrt(n))))
            quantizer = faiss.IndexFlatIP(self.dim)
            idx = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            pick = np.random.default_rng(0).choice(n, 64 * nlist, replace=False) if n > 64 * nlist else None
            idx.train(rows if pick is None else rows[pick])
            idx.nprobe = min(o["nprobe"], nlist)
        else:
            idx = faiss.IndexFlatIP(self.dim)
        idx.add(rows)
        self._base = _FaissBase(idx, kind, quantizer)
        self._base_person = row_person.copy()  # person of each base row, -1 = dead in this version
        self._n_dead = 0
        self._delta_rows = np.zeros((0, self.dim), np.float32)
        self._delta_person = np.zeros(0, np.int64)

    def _derive_base(self, kind: str, parent: GalleryIndex, old_to_new: np.ndarray, new_rows: np.ndarray,
                     new_person: np.ndarray) -> bool:
        """Share ``parent``'s FAISS base: its rows of changed people dead, their new rows in
        the delta. False (build a new base) when the parent has none of this kind, or when
        dead plus delta rows would pass :data:`DELTA_MAX_FRACTION` of the base."""
        base = parent._base
        if base is None or base.kind != kind:
            return False
        pb = parent._base_person
        base_person = np.where(pb >= 0, old_to_new[np.maximum(pb, 0)], -1)
        dp = old_to_new[parent._delta_person]
        keep = dp >= 0
        delta_rows = np.concatenate([parent._delta_rows[keep], np.asarray(new_rows, np.float32).reshape(-1, self.dim)])
        delta_person = np.concatenate([dp[keep], np.asarray(new_person, np.int64)])
        n_dead = int(np.count_nonzero(base_person < 0))
        if n_dead + len(delta_rows) > DELTA_MAX_FRACTION * base.n:
            return False
        self._base = base
        self._base_person, self._n_dead = base_person, n_dead
        self._delta_rows, self._delta_person = np.ascontiguousarray(delta_rows), delta_person
        return True

    def with_people(self, people: Sequence[str], names: Sequence[str], vectors: np.ndarray,
                    quality: np.ndarray | None, n_samples: int | None = None) -> GalleryIndex:
        """A new index where only ``people``'s template rows are recomputed.

        This index is left as it was (a search running on it in another thread is not
        disturbed); rows of everyone else are copied as they are (float32, no float64
        copy of the gallery), so a change costs the changed people's samples plus one
        copy of the rows instead of a full :func:`build_templates`. The result equals a
        fresh build over the whole updated gallery. A FAISS index is shared, not rebuilt
        (see the module docstring); a search gives the answers of a fresh build (exactly
        for a flat index; with the recall of the approximate ones for HNSW and IVF).

        Args:
            people: everyone the change touched (enrolled, deleted, renamed from or to).
            names, vectors, quality: *all* remaining samples of those people, in gallery
                order; a person of ``people`` without samples here is removed.
            n_samples: samples in the whole updated gallery (for :attr:`n_samples`).
        """
        vec = np.asarray(vectors, np.float32)
        if len(vec) and self.dim and (vec.ndim != 2 or vec.shape[1] != self.dim):
            raise GalleryError(f"vectors have {vec.shape[-1]} dimensions, the gallery has {self.dim}")
        if len(vec) == 0:
            vec = np.zeros((0, self.dim), np.float32)
        new_names, new_rows = build_templates(names, vec, quality, self.template)
        touched = set(map(str, people)) | set(new_names)
        drop_p = np.zeros(len(self.people), bool)
        drop_p[[self._person_index[p] for p in touched if p in self._person_index]] = True
        new_people = sorted([p for p in self.people if p not in touched] + sorted(set(new_names)))
        if not len(self.rows) or not self.dim:  # nothing to keep: the touched people are everyone
            out = GalleryIndex(list(names), vec, quality, self.template, key=self.key, **self._opts)
            out._negatives = self._negatives
            return out
        if new_people == self.people and self.template != "max":
            # the same people, one row each: overwrite the touched rows of a copy
            rows = self.rows.copy()
            at = np.flatnonzero(drop_p[self._row_person])
            rows[at] = new_rows  # rows of a person are contiguous and new_rows follow the same order
            person_index, row_person = self._person_index, self._row_person
            old_to_new = np.arange(len(self.people), dtype=np.int64)
            new_person = self._row_person[at]
        else:
            person_index = {p: i for i, p in enumerate(new_people)}
            old_to_new = np.fromiter((person_index.get(p, -1) for p in self.people), np.int64, len(self.people))
            keep = ~drop_p[self._row_person]
            kept_person = old_to_new[self._row_person[keep]]
            new_person = np.fromiter((person_index[n] for n in new_names), np.int64, len(new_names))
            pos = np.searchsorted(kept_person, new_person, side="left")
            rows = np.insert(self.rows[keep], pos, new_rows, axis=0) if len(new_rows) else self.rows[keep]
            row_person = np.insert(kept_person, pos, new_person)
        old_to_new[drop_p] = -1  # changed people's rows in a shared FAISS base are dead
        out = object.__new__(GalleryIndex)
        out.template, out.key, out.sample_ids, out.dim = self.template, self.key, None, self.dim
        out.n_samples = self.n_samples if n_samples is None else int(n_samples)
        out._opts, out._negatives = self._opts, self._negatives
        out._set_rows(new_people, person_index, row_person, np.ascontiguousarray(rows, np.float32),
                      derive=(self, old_to_new, new_rows, new_person))
        return out

    @classmethod
    def from_store(cls, store, key: EmbedderKey, template: Template = "mean", index: IndexKind = "auto",
                   index_min_size: int = 200_000, **kwargs) -> GalleryIndex:
        """An index over every vector ``store`` holds for ``key`` (one consistent snapshot)."""
        ids, names, vec, quality = store.vectors(key)
        out = cls(names, vec, quality, template, index, index_min_size, key=key, **kwargs)
        out.sample_ids = ids
        return out

    def set_negatives(self, names: Sequence[str], vectors: np.ndarray) -> None:
        """Faces marked "not X" (negative feedback): ``names[i]`` is X for ``vectors[i]``.

        A face that is closer to one of X's negatives than to X itself is not named X
        (:meth:`search` goes on to the next candidate). People without negatives, and
        faces far from every negative, are matched exactly as before.
        """
        vec = np.asarray(vectors, np.float32)
        if len(names) != len(vec):
            raise GalleryError(f"{len(names)} names for {len(vec)} negative vectors")
        if len(vec) and self.dim and vec.shape[1] != self.dim:
            raise GalleryError(f"negative vectors have {vec.shape[1]} dimensions, the gallery has {self.dim}")
        by: dict[str, list[np.ndarray]] = {}
        for n, v in zip(names, _unit_rows(vec) if len(vec) else vec):
            by.setdefault(str(n), []).append(v)
        self._negatives = {n: np.stack(v) for n, v in by.items()}

    def _vetoed(self, q: np.ndarray, name: str, similarity: float) -> bool:
        neg = self._negatives.get(name)
        return neg is not None and float(np.max(neg @ q)) > similarity

    def __len__(self) -> int:
        """Number of people in the gallery."""
        return len(self.people)

    def _queries(self, emb: Embeddings | np.ndarray) -> np.ndarray:
        if isinstance(emb, Embeddings):
            if self.key is not None and len(self.rows) and emb.key != self.key:
                raise GalleryError(
                    f"faces embedded with {emb.key} cannot be matched against a gallery embedded with "
                    f"{self.key}; run facerec embed with the same embedder"
                )
            q = emb.vectors
        else:
            q = np.asarray(emb, np.float32)
            if q.ndim == 1:
                q = q[None, :] if q.size else q.reshape(0, self.dim)
            q = _unit_rows(q) if len(q) else q.astype(np.float32)
        if len(q) and len(self.rows) and q.shape[1] != self.dim:
            raise GalleryError(f"query vectors have {q.shape[1]} dimensions, the gallery has {self.dim}")
        return np.ascontiguousarray(q, np.float32)

    def similarities(self, emb: Embeddings | np.ndarray) -> np.ndarray:
        """Exact ``(n_faces, n_people)`` similarity to each person (columns follow :attr:`people`)."""
        q = self._queries(emb)
        if not len(self.rows) or not len(q):
            return np.zeros((len(q), len(self.people)), np.float32)
        s = q @ self.rows.T
        if self.template == "max":
            s = np.maximum.reduceat(s, self._starts, axis=1)
        return s

    def search(self, emb: Embeddings | np.ndarray, threshold: float, top_k: int = 5) -> Matches:
        """The best people for each face.

        Args:
            emb: face vectors (unit rows; plain arrays are normalised here).
            threshold: cosine similarity the best candidate needs to be named.
            top_k: candidates reported per face, best first, whatever their similarity.

        Returns:
            One :class:`~facerec.types.Match` per face; with an empty gallery every face is
            unknown with an empty ``top`` and similarity :data:`NO_CANDIDATE`.
        """
        q = self._queries(emb)
        if len(q) == 0:
            return Matches.empty()
        if not len(self.rows):
            return Matches([Match(None, NO_CANDIDATE, []) for _ in range(len(q))])
        k = max(1, min(int(top_k), len(self.people)))
        if self._base is not None:
            cand_idx, cand_sim = self._faiss_candidates(q, k)
        else:
            s = self.similarities(q)
            if k < s.shape[1]:
                part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            else:
                part = np.broadcast_to(np.arange(s.shape[1]), (len(q), s.shape[1]))
            psim = np.take_along_axis(s, part, axis=1)
            order = np.argsort(-psim, axis=1, kind="stable")
            cand_idx = np.take_along_axis(part, order, axis=1)
            cand_sim = np.take_along_axis(psim, order, axis=1)
        items = []
        for i in range(len(q)):
            top = [(self.people[int(p)], float(v)) for p, v in zip(cand_idx[i], cand_sim[i]) if p >= 0][:k]
            best_name, best = top[0] if top else (None, NO_CANDIDATE)
            if self._negatives and best_name is not None and best >= threshold:
                # "not X": skip candidates this face resembles a negative of more than them
                ok = [(n, v) for n, v in top if v >= threshold and not self._vetoed(q[i], n, v)]
                best_name, best = ok[0] if ok else (None, best)
                items.append(Match(best_name if ok else None, best, top))
                continue
            items.append(Match(best_name if best >= threshold else None, best, top))
        return Matches(items)

    def _faiss_candidates(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k people per query from the FAISS base (live rows only) merged with the exact
        delta (person indices, similarities; -1 pads)."""
        base = self._base
        if base is None:
            raise GalleryError("no FAISS index was built")
        per_person = self.template == "max"
        # rows per query: k people, or more rows than that when a person has several
        rows_for_k = max(4 * k, 32) if per_person else k
        alive = base.n - self._n_dead
        want = min(alive, rows_for_k)
        # dead rows come back from FAISS too: fetch more, and again with twice as many for
        # the queries that did not get k live people (rare: dead rows are <= 5 % of the base)
        fetch = int(min(base.n, want + min(self._n_dead, max(want, 16))))
        cands: list[dict[int, float]] = [{} for _ in range(len(q))]
        todo = np.arange(len(q))
        while len(todo) and want > 0:
            params = None
            if base.kind == "hnsw":  # per call, so threads sharing the base do not race on it
                params = import_faiss().SearchParametersHNSW(efSearch=max(self._ef_search, fetch))
            sims, rows = base.index.search(q[todo], fetch, params=params)
            person = np.where(rows >= 0, self._base_person[np.maximum(rows, 0)], -1)
            again = []
            for j, i in enumerate(todo.tolist()):
                c: dict[int, float] = {}
                for p, v in zip(person[j].tolist(), sims[j].tolist()):
                    if p >= 0 and p not in c:
                        c[p] = v
                        if len(c) == k:
                            break
                cands[i] = c
                if len(c) < k and fetch < base.n and np.count_nonzero(person[j] >= 0) < alive:
                    again.append(i)
            todo = np.asarray(again, np.int64)
            fetch = min(base.n, 2 * fetch)
        if len(self._delta_rows):
            ds = q @ self._delta_rows.T
            m = min(ds.shape[1], rows_for_k)
            top = np.argpartition(-ds, m - 1, axis=1)[:, :m] if m < ds.shape[1] else np.broadcast_to(
                np.arange(ds.shape[1]), ds.shape)
            for i in range(len(q)):
                c = cands[i]
                for r in top[i].tolist():
                    p, v = int(self._delta_person[r]), float(ds[i, r])
                    if v > c.get(p, -np.inf):
                        c[p] = v
        out_p = np.full((len(q), k), -1, np.int64)
        out_s = np.full((len(q), k), NO_CANDIDATE, np.float32)
        for i, c in enumerate(cands):
            best = sorted(c.items(), key=lambda pv: -pv[1])[:k]
            for j, (p, v) in enumerate(best):
                out_p[i, j], out_s[i, j] = p, v
        return out_p, out_s

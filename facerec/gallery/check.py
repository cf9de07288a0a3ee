"""Finding the wrong samples of a gallery, and the same rule for every sample that enters it.

A sample is suspicious for one of five reasons (:data:`REASONS`):

* ``outlier``: far from its own person's other samples (cosine to the mean of the others
  below :attr:`CheckRules.outlier_below`);
* ``closer_to_other``: closer to another person's template than to its own person's other
  samples (by more than :attr:`CheckRules.margin`);
* ``low_quality``: below the enrollment quality floor;
* ``not_a_face``: a low detector score together with a low "faceness" (the cosine to the
  mean face of the gallery: every human face shares a common direction in embedding space,
  a dog's or a pattern's does not);
* ``duplicate``: the same photo, or a near-duplicate (cosine at least
  ``gallery.duplicate_similarity``) of another sample of anyone.

:func:`check_gallery` applies them to every sample of a gallery (``facerec enroll check``,
``GET /api/check``); :func:`judge_new` applies the same outlier / closer_to_other rule to a
photo about to be enrolled, so enrollment refuses exactly what the check would flag, and
the answer does not depend on who was enrolled first beyond the samples already there.

Scale: one pass of exact BLAS products of every sample against every person template
(``samples x people x d`` flops, in blocks of at most :data:`BLOCK_FLOATS` cosines, so
memory stays at 64 MB whatever the size) gives each sample its nearest other person and,
in the same pass, its candidates for a near-duplicate of another person: angles between
unit vectors obey the triangle inequality, so only people whose template lies within their
own widest sample angle plus the duplicate angle are compared sample by sample (see
:func:`_scan`; exact, no pair is missed). Own similarities come from per-person sums
(``np.add.at``). Nothing compares all pairs of samples any more: that search
(``samples^2 x d``, before) took about 70 % of the time at 10k people and grew with the
square of the samples. FAISS is not used here: the check needs every person's cosine for
the duplicate bound, and its HNSW build and search cost more than the products (10k people:
215 s against 19 s). Measured with ``OPENBLAS_NUM_THREADS=1 python bench/gallery.py --check
1000 10000 100000 --threads 1`` (two shared cores, synthetic people x 3 samples of d=128,
SQLite, reading included): 1k people 0.12 s, 10k 2.2 s (6.7 s before, same flags), 100k
154 s (the products grow with people x samples: 10x the people, about 70x the time; the
all-pairs search alone would have taken about 390 s more).

Thresholds were calibrated on LFW (``../shared/data/lfw``, 100 people x 3 photos, one in
five people given a photo of someone else, half enrolled people and half strangers, 30
draws; yolov5n-0.5-face + MobileFaceNet, threshold 0.32): the check flags 99.7 % of the
wrong photos and 0.5 % of the good ones. They scale with the recognition threshold so other
embedders keep the same ratios.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np

from facerec.gallery.search import IndexKind

if TYPE_CHECKING:
    from facerec.gallery.backend import GalleryBackend
    from facerec.types import EmbedderKey

Reason = Literal["outlier", "closer_to_other", "low_quality", "not_a_face", "duplicate"]

#: Every reason, most serious first (a sample is reported once, under its first reason).
REASONS: tuple[Reason, ...] = ("not_a_face", "low_quality", "closer_to_other", "outlier", "duplicate")

#: Samples searched per batch at most (bounds the similarity block to BATCH x people floats).
BATCH = 2048

#: Floats in one block of cosines at most (64 MB of float32): the batch shrinks as people grow.
BLOCK_FLOATS = 1 << 24

#: Radians added to the near-duplicate bound so float32 rounding never drops a true pair.
ANGLE_SLACK = 0.01

#: Outlier floor as a fraction of the recognition threshold: on LFW with MobileFaceNet
#: (threshold 0.32) 0.8 x 0.32 = 0.256 left 0.5 % of good photos under it and 0.3 % of wrong ones above.
OUTLIER_FRACTION = 0.8

#: How much closer to another person than to its own a sample must be to be flagged (cosine).
MARGIN = 0.05

#: Faceness (cosine to the gallery's mean face) under which a face is doubtful. On LFW the
#: 0.5th percentile of real faces is -0.12; the dog photo of ../shared/data measures -0.26.
FACENESS_BELOW = -0.15

#: People the gallery needs before its mean face means anything. On LFW, against the mean of
#: 20 people 2.8 % of real faces measure under -0.15 (0.3 % against 600 people): enough for
#: the gate, which also asks for a low detector score (5 % of faces), not for the check.
FACENESS_MIN_PEOPLE = 20

#: People from which ``enroll check`` flags not_a_face (see :data:`FACENESS_MIN_PEOPLE`).
CHECK_FACENESS_MIN_PEOPLE = 50

#: Detector score under which, with a low faceness, a face is refused at enrollment. LFW faces:
#: 5th percentile 0.76; the dog photo 0.68.
DETECTOR_SCORE_BELOW = 0.75

#: Detector score of the stored aligned crop (re-detected by ``enroll check``) under which,
#: with a low faceness, a sample is flagged. LFW crops: median 0.52; the dog's crop 0.35.
CROP_SCORE_BELOW = 0.5

#: A new person's first photo is refused as "looks like" another person only from this
#: multiple of the recognition threshold (a plain threshold refused 11 % of good photos).
NEW_PERSON_FRACTION = 2.0


@dataclass(frozen=True)
class CheckRules:
    """The thresholds of the check (cosines unless said otherwise).

    Attributes:
        outlier_below: a sample's cosine to the mean of its person's other samples under which it is an outlier.
        margin: how much closer to another person than to its own makes ``closer_to_other``.
        new_person_above: cosine to another person from which a new person's first photo is refused.
        recognize_above: the recognition threshold: enrollment refuses a photo as closer to
            another person only when that person would be recognised in it (a person with one
            sample is compared to that sample alone, which is noisier than a template).
        duplicate_similarity: cosine from which two samples are near-duplicates.
        min_quality: the enrollment quality floor (MagFace norm or sharpness).
        faceness_below: cosine to the mean face under which a face is doubtful.
        detector_score_below: detector score (0..1) under which a doubtful face is refused at enrollment.
        crop_score_below: detector score of the stored crop under which a doubtful sample is flagged.
    """

    outlier_below: float
    margin: float
    new_person_above: float
    duplicate_similarity: float
    min_quality: float
    recognize_above: float = 0.0
    faceness_below: float = FACENESS_BELOW
    detector_score_below: float = DETECTOR_SCORE_BELOW
    crop_score_below: float = CROP_SCORE_BELOW

    @classmethod
    def from_threshold(cls, threshold: float, duplicate_similarity: float, min_quality: float) -> CheckRules:
        """Rules scaled to a recognition threshold (see the module docstring)."""
        return cls(outlier_below=OUTLIER_FRACTION * threshold, margin=MARGIN,
                   new_person_above=NEW_PERSON_FRACTION * threshold,
                   duplicate_similarity=duplicate_similarity, min_quality=min_quality, recognize_above=threshold)


@dataclass(frozen=True)
class Flag:
    """One suspicious sample.

    Attributes:
        person: its owner.
        sample_id: its id.
        source_path: the photo exactly as given to ``enroll add`` (``None`` when unknown).
        reason: one of :data:`REASONS`.
        closest_person: the other person it resembles most (``None`` when none is relevant).
        score: the measured value behind the reason: the cosine to the own person
            (``outlier``), to the closest person (``closer_to_other``), to the duplicate
            (``duplicate``, 1.0 for the same photo), the quality (``low_quality``) or the
            faceness (``not_a_face``).
    """

    person: str
    sample_id: int
    source_path: str | None
    reason: Reason
    closest_person: str | None
    score: float

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["score"] = round(float(self.score), 4)
        return out

    def describe(self) -> str:
        """One line for people."""
        what = {
            "outlier": f"far from {self.person}'s other samples (cosine {self.score:.3f})",
            "closer_to_other": f"closer to {self.closest_person!r} ({self.score:.3f}) than to {self.person!r}",
            "low_quality": f"quality {self.score:.1f} under the floor",
            "not_a_face": f"probably not a face (faceness {self.score:.3f}, low detector score)",
            "duplicate": f"near-duplicate of a sample of {self.closest_person!r} (cosine {self.score:.3f})",
        }[self.reason]
        return f"{self.person}: sample {self.sample_id} ({self.source_path or 'no source photo'}): {self.reason}: {what}"


@dataclass
class CheckReport:
    """What ``enroll check`` found.

    Attributes:
        people: people in the gallery.
        samples: samples in the gallery.
        unchecked: samples without a vector for the current embedder (only quality and
            same-photo duplicates could be checked; ``facerec embed`` fixes that).
        flagged: the suspicious samples, by person then sample id.
    """

    people: int
    samples: int
    unchecked: int = 0
    flagged: list[Flag] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"people": self.people, "samples": self.samples, "flagged": [f.to_json() for f in self.flagged]}


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one new photo: ``reason`` is ``None`` when it may enter."""

    reason: Reason | None
    closest_person: str | None = None
    score: float = 0.0
    message: str = ""


class Profile:
    """Per-person sums of unit vectors: own similarities leave-one-out, templates, mean face.

    Args:
        names: owner of each vector.
        vectors: ``(n, d)`` unit rows.
    """

    def __init__(self, names: Sequence[str], vectors: np.ndarray) -> None:
        vec = np.asarray(vectors, np.float32)
        self.people, inverse = np.unique(np.asarray(list(names), dtype=object), return_inverse=True)
        self.inverse = inverse.reshape(-1).astype(np.int64)
        self.row = {str(p): i for i, p in enumerate(self.people)}
        d = vec.shape[1] if vec.ndim == 2 and len(vec) else 0
        self.sums = np.zeros((len(self.people), d), np.float64)
        if len(vec):
            np.add.at(self.sums, self.inverse, vec.astype(np.float64))
        self.counts = np.bincount(self.inverse, minlength=len(self.people))
        self.templates = _unit(self.sums).astype(np.float32)
        mean = self.templates.mean(0) if len(self.templates) else np.zeros(d)
        self.mean_face: np.ndarray | None = (
            _unit(mean[None, :])[0].astype(np.float32) if len(self.people) >= FACENESS_MIN_PEOPLE else None)

    def faceness(self, vec: np.ndarray) -> np.ndarray:
        """Cosine of each row to the mean face (``+inf`` when the gallery is too small to tell)."""
        if self.mean_face is None:
            return np.full(len(vec), np.inf, np.float32)
        return np.asarray(vec, np.float32) @ self.mean_face

    def faceness_without_own(self, vec: np.ndarray) -> np.ndarray:
        """:meth:`faceness` of the gallery's own rows (in :attr:`inverse` order) against the mean
        face of the other people, so a sample never vouches for itself."""
        if self.mean_face is None:
            return np.full(len(vec), np.inf, np.float32)
        rest = _unit(self.templates.astype(np.float64).sum(0)[None, :] - self.templates[self.inverse])
        return np.einsum("ij,ij->i", np.asarray(vec, np.float64), rest).astype(np.float32)

    def own_similarity(self, person: str, vec: np.ndarray, *, member: bool) -> float | None:
        """Cosine of ``vec`` to the mean of ``person``'s samples (without ``vec`` itself when
        ``member``); ``None`` when there is no other sample."""
        i = self.row.get(person)
        if i is None:
            return None
        rest = self.sums[i] - (vec if member else 0.0)
        if self.counts[i] - (1 if member else 0) < 1:
            return None
        return float(np.dot(vec, _unit(rest[None, :])[0]))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_gallery(store: GalleryBackend, key: EmbedderKey, rules: CheckRules, *, index: IndexKind = "auto",
                  index_min_size: int = 200_000,
                  crop_score: Callable[[int], float] | None = None) -> CheckReport:
    """Examine every sample of a gallery (see the module docstring for the reasons).

    Args:
        store: any gallery backend.
        key: the embedder whose vectors are compared.
        rules: the thresholds.
        index, index_min_size: accepted with the ``gallery.index`` setting; the check is exact
            BLAS products at every size (see the module docstring).
        crop_score: detector score of a sample's stored crop by id; asked only for the
            few samples whose faceness is already low (``None``: faceness alone decides).

    Returns:
        The report; samples without a vector are counted in ``unchecked``.
    """
    samples = store.samples()
    info = {s.id: s for s in samples}
    people = store.people()
    report = CheckReport(people=len(people), samples=len(samples))
    ids, names, vec, _ = store.vectors(key)
    report.unchecked = len(samples) - len(ids)
    found: dict[int, Flag] = {}

    def flag(sid: int, reason: Reason, closest: str | None, score: float) -> None:
        old = found.get(sid)
        if old is None or REASONS.index(reason) < REASONS.index(old.reason):
            s = info[sid]
            found[sid] = Flag(s.person, sid, s.source_path, reason, closest, float(score))

    for s in samples:
        if s.quality < rules.min_quality:
            flag(s.id, "low_quality", None, s.quality)
    by_sha: dict[str, list[int]] = {}
    for s in samples:
        by_sha.setdefault(s.sha256, []).append(s.id)
    for group in by_sha.values():
        for sid in sorted(group)[1:]:  # the first copy stays unflagged: removing the others resolves it
            flag(sid, "duplicate", info[sorted(group)[0]].person, 1.0)

    if len(ids):
        prof = Profile(names, vec)
        own_sum = prof.sums[prof.inverse]
        rest_n = prof.counts[prof.inverse] - 1
        rest = _unit(own_sum - vec.astype(np.float64))
        own = np.where(rest_n > 0, np.einsum("ij,ij->i", vec.astype(np.float64), rest), np.nan)
        scan = _scan(prof, np.asarray(vec, np.float32), rules.duplicate_similarity)
        other = [None if j < 0 else str(prof.people[j]) for j in scan.other.tolist()]
        other_sim = scan.other_sim
        face = prof.faceness_without_own(vec)
        check_face = len(prof.people) >= CHECK_FACENESS_MIN_PEOPLE
        for i, sid in enumerate(ids.tolist()):
            if (check_face and face[i] < rules.faceness_below
                    and (crop_score is None or crop_score(sid) < rules.crop_score_below)):
                flag(sid, "not_a_face", None, float(face[i]))
            if rest_n[i] > 0 and other[i] is not None and other_sim[i] > own[i] + rules.margin:
                flag(sid, "closer_to_other", other[i], float(other_sim[i]))
            elif rest_n[i] > 0 and own[i] < rules.outlier_below:
                near = other[i] if other[i] is not None and other_sim[i] >= rules.outlier_below else None
                flag(sid, "outlier", near, float(own[i]))
        _own_duplicates(ids, names, vec, rules, flag, prof)
        for i in np.flatnonzero(scan.dup >= 0).tolist():
            flag(int(ids[i]), "duplicate", names[int(scan.dup[i])], float(scan.dup_sim[i]))
    report.flagged = sorted(found.values(), key=lambda f: (f.person, f.sample_id))
    return report


@dataclass
class _Scan:
    """What one pass of every sample against every person template finds.

    Attributes:
        other: per sample, the row (in :attr:`Profile.people`) of the most similar other
            person's template; -1 where there is no other person.
        other_sim: its cosine (-1 where none).
        dup: per sample, the most similar sample of another person when their cosine is at
            least the duplicate threshold (lowest index on ties); -1 where none.
        dup_sim: that cosine.
    """

    other: np.ndarray
    other_sim: np.ndarray
    dup: np.ndarray
    dup_sim: np.ndarray


def _block_rows(people: int) -> int:
    """Samples per block so that a block of cosines stays under :data:`BLOCK_FLOATS`."""
    return int(max(16, min(BATCH, BLOCK_FLOATS // max(people, 1))))


def _scan(prof: Profile, vec: np.ndarray, duplicate_similarity: float) -> _Scan:
    """Every sample against every person template in blocks of samples (exact BLAS products,
    ``samples x people x d`` flops, memory bounded by :data:`BLOCK_FLOATS`), giving the nearest
    other person and the candidates for cross-person near-duplicates in the same pass.

    The duplicate search is exact without comparing all pairs of samples: angles between unit
    vectors obey the triangle inequality, so a sample ``u`` within angle ``delta`` (the
    duplicate threshold) of a sample of person ``q`` lies within ``R_q + delta`` of ``q``'s
    template, where ``R_q`` is the widest angle between ``q``'s samples and their template.
    Only the people passing that bound (a handful per sample on real galleries) have their
    samples compared one by one. The bound loosens as the threshold falls (at 0.5 on
    synthetic people most pairs become candidates and the check is several times slower);
    ``gallery.duplicate_similarity`` is 0.98 by default.
    """
    n, people = len(vec), len(prof.people)
    out = _Scan(np.full(n, -1, np.int64), np.full(n, -1.0, np.float32),
                np.full(n, -1, np.int64), np.full(n, -1.0, np.float32))
    if not n or not people:
        return out
    templates = prof.templates
    own_cos = np.einsum("ij,ij->i", vec, templates[prof.inverse])
    radius = np.zeros(people, np.float64)  # widest angle of each person's samples to their template
    np.maximum.at(radius, prof.inverse, np.arccos(np.clip(own_cos.astype(np.float64), -1.0, 1.0)))
    delta = float(np.arccos(np.clip(duplicate_similarity, -1.0, 1.0)))
    # ANGLE_SLACK absorbs float32 rounding (arccos is steep near 1); a wider bound only adds candidates
    reach = np.cos(np.minimum(radius + delta + ANGLE_SLACK, np.pi)).astype(np.float32)
    order = np.argsort(prof.inverse, kind="stable")  # samples grouped by person, in id order
    starts = np.r_[0, np.cumsum(prof.counts)[:-1]].astype(np.int64)
    counts = prof.counts.astype(np.int64)
    step = _block_rows(people)
    for b in range(0, n, step):
        block = vec[b : b + step] @ templates.T
        rows = np.arange(len(block))
        mine = prof.inverse[b : b + step]
        block[rows, mine] = -np.inf  # own person: not "other"; its pairs are _own_duplicates'
        j = np.argmax(block, axis=1)
        best = block[rows, j]
        ok = np.isfinite(best)
        out.other[b : b + step][ok], out.other_sim[b : b + step][ok] = j[ok], best[ok]
        near = block >= reach[None, :]
        some = np.flatnonzero(near.any(axis=1))  # most samples have no candidate at all
        qi, qp = np.nonzero(near[some])
        _pair_duplicates(vec, some[qi] + b, qp, order, starts, counts, duplicate_similarity, out)
    return out


def _pair_duplicates(vec: np.ndarray, sample: np.ndarray, person: np.ndarray, order: np.ndarray,
                     starts: np.ndarray, counts: np.ndarray, threshold: float, out: _Scan) -> None:
    """Compare each ``sample`` with every sample of the matching ``person`` (in chunks of at most
    :data:`BLOCK_FLOATS` / d pairs) and keep, per sample, its most similar one at or above ``threshold``."""
    if not len(sample):
        return
    d = max(vec.shape[1], 1)
    cum = np.cumsum(counts[person])
    chunk = max(1, BLOCK_FLOATS // d)
    lo = 0
    while lo < len(sample):
        hi = max(lo + 1, int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + chunk, side="right")))
        c = counts[person[lo:hi]]
        u = np.repeat(sample[lo:hi], c)
        first = np.repeat(starts[person[lo:hi]] - (np.cumsum(c) - c), c)
        v = order[first + np.arange(int(c.sum()))]
        sim = np.einsum("ij,ij->i", vec[u], vec[v])
        keep = sim >= threshold
        u, v, sim = u[keep], v[keep], sim[keep]
        # with this chunk's pairs, the best so far: per sample the highest cosine, then the lowest index
        had = np.flatnonzero(out.dup >= 0)
        u, v, sim = np.r_[u, had], np.r_[v, out.dup[had]], np.r_[sim, out.dup_sim[had]]
        k = np.lexsort((v, -sim, u))
        k = k[np.r_[True, u[k][1:] != u[k][:-1]]] if len(k) else k
        out.dup[u[k]], out.dup_sim[u[k]] = v[k], sim[k]
        lo = hi


def _own_duplicates(ids: np.ndarray, names: list[str], vec: np.ndarray, rules: CheckRules,
                    flag: Callable[[int, Reason, str | None, float], None], prof: Profile) -> None:
    """Flag the later sample of every pair of one person with a cosine of at least
    ``duplicate_similarity`` (their own pairwise products: a few samples each)."""
    order = np.argsort(prof.inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(prof.inverse[order]) != 0])
    ends = np.r_[starts[1:], len(order)]
    for a, b in zip(starts.tolist(), ends.tolist()):
        rows = order[a:b]
        if len(rows) < 2:
            continue
        s = vec[rows] @ vec[rows].T
        np.fill_diagonal(s, -1.0)
        for x, y in zip(*np.nonzero(np.triu(s >= rules.duplicate_similarity))):
            later = int(max(ids[rows[x]], ids[rows[y]]))
            flag(later, "duplicate", names[rows[x]], float(s[x, y]))


def judge_new(prof: Profile, person: str, vec: np.ndarray, rules: CheckRules, *,
              detector_score: float | None = None) -> Verdict:
    """The check's rule for a photo about to become a sample of ``person``.

    ``vec`` is its unit vector; ``prof`` the gallery as it is. Refused: a doubtful face
    (low ``detector_score`` and low faceness), a photo closer to another person than to
    ``person``'s samples by more than the margin (and recognised as that other person), an
    outlier of ``person``'s samples once they have two (one sample alone is too noisy a
    reference: on LFW it refused 4 % of good second photos), and the first photo of a new
    person that matches someone else beyond :attr:`CheckRules.new_person_above`. Simulated
    on LFW (100 people x 3 photos plus 20 wrong ones, shuffled, 6 orders) it refused 0.7 % of
    the good photos and 65 % of the wrong ones; ``enroll check`` finds the rest afterwards.
    """
    v = np.asarray(vec, np.float32).reshape(-1)
    face = float(prof.faceness(v[None, :])[0])
    if detector_score is not None and detector_score < rules.detector_score_below and face < rules.faceness_below:
        return Verdict("not_a_face", None, face,
                       f"probably not a face (detector score {detector_score:.2f}, faceness {face:.3f})")
    own = prof.own_similarity(person, v, member=False)
    closest, best = None, -1.0
    if len(prof.templates):
        sims = prof.templates @ v
        if person in prof.row:
            sims[prof.row[person]] = -np.inf
        j = int(np.argmax(sims))
        if np.isfinite(sims[j]):
            closest, best = str(prof.people[j]), float(sims[j])
    if own is None:
        if closest is not None and best >= rules.new_person_above:
            return Verdict("closer_to_other", closest, best,
                           f"looks like the enrolled {closest!r} ({best:.3f}); the same person under another name?")
        return Verdict(None, closest, best)
    if closest is not None and best > own + rules.margin and best >= rules.recognize_above:
        return Verdict("closer_to_other", closest, best,
                       f"closer to {closest!r} ({best:.3f}) than to {person!r} ({own:.3f}); wrong person?")
    if own < rules.outlier_below and prof.counts[prof.row[person]] >= 2:
        return Verdict("outlier", closest if best >= rules.outlier_below else None, own,
                       f"far from {person!r}'s other samples (cosine {own:.3f} < {rules.outlier_below:.3f})")
    return Verdict(None, closest, best)

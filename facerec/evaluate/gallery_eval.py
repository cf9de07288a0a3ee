"""Leave-one-out checks of a gallery: is every sample closest to its own person?

Each sample is compared with its own person's template built *without it* (a genuine
score) and with every other person's full template (impostor scores). From that:

* the closest pair of different people (their templates' similarity),
* the lowest genuine score (the sample least like the rest of its person),
* samples that look mislabelled: closer to another person than to their own,
* the threshold range that separates genuine from impostor scores, or where they overlap.

People with a single sample have no leave-one-out genuine score; their samples still
count as impostors for everyone else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from facerec.evaluate.identify import TEMPLATES


@dataclass(frozen=True)
class SampleCheck:
    """One sample's leave-one-out result.

    Attributes:
        sample: sample id or photo path.
        person: its label.
        genuine: similarity to its own person without it (``None``: only sample).
        nearest_other: the most similar other person.
        other: similarity to that person.
    """

    sample: str
    person: str
    genuine: float | None
    nearest_other: str | None
    other: float | None

    @property
    def suspect(self) -> bool:
        """Closer to another person than to its own."""
        return self.genuine is not None and self.other is not None and self.other > self.genuine


@dataclass
class GalleryCheck:
    """The result of :func:`check_gallery`.

    Attributes:
        people, samples: counts.
        template: how persons were compared.
        closest_people: ``(person_a, person_b, similarity)`` of the most similar templates.
        lowest_genuine: the sample with the lowest leave-one-out genuine score.
        suspects: samples closer to another person than to their own, worst first.
        separable: every genuine score is above every impostor score.
        threshold_low, threshold_high: when separable, any threshold in
            ``(threshold_low, threshold_high]`` accepts every genuine sample and rejects every
            impostor; otherwise the overlap ``[lowest genuine, highest impostor]``.
        genuine_below_overlap_top: genuine scores ``<= highest impostor``.
        impostor_above_overlap_bottom: impostor scores ``>= lowest genuine``.
        checks: every sample's result.
    """

    people: int
    samples: int
    template: str
    closest_people: tuple[str, str, float] | None
    lowest_genuine: SampleCheck | None
    suspects: list[SampleCheck]
    separable: bool | None
    threshold_low: float | None
    threshold_high: float | None
    genuine_below_overlap_top: int = 0
    impostor_above_overlap_bottom: int = 0
    checks: list[SampleCheck] = field(default_factory=list)

    def to_dict(self, with_checks: bool = False) -> dict:
        d = asdict(self)
        if not with_checks:
            d.pop("checks")
        return d

    def genuine_scores(self) -> np.ndarray:
        return np.array([c.genuine for c in self.checks if c.genuine is not None], np.float64)

    def impostor_scores(self) -> np.ndarray:
        return np.array([c.other for c in self.checks if c.other is not None], np.float64)


def _weights(names_idx: np.ndarray, quality: np.ndarray | None, template: str, n_people: int) -> np.ndarray:
    """Per-sample template weights, as :func:`facerec.gallery.search.build_templates` uses them."""
    if template != "quality_mean" or quality is None:
        return np.ones(len(names_idx))
    w = np.clip(np.asarray(quality, np.float64).reshape(-1), 0.0, None)
    totals = np.bincount(names_idx, weights=w, minlength=n_people)
    return np.where(totals[names_idx] > 0, w, 1.0)


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def loo_scores(vectors: np.ndarray, names: list[str], quality: np.ndarray | None = None,
               template: str = "mean", chunk: int = 2048) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Leave-one-out similarities of every sample to every person.

    Returns:
        ``(people, scores (n, P), own (n,))``: ``scores[i, own[i]]`` is the similarity to
        the sample's own person without the sample itself (``-inf`` where it is the
        person's only sample); other columns use the full templates.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")
    v = np.asarray(vectors, np.float64)
    people = sorted(set(names))
    col = {p: i for i, p in enumerate(people)}
    own = np.array([col[n] for n in names], np.int64)
    n, P = len(v), len(people)
    counts = np.bincount(own, minlength=P)
    out = np.empty((n, P), np.float64)
    if template == "max":
        for s in range(0, n, chunk):
            sims = v[s : s + chunk] @ v.T
            rows = np.arange(s, min(s + chunk, n))
            sims[rows - s, rows] = -np.inf  # a sample is not its own neighbour
            for j in range(P):
                out[s : s + chunk, j] = sims[:, own == j].max(1)
        return people, out, own
    w = _weights(own, quality, template, P)
    sums = np.zeros((P, v.shape[1]))
    np.add.at(sums, own, v * w[:, None])
    templates = _unit(sums)
    for s in range(0, n, chunk):
        out[s : s + chunk] = v[s : s + chunk] @ templates.T
    loo = _unit(sums[own] - v * w[:, None])
    genuine = np.einsum("ij,ij->i", v, loo)
    genuine[counts[own] < 2] = -np.inf
    out[np.arange(n), own] = genuine
    return people, out, own


def closest_people(vectors: np.ndarray, names: list[str], quality: np.ndarray | None = None,
                   template: str = "mean") -> tuple[str, str, float] | None:
    """The two different people whose templates (or, for ``max``, samples) are most alike."""
    people = sorted(set(names))
    if len(people) < 2:
        return None
    v = np.asarray(vectors, np.float64)
    col = {p: i for i, p in enumerate(people)}
    own = np.array([col[n] for n in names], np.int64)
    if template == "max":
        sims = v @ v.T
        sims[own[:, None] == own[None, :]] = -np.inf
        i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
        a, b = sorted((names[i], names[j]))
        return a, b, float(sims[i, j])
    w = _weights(own, quality, template, len(people))
    sums = np.zeros((len(people), v.shape[1]))
    np.add.at(sums, own, v * w[:, None])
    t = _unit(sums)
    sims = t @ t.T
    np.fill_diagonal(sims, -np.inf)
    i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
    return people[min(i, j)], people[max(i, j)], float(sims[i, j])


def _margin(c: SampleCheck) -> float:
    """Own minus nearest-other similarity (negative for a suspect; most negative first)."""
    return (c.genuine if c.genuine is not None else 0.0) - (c.other if c.other is not None else 0.0)


def check_gallery(vectors: np.ndarray, names: list[str], samples: list[str], quality: np.ndarray | None = None,
                  template: str = "mean") -> GalleryCheck:
    """Leave-one-out checks of labelled vectors (see the module docstring).

    Args:
        vectors: ``(n, d)`` unit vectors.
        names: person of each vector.
        samples: a label per vector for the report (sample id or photo path).
        quality: per-vector quality (used by ``quality_mean``).
        template: ``mean``, ``quality_mean`` or ``max``.
    """
    n = len(names)
    if len(samples) != n or len(vectors) != n:
        raise ValueError(f"vectors ({len(vectors)}), names ({n}) and samples ({len(samples)}) must have the same length")
    if n == 0:
        return GalleryCheck(0, 0, template, None, None, [], None, None, None)
    people, scores, own = loo_scores(vectors, names, quality, template)
    checks: list[SampleCheck] = []
    for i in range(n):
        g = scores[i, own[i]]
        row = scores[i].copy()
        row[own[i]] = -np.inf
        j = int(np.argmax(row)) if len(people) > 1 else -1
        checks.append(SampleCheck(
            str(samples[i]), names[i],
            float(g) if np.isfinite(g) else None,
            people[j] if j >= 0 else None,
            float(row[j]) if j >= 0 else None,
        ))
    gen = [(c.genuine, c) for c in checks if c.genuine is not None]
    lowest = min(gen, key=lambda gc: gc[0])[1] if gen else None
    suspects = sorted((c for c in checks if c.suspect), key=_margin)
    imp = np.array([c.other for c in checks if c.other is not None])
    gs = np.array([g for g, _ in gen])
    separable = lo = hi = None
    below = above = 0
    if gs.size and imp.size:
        g_min, i_max = float(gs.min()), float(imp.max())
        separable = g_min > i_max
        if separable:
            lo, hi = i_max, g_min
        else:
            lo, hi = g_min, i_max
            below = int((gs <= i_max).sum())
            above = int((imp >= g_min).sum())
    return GalleryCheck(
        people=len(people), samples=n, template=template,
        closest_people=closest_people(vectors, names, quality, template),
        lowest_genuine=lowest, suspects=suspects, separable=separable,
        threshold_low=lo, threshold_high=hi,
        genuine_below_overlap_top=below, impostor_above_overlap_bottom=above, checks=checks,
    )


def describe(check: GalleryCheck, max_suspects: int = 10) -> list[str]:
    """Human-readable lines for the terminal."""
    lines = [f"{check.people} people, {check.samples} samples, template {check.template}"]
    if check.closest_people:
        a, b, s = check.closest_people
        lines.append(f"closest different people: {a} and {b}, similarity {s:.3f}")
    if check.lowest_genuine:
        c = check.lowest_genuine
        lines.append(f"lowest genuine similarity: {c.genuine:.3f} for {c.sample} ({c.person})")
    if check.separable is None:
        lines.append("threshold range: undefined (needs two people and a person with two samples)")
    elif check.separable:
        lines.append(f"separable: any threshold in ({check.threshold_low:.3f}, {check.threshold_high:.3f}] "
                     "accepts every sample as its own person and rejects every other person")
    else:
        lines.append(f"overlap: genuine and impostor scores overlap in [{check.threshold_low:.3f}, "
                     f"{check.threshold_high:.3f}] ({check.genuine_below_overlap_top} genuine scores at or below "
                     f"the top impostor, {check.impostor_above_overlap_bottom} impostor scores at or above the "
                     "lowest genuine)")
    if check.suspects:
        lines.append(f"{len(check.suspects)} sample(s) closer to another person than to their own:")
        for c in check.suspects[:max_suspects]:
            lines.append(f"  {c.sample} ({c.person}): own {c.genuine:.3f} < {c.nearest_other} {c.other:.3f}")
        if len(check.suspects) > max_suspects:
            lines.append(f"  ... and {len(check.suspects) - max_suspects} more (--json lists all)")
    else:
        lines.append("no sample is closer to another person than to its own")
    return lines

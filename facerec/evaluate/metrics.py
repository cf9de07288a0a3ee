"""Verification and identification metrics in plain NumPy.

Conventions used by every function here:

* A *score* is a similarity: higher means "more likely the same person". A pair is
  accepted when ``score >= threshold``.
* ``labels`` are booleans, ``True`` for a genuine (same person) pair.
* Equal scores are always decided together: a threshold cannot split a tie, so every
  curve moves through a group of tied scores in one step (a tie of one genuine and one
  impostor pair contributes a diagonal segment to the ROC, i.e. half credit to the AUC).
* NaN or infinite scores are rejected with :class:`ValueError`: they usually mean a
  failed embedding, and silently sorting them to one end would change the result.

Rates that need both classes (FAR needs impostor pairs, TAR needs genuine pairs) are
undefined when a class is absent; the functions that need them raise ``ValueError``
saying which class is missing, and :func:`verification_report` leaves them ``None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: FAR targets reported by default.
DEFAULT_FARS = (1e-2, 1e-3)


def check_scores(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert scores and labels to 1-D float64 / bool arrays.

    Raises:
        ValueError: empty input, NaN/inf scores, or labels of another length.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError("no scores given")
    bad = ~np.isfinite(s)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{int(bad.sum())} score(s) are NaN or infinite (first at index {first})")
    y = np.asarray(labels).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels must have the same length as scores ({s.size}), got {y.size}")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be booleans or 0/1")
        y = y.astype(bool)
    return s, y


def _require_both(y: np.ndarray, what: str) -> None:
    if not y.any():
        raise ValueError(f"{what} needs genuine pairs, but every pair is an impostor pair")
    if y.all():
        raise ValueError(f"{what} needs impostor pairs, but every pair is a genuine pair")


@dataclass(frozen=True)
class Roc:
    """A ROC curve, one point per distinct threshold, from "accept nothing" to "accept all".

    Attributes:
        thresholds: ``(m,)`` decreasing; point ``i`` accepts ``score >= thresholds[i]``.
            ``thresholds[0]`` is just above the highest score (accepts nothing).
        far: ``(m,)`` false accept rate, impostor pairs accepted / impostor pairs.
        tar: ``(m,)`` true accept rate, genuine pairs accepted / genuine pairs.
        n_genuine: number of genuine pairs.
        n_impostor: number of impostor pairs.
    """

    thresholds: np.ndarray
    far: np.ndarray
    tar: np.ndarray
    n_genuine: int
    n_impostor: int

    @property
    def frr(self) -> np.ndarray:
        """False reject rate ``1 - tar``."""
        return 1.0 - self.tar


def _accept_counts(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (decreasing) and cumulative genuine / impostor counts accepted."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # last index of each group of equal scores: a threshold includes the whole group
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = np.cumsum(~y_sorted)[last]
    return s_sorted[last], tp, fp


def roc_curve(scores, labels) -> Roc:
    """ROC over every distinct threshold.

    Raises:
        ValueError: bad scores, or only one class present.
    """
    s, y = check_scores(scores, labels)
    _require_both(y, "a ROC curve")
    thr, tp, fp = _accept_counts(s, y)
    n_gen, n_imp = int(y.sum()), int((~y).sum())
    top = np.nextafter(thr[0], np.inf)
    return Roc(
        thresholds=np.r_[top, thr],
        far=np.r_[0.0, fp / n_imp],
        tar=np.r_[0.0, tp / n_gen],
        n_genuine=n_gen,
        n_impostor=n_imp,
    )


def auc(roc: Roc) -> float:
    """Area under the ROC (trapezoids; equals P(genuine > impostor) + P(tie) / 2)."""
    return float(np.sum(np.diff(roc.far) * (roc.tar[1:] + roc.tar[:-1]) / 2.0))


def eer(roc: Roc) -> tuple[float, float]:
    """Equal error rate, linearly interpolated where FAR and FRR cross.

    Returns:
        ``(eer, threshold)``: the rate in [0, 1] and the threshold of the first ROC point
        where FAR >= FRR (the operating point closest to the crossing from the strict side).
    """
    d = roc.far - roc.frr  # -1 at "accept nothing", increasing to +1 at "accept all"
    i = int(np.argmax(d >= 0))
    if i == 0 or d[i] == 0:
        return float(roc.far[i]), float(roc.thresholds[i])
    t = d[i - 1] / (d[i - 1] - d[i])
    rate = roc.far[i - 1] + t * (roc.far[i] - roc.far[i - 1])
    return float(rate), float(roc.thresholds[i])


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold and what it achieves.

    Attributes:
        target_far: the FAR asked for.
        threshold: accept ``score >= threshold``; the lowest threshold whose FAR does not
            exceed the target (so the most genuine pairs accepted under that constraint).
        far: FAR achieved on the data (``<= target_far``).
        tar: TAR achieved on the data.
        resolvable: False when there are fewer than ``1 / target_far`` impostor pairs, so
            the target cannot be measured (the point is then "accept no impostor").
    """

    target_far: float
    threshold: float
    far: float
    tar: float
    resolvable: bool


def tar_at_far(roc: Roc, target_far: float) -> OperatingPoint:
    """TAR at the lowest threshold whose FAR is at most ``target_far``.

    Raises:
        ValueError: ``target_far`` outside [0, 1].
    """
    if not (0.0 <= target_far <= 1.0) or not np.isfinite(target_far):
        raise ValueError(f"target FAR must be in [0, 1], got {target_far}")
    i = int(np.flatnonzero(roc.far <= target_far + 1e-12)[-1])  # far is non-decreasing
    return OperatingPoint(
        target_far=float(target_far),
        threshold=float(roc.thresholds[i]),
        far=float(roc.far[i]),
        tar=float(roc.tar[i]),
        resolvable=roc.n_impostor * target_far >= 1.0,
    )


def best_threshold(scores, labels) -> tuple[float, float]:
    """The threshold with the highest accuracy, and that accuracy.

    Candidate thresholds are the midpoints between consecutive distinct scores plus one
    below the lowest and one above the highest, so the chosen threshold lies in the
    middle of the gap it exploits (this generalises better to held-out folds than the
    score of a training pair). Among equally accurate thresholds the lowest-index
    candidate in score order wins, i.e. the highest threshold.

    Works with a single class (all genuine -> threshold below every score).

    Returns:
        ``(accuracy, threshold)``.
    """
    s, y = check_scores(scores, labels)
    thr, tp, fp = _accept_counts(s, y)
    n_imp = int((~y).sum())
    # candidate k accepts the first k distinct scores (k = 0 accepts nothing)
    correct = np.r_[n_imp, tp + (n_imp - fp)]
    k = int(np.argmax(correct))
    if k == 0:
        t = thr[0] + max(1e-6, abs(thr[0]) * 1e-6)
    elif k == len(thr):
        t = thr[-1] - max(1e-6, abs(thr[-1]) * 1e-6)
    else:
        t = (thr[k - 1] + thr[k]) / 2.0
    return float(correct[k] / s.size), float(t)


def accuracy_at(scores, labels, threshold: float) -> float:
    """Fraction of pairs decided correctly by ``score >= threshold``."""
    s, y = check_scores(scores, labels)
    return float(np.mean((s >= threshold) == y))


def stratified_folds(labels, n_folds: int = 10) -> np.ndarray:
    """Fold index per pair: genuine and impostor pairs each split into contiguous blocks.

    Keeps the list order (LFW lists group pairs by person), giving every fold the same
    share of genuine and impostor pairs (within one).
    """
    y = np.asarray(labels, bool).reshape(-1)
    folds = np.empty(y.size, np.int64)
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        folds[idx] = np.arange(idx.size) * n_folds // max(idx.size, 1)
    return folds


@dataclass(frozen=True)
class KFoldResult:
    """Cross-validated accuracy.

    Attributes:
        mean: mean accuracy over folds.
        std: standard deviation over folds (``ddof=0``, as most published LFW code).
        fold_accuracy: per-fold accuracy.
        fold_threshold: threshold chosen on the other folds, per fold.
    """

    mean: float
    std: float
    fold_accuracy: list[float]
    fold_threshold: list[float]


def kfold_accuracy(scores, labels, folds=None, n_folds: int = 10) -> KFoldResult:
    """Accuracy by the LFW protocol: each fold is decided with the threshold that is best
    on the other folds together.

    Args:
        scores: similarities.
        labels: genuine flags.
        folds: fold index per pair (e.g. from a View 2 list); ``None`` uses
            :func:`stratified_folds` with ``n_folds``.
        n_folds: folds when ``folds`` is ``None``.

    Raises:
        ValueError: bad scores, or fewer than two non-empty folds.
    """
    s, y = check_scores(scores, labels)
    f = stratified_folds(y, n_folds) if folds is None else np.asarray(folds).reshape(-1)
    if f.shape != s.shape:
        raise ValueError(f"folds must have the same length as scores ({s.size}), got {f.size}")
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError(f"k-fold accuracy needs at least 2 folds, got {ids.size}")
    accs, thrs = [], []
    for k in ids:
        test = f == k
        _, t = best_threshold(s[~test], y[~test])
        accs.append(accuracy_at(s[test], y[test], t))
        thrs.append(t)
    return KFoldResult(float(np.mean(accs)), float(np.std(accs)), accs, thrs)


@dataclass
class VerificationReport:
    """Everything ``facerec eval verify`` reports about a set of scored pairs.

    Rates that need a class that is absent are ``None``.
    """

    pairs: int
    genuine: int
    impostor: int
    best_accuracy: float
    best_threshold: float
    kfold: KFoldResult | None
    auc: float | None
    eer: float | None
    eer_threshold: float | None
    operating_points: list[OperatingPoint]

    def to_dict(self) -> dict:
        return asdict(self)


def verification_report(scores, labels, folds=None, fars=DEFAULT_FARS) -> VerificationReport:
    """Compute every verification metric that the data defines.

    Args:
        folds: fold index per pair for k-fold accuracy; ``None`` -> 10 stratified folds
            when there are at least 20 pairs, otherwise no k-fold result.
        fars: FAR targets for :func:`tar_at_far`.
    """
    s, y = check_scores(scores, labels)
    acc, thr = best_threshold(s, y)
    kf = None
    if folds is not None or s.size >= 20:
        kf = kfold_accuracy(s, y, folds)
    n_gen, n_imp = int(y.sum()), int((~y).sum())
    area = e = e_thr = None
    points: list[OperatingPoint] = []
    if n_gen and n_imp:
        roc = roc_curve(s, y)
        area = auc(roc)
        e, e_thr = eer(roc)
        points = [tar_at_far(roc, f) for f in fars]
    return VerificationReport(s.size, n_gen, n_imp, acc, thr, kf, area, e, e_thr, points)


# --------------------------------------------------------------------------------------
# open-set identification


def _check_identification(scores, mate) -> tuple[np.ndarray, np.ndarray]:
    sc = np.asarray(scores, np.float64)
    if sc.ndim != 2:
        raise ValueError(f"scores must be (probes, gallery identities), got shape {sc.shape}")
    if sc.shape[0] == 0:
        raise ValueError("no probes given")
    if sc.shape[1] == 0:
        raise ValueError("the gallery is empty")
    if not np.isfinite(sc).all():
        raise ValueError("scores contain NaN or infinite values")
    m = np.asarray(mate, np.int64).reshape(-1)
    if m.size != sc.shape[0]:
        raise ValueError(f"mate must have one entry per probe ({sc.shape[0]}), got {m.size}")
    if ((m < -1) | (m >= sc.shape[1])).any():
        raise ValueError("mate entries must be -1 (not enrolled) or a gallery column index")
    return sc, m


def mate_rank(scores, mate) -> np.ndarray:
    """Rank (1 = best) of each mated probe's true identity; ties count against it.

    Args:
        scores: ``(probes, identities)`` similarities.
        mate: ``(probes,)`` gallery column of each probe's identity, -1 when not enrolled.

    Returns:
        ``(mated probes,)`` ranks, in probe order.
    """
    sc, m = _check_identification(scores, mate)
    rows = np.flatnonzero(m >= 0)
    true = sc[rows, m[rows]]
    others_ge = (sc[rows] >= true[:, None]).sum(1) - 1
    return others_ge + 1


def rank_k_rate(scores, mate, k: int) -> float:
    """Closed-set identification rate at rank ``k`` over the mated probes.

    Raises:
        ValueError: no mated probes, or ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"rank must be >= 1, got {k}")
    r = mate_rank(scores, mate)
    if r.size == 0:
        raise ValueError("rank-k rates need probes of enrolled people, there are none")
    return float(np.mean(r <= k))


@dataclass(frozen=True)
class Det:
    """Open-set detection error trade-off: one point per distinct threshold.

    Attributes:
        thresholds: decreasing; a search answers its top candidate when its score is
            ``>= threshold``, otherwise "unknown". ``thresholds[0]`` answers nothing.
        fpir: false positive identification rate, non-mated searches that name someone.
        fnir: false negative identification rate, mated searches whose rank-1 answer is
            not the true identity or falls below the threshold.
        n_mated: mated searches.
        n_nonmated: non-mated searches.
    """

    thresholds: np.ndarray
    fpir: np.ndarray
    fnir: np.ndarray
    n_mated: int
    n_nonmated: int


def det_curve(scores, mate) -> Det:
    """FNIR and FPIR over every distinct top-1 score.

    Raises:
        ValueError: no mated or no non-mated probes.
    """
    sc, m = _check_identification(scores, mate)
    mated = m >= 0
    if not mated.any():
        raise ValueError("a DET curve needs probes of enrolled people, there are none")
    if mated.all():
        raise ValueError("a DET curve needs probes of people who are not enrolled, there are none")
    top = sc.max(1)
    # a mated search is a hit at threshold t when its true identity is the unique best
    # (ties go against it, as in mate_rank) and top >= t
    rank1 = np.zeros(len(sc), bool)
    rank1[mated] = mate_rank(sc, m) == 1
    # "genuine" = correct rank-1 mated hit; everything else accepted is an error of some kind
    thr, hits, _ = _accept_counts(top, rank1)
    _, nonmated_acc, _ = _accept_counts(top, ~mated)
    n_m, n_n = int(mated.sum()), int((~mated).sum())
    return Det(
        thresholds=np.r_[np.nextafter(thr[0], np.inf), thr],
        fpir=np.r_[0.0, nonmated_acc / n_n],
        fnir=np.r_[1.0, 1.0 - hits / n_m],
        n_mated=n_m,
        n_nonmated=n_n,
    )


@dataclass(frozen=True)
class IdentificationPoint:
    """FNIR at the lowest threshold whose FPIR does not exceed the target."""

    target_fpir: float
    threshold: float
    fpir: float
    fnir: float
    resolvable: bool


def fnir_at_fpir(det: Det, target_fpir: float) -> IdentificationPoint:
    """FNIR at the lowest threshold with FPIR <= ``target_fpir``.

    Raises:
        ValueError: ``target_fpir`` outside [0, 1].
    """
    if not (0.0 <= target_fpir <= 1.0) or not np.isfinite(target_fpir):
        raise ValueError(f"target FPIR must be in [0, 1], got {target_fpir}")
    i = int(np.flatnonzero(det.fpir <= target_fpir + 1e-12)[-1])
    return IdentificationPoint(
        float(target_fpir), float(det.thresholds[i]), float(det.fpir[i]), float(det.fnir[i]),
        det.n_nonmated * target_fpir >= 1.0,
    )


@dataclass
class IdentificationReport:
    """What ``facerec eval identify`` reports; ``None`` where the data defines nothing."""

    probes: int
    mated: int
    nonmated: int
    identities: int
    top1: float | None
    top5: float | None
    operating_points: list[IdentificationPoint]

    def to_dict(self) -> dict:
        return asdict(self)


def identification_report(scores, mate, fpirs=(0.01, 0.1)) -> IdentificationReport:
    """Top-1, top-5 (closed set, mated probes) and FNIR at the given FPIRs (open set)."""
    sc, m = _check_identification(scores, mate)
    mated = m >= 0
    top1 = top5 = None
    if mated.any():
        top1 = rank_k_rate(sc, m, 1)
        top5 = rank_k_rate(sc, m, 5)
    points: list[IdentificationPoint] = []
    if mated.any() and not mated.all():
        det = det_curve(sc, m)
        points = [fnir_at_fpir(det, f) for f in fpirs]
    return IdentificationReport(len(sc), int(mated.sum()), int((~mated).sum()), sc.shape[1], top1, top5, points)

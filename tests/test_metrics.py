"""Verification and identification metrics against small hand-computed cases.

Edge cases first: one class only, a single pair, ties, bad scores.
"""

from __future__ import annotations

import numpy as np
import pytest

from facerec.evaluate import metrics as M

# --------------------------------------------------------------------------------------
# edge cases


@pytest.mark.parametrize("bad", [[0.5, np.nan], [np.inf, 0.1], [-np.inf]])
def test_nan_and_inf_scores_are_rejected(bad):
    labels = [True] * len(bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        M.check_scores(bad, labels)
    with pytest.raises(ValueError, match="NaN or infinite"):
        M.best_threshold(bad, labels)


def test_empty_and_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="no scores"):
        M.check_scores([], [])
    with pytest.raises(ValueError, match="same length"):
        M.check_scores([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="booleans or 0/1"):
        M.check_scores([0.1], [2])


def test_all_genuine():
    s, y = [0.3, 0.7, 0.5], [True, True, True]
    acc, thr = M.best_threshold(s, y)
    assert acc == 1.0 and thr < 0.3
    with pytest.raises(ValueError, match="needs impostor pairs"):
        M.roc_curve(s, y)
    rep = M.verification_report(s, y)
    assert rep.impostor == 0 and rep.auc is None and rep.eer is None and rep.operating_points == []
    assert rep.best_accuracy == 1.0


def test_all_impostor():
    s, y = [0.3, 0.7, 0.5], [False, False, False]
    acc, thr = M.best_threshold(s, y)
    assert acc == 1.0 and thr > 0.7
    with pytest.raises(ValueError, match="needs genuine pairs"):
        M.roc_curve(s, y)
    assert M.verification_report(s, y).auc is None


def test_one_pair():
    acc, thr = M.best_threshold([0.42], [True])
    assert acc == 1.0 and thr < 0.42
    rep = M.verification_report([0.42], [True])
    assert rep.pairs == 1 and rep.kfold is None
    with pytest.raises(ValueError, match="at least 2 folds"):
        M.kfold_accuracy([0.42], [True])


def test_ties_between_classes_count_half():
    roc = M.roc_curve([0.5, 0.5], [True, False])
    # one threshold step takes both: the ROC goes straight from (0, 0) to (1, 1)
    np.testing.assert_allclose(roc.far, [0, 1])
    np.testing.assert_allclose(roc.tar, [0, 1])
    assert M.auc(roc) == pytest.approx(0.5)
    assert M.eer(roc)[0] == pytest.approx(0.5)
    acc, _ = M.best_threshold([0.5, 0.5], [True, False])
    assert acc == 0.5  # no threshold can split a tie


def test_ties_within_a_class_are_one_roc_point():
    roc = M.roc_curve([0.8, 0.8, 0.8, 0.1], [True, True, False, False])
    assert len(roc.thresholds) == 3  # "accept nothing", 0.8, 0.1
    np.testing.assert_allclose(roc.tar, [0, 1, 1])
    np.testing.assert_allclose(roc.far, [0, 0.5, 1])


def test_auc_equals_mann_whitney_with_ties(rng):
    s = rng.integers(0, 6, 200).astype(float)  # many ties on purpose
    y = rng.random(200) < 0.4
    g, i = s[y], s[~y]
    mw = ((g[:, None] > i[None]).sum() + 0.5 * (g[:, None] == i[None]).sum()) / (g.size * i.size)
    assert M.auc(M.roc_curve(s, y)) == pytest.approx(mw)


def test_bad_far_target_is_rejected():
    roc = M.roc_curve([0.9, 0.1], [True, False])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="target FAR"):
            M.tar_at_far(roc, bad)


# --------------------------------------------------------------------------------------
# hand-computed curves

SCORES = [0.9, 0.8, 0.7, 0.6]
LABELS = [True, False, True, False]


def test_roc_points():
    roc = M.roc_curve(SCORES, LABELS)
    assert roc.thresholds[0] > 0.9
    np.testing.assert_allclose(roc.thresholds[1:], [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(roc.tar, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(roc.far, [0, 0, 0.5, 0.5, 1])
    assert (roc.n_genuine, roc.n_impostor) == (2, 2)


def test_auc_and_eer_exact_crossing():
    roc = M.roc_curve(SCORES, LABELS)
    assert M.auc(roc) == pytest.approx(0.75)  # 3 of 4 genuine/impostor pairs ordered right
    rate, thr = M.eer(roc)
    assert rate == pytest.approx(0.5) and thr == pytest.approx(0.8)


def test_eer_interpolated():
    # sorted: .9 g, .8 i, .6 g, .5 i, .4 i -> FRR drops 0.5 -> 0 while FAR stays 1/3:
    # the crossing is a third of the way along that step, at 1/3
    roc = M.roc_curve([0.9, 0.6, 0.8, 0.5, 0.4], [True, True, False, False, False])
    rate, thr = M.eer(roc)
    assert rate == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.6)


def test_tar_at_far():
    roc = M.roc_curve([0.9, 0.6, 0.8, 0.5, 0.4], [True, True, False, False, False])
    p = M.tar_at_far(roc, 0.4)
    assert (p.threshold, p.far, p.tar, p.resolvable) == (pytest.approx(0.6), pytest.approx(1 / 3), 1.0, True)
    p = M.tar_at_far(roc, 0.1)  # no impostor may pass: only 0.9 is accepted
    assert (p.threshold, p.far, p.tar) == (pytest.approx(0.9), 0.0, 0.5)
    assert not p.resolvable  # 3 impostor pairs cannot measure 10%


def test_best_threshold_is_a_midpoint():
    acc, thr = M.best_threshold(SCORES, LABELS)
    assert acc == pytest.approx(0.75)
    assert thr == pytest.approx(0.85)
    assert M.accuracy_at(SCORES, LABELS, thr) == pytest.approx(0.75)


def test_kfold_uses_other_folds_for_the_threshold():
    # fold 0 alone picks 0.6 (mid of .9/.3), which rejects fold 1's genuine .4;
    # fold 1 alone picks 0.375, which decides fold 0 correctly
    s = [0.9, 0.3, 0.4, 0.35]
    y = [True, False, True, False]
    r = M.kfold_accuracy(s, y, folds=[0, 0, 1, 1])
    assert r.fold_accuracy == [1.0, 0.5]
    assert r.fold_threshold == [pytest.approx(0.375), pytest.approx(0.6)]
    assert (r.mean, r.std) == (pytest.approx(0.75), pytest.approx(0.25))


def test_stratified_folds_balance_classes():
    y = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    f = M.stratified_folds(y, 10)
    for k in range(10):
        assert (f[y] == k).sum() == 3 and (f[~y] == k).sum() == 3


def test_report_on_separable_data():
    rep = M.verification_report([0.9, 0.8, 0.2, 0.1] * 5, [True, True, False, False] * 5)
    assert rep.auc == 1.0 and rep.eer == 0.0 and rep.best_accuracy == 1.0
    assert rep.kfold is not None and rep.kfold.mean == 1.0
    assert [p.tar for p in rep.operating_points] == [1.0, 1.0]


# --------------------------------------------------------------------------------------
# identification

ID_SCORES = [[0.9, 0.2], [0.6, 0.5], [0.7, 0.1]]
ID_MATE = [0, 1, -1]  # probe 2 is not enrolled


def test_identification_edge_cases():
    with pytest.raises(ValueError, match="empty"):
        M.mate_rank(np.zeros((2, 0)), [-1, -1])
    with pytest.raises(ValueError, match="NaN"):
        M.mate_rank([[np.nan]], [0])
    with pytest.raises(ValueError, match="-1 .* or a gallery column"):
        M.mate_rank([[0.5]], [3])
    with pytest.raises(ValueError, match="not enrolled, there are none"):
        M.det_curve([[0.5]], [0])
    with pytest.raises(ValueError, match="enrolled people, there are none"):
        M.rank_k_rate([[0.5]], [-1], 1)
    rep = M.identification_report([[0.5]], [-1])  # only strangers: nothing but counts
    assert rep.top1 is None and rep.operating_points == []


def test_rank_ties_count_against_the_mate():
    assert M.mate_rank([[0.5, 0.5]], [0]).tolist() == [2]


def test_rank_k():
    assert M.mate_rank(ID_SCORES, ID_MATE).tolist() == [1, 2]
    assert M.rank_k_rate(ID_SCORES, ID_MATE, 1) == 0.5
    assert M.rank_k_rate(ID_SCORES, ID_MATE, 5) == 1.0


def test_det_and_fnir_at_fpir():
    det = M.det_curve(ID_SCORES, ID_MATE)
    # top scores: .9 (right mate), .7 (stranger), .6 (wrong person first)
    np.testing.assert_allclose(det.thresholds[1:], [0.9, 0.7, 0.6])
    np.testing.assert_allclose(det.fpir, [0, 0, 1, 1])
    np.testing.assert_allclose(det.fnir, [1, 0.5, 0.5, 0.5])
    p = M.fnir_at_fpir(det, 0.01)
    assert (p.threshold, p.fpir, p.fnir, p.resolvable) == (pytest.approx(0.9), 0.0, 0.5, False)
    rep = M.identification_report(ID_SCORES, ID_MATE)
    assert (rep.top1, rep.top5, rep.mated, rep.nonmated) == (0.5, 1.0, 2, 1)
    assert [q.fnir for q in rep.operating_points] == [0.5, 0.5]

"""Metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edgecrack.metrics import (
    choose_threshold,
    classification_report,
    confusion_matrix,
    per_class,
    pr_curve,
    roc_auc,
    roc_curve,
)

# Eight images, labels ["CD", "UD"], CD (index 0) is the cracked/positive class.
#   truth      CD   CD   CD   CD   UD   UD   UD   UD
#   p(CD)     .90  .80  .40  .60  .70  .20  .10  .30
# At threshold 0.5 on p(CD): predicted CD CD UD CD CD UD UD UD
#   CD: tp=3 fn=1 fp=1 -> P=3/4 R=3/4 F1=3/4;  UD: tp=3 fn=1 fp=1 -> P=R=F1=3/4
# ROC-AUC: of the 16 (CD, UD) pairs two are ranked wrong (.40 and .60 below .70) -> 14/16.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
P_CD = np.array([0.9, 0.8, 0.4, 0.6, 0.7, 0.2, 0.1, 0.3])
PROBS = np.stack([P_CD, 1 - P_CD], 1)
LABELS = ["CD", "UD"]


def test_confusion_matrix_rows_are_truth():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert cm.dtype == np.int64


def test_per_class_precision_recall_f1_by_hand():
    cm = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    pc = per_class(cm)
    # class 0: tp 1, fp 1, fn 1 -> 1/2, 1/2, 1/2
    assert pc[0] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    # class 1: tp 1, fp 1, fn 0 -> P 1/2, R 1, F1 2/3
    assert pc[1] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    # class 2: tp 2, fp 0, fn 1 -> P 1, R 2/3, F1 4/5
    assert pc[2] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})


def test_per_class_undefined_values_are_zero():
    pc = per_class(np.array([[0, 2], [0, 3]]))  # class 0 never predicted, never right
    assert pc[0] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert pc[1]["precision"] == pytest.approx(0.6) and pc[1]["recall"] == 1.0


def test_roc_auc_by_hand():
    assert roc_auc(Y == 0, P_CD) == pytest.approx(14 / 16)
    assert roc_auc(Y == 1, 1 - P_CD) == pytest.approx(14 / 16)
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1])) == 1.0
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0


def test_roc_auc_ties_count_half():
    # pairs (pos, neg): (.8,.5)=1 (.8,.2)=1 (.5,.5)=1/2 (.5,.2)=1 -> 3.5/4
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.8, 0.5, 0.5, 0.2])) == pytest.approx(0.875)
    # every score equal: no information
    assert roc_auc(np.array([1, 0, 1, 0, 0]), np.full(5, 0.3)) == pytest.approx(0.5)
    # a tie group of three spanning both classes: pos {.6, .4, .4}, neg {.4, .1}
    # pairs: (.6,.4)=1 (.6,.1)=1 (.4,.4)=1/2 x2 (.4,.1)=1 x2 -> 5/6
    assert roc_auc(np.array([1, 1, 1, 0, 0]), np.array([0.6, 0.4, 0.4, 0.4, 0.1])) == pytest.approx(5 / 6)


def test_roc_auc_one_class_is_none():
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None
    assert roc_auc(np.array([0, 0]), np.array([0.2, 0.3])) is None


def test_roc_and_pr_curves_by_hand():
    y = np.array([1, 1, 0, 0])
    s = np.array([0.8, 0.5, 0.5, 0.2])
    fpr, tpr, thr = roc_curve(y, s)
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.5, 0.2])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s))
    prec, rec, thr = pr_curve(y, s)
    np.testing.assert_allclose(thr, [0.8, 0.5, 0.2])
    np.testing.assert_allclose(prec, [1, 2 / 3, 0.5])
    np.testing.assert_allclose(rec, [0.5, 1, 1])


# choose_threshold on y=[1,1,1,0,0,0], s=[.9,.8,.4,.6,.3,.1]:
# candidate midpoints .85 .70 .50 .35 .20 and .05 (half the lowest score)
#   t=.85: P 1    R 1/3 F1 .500     t=.35: P 3/4 R 1 F1 6/7 (best)
#   t=.70: P 1    R 2/3 F1 .800     t=.20: P 3/5 R 1 F1 .750
#   t=.50: P 2/3  R 2/3 F1 .667     t=.05: P 1/2 R 1 F1 .667
TY = np.array([1, 1, 1, 0, 0, 0])
TS = np.array([0.9, 0.8, 0.4, 0.6, 0.3, 0.1])


def test_threshold_max_f1_by_hand():
    assert choose_threshold(TY, TS) == pytest.approx(0.35)


@pytest.mark.parametrize("target,expected", [(0.3, 0.85), (0.5, 0.70), (2 / 3, 0.70), (0.9, 0.35), (1.0, 0.35)])
def test_threshold_target_recall_takes_the_highest_that_reaches_it(target, expected):
    t = choose_threshold(TY, TS, mode="recall", target_recall=target)
    assert t == pytest.approx(expected)
    assert (TS[TY == 1] >= t).mean() >= target - 1e-12


def test_threshold_recall_needs_a_target():
    with pytest.raises(ValueError, match="target_recall"):
        choose_threshold(TY, TS, mode="recall")


def test_threshold_ties_prefer_the_one_closest_to_half():
    # perfectly separable: every midpoint in the gap gives F1 = 1, so all candidates
    # between .3 and .7 tie: .5 is the midpoint of .3/.7 and wins
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.7, 0.3, 0.1])
    assert choose_threshold(y, s) == pytest.approx(0.5)


def test_threshold_without_both_classes_is_half():
    assert choose_threshold(np.array([1, 1]), np.array([0.1, 0.9])) == 0.5
    assert choose_threshold(np.array([0, 0]), np.array([0.1, 0.9])) == 0.5


def test_classification_report_by_hand():
    rep = classification_report(Y, PROBS, LABELS, positive_index=0, threshold=0.5)
    assert rep["n"] == 8
    assert rep["accuracy"] == pytest.approx(6 / 8)
    assert rep["accuracy_argmax"] == pytest.approx(6 / 8)
    assert rep["confusion"] == {"labels": ["CD", "UD"], "matrix": [[3, 1], [1, 3]]}
    for lab in LABELS:
        assert rep["per_class"][lab] == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4})
    assert rep["macro_f1"] == pytest.approx(0.75)
    assert rep["roc_auc"] == pytest.approx(14 / 16)
    assert rep["positive_label"] == "CD" and rep["threshold"] == 0.5


def test_classification_report_threshold_changes_decisions_not_auc():
    # threshold .35 on p(CD): predicted CD for .9 .8 .4 .6 .7 -> CD tp=4 fp=1, UD tp=3 fn=1
    rep = classification_report(Y, PROBS, LABELS, positive_index=0, threshold=0.35)
    assert rep["confusion"]["matrix"] == [[4, 0], [1, 3]]
    assert rep["accuracy"] == pytest.approx(7 / 8)
    assert rep["accuracy_argmax"] == pytest.approx(6 / 8)
    assert rep["per_class"]["CD"] == pytest.approx({"precision": 0.8, "recall": 1.0, "f1": 8 / 9, "support": 4})
    assert rep["per_class"]["UD"] == pytest.approx({"precision": 1.0, "recall": 0.75, "f1": 6 / 7, "support": 4})
    assert rep["roc_auc"] == pytest.approx(14 / 16)


def test_classification_report_multiclass_has_no_auc():
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.1, 0.1, 0.8], [0.5, 0.2, 0.3]])
    rep = classification_report(y, probs, ["a", "b", "c"])
    assert rep["accuracy"] == pytest.approx(0.5)
    assert rep["confusion"]["matrix"] == [[1, 0, 0], [0, 0, 1], [1, 0, 1]]
    assert "roc_auc" not in rep
    assert rep["macro_f1"] == pytest.approx((2 / 3 + 0 + 0.5) / 3)


def test_classification_report_is_json_ready():
    import json

    rep = classification_report(Y, PROBS, LABELS, positive_index=0, threshold=0.5)
    assert json.loads(json.dumps(rep)) == rep


# -- vectorised curves and threshold search: exact against the loop they replaced ------------------
def _old_curves_and_threshold(y, s, mode="f1", target_recall=None, tolerance=0.0):
    """The O(n x unique scores) loops metrics.py used before (kept here as the reference)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    thr = np.unique(s)[::-1]
    P, N = max(y.sum(), 1), max((~y).sum(), 1)
    roc = (np.array([0.0] + [(s[~y] >= t).sum() / N for t in thr]), np.array([0.0] + [(s[y] >= t).sum() / P for t in thr]))
    prec, rec = [], []
    for t in thr:
        pred = s >= t
        tp = (pred & y).sum()
        prec.append(tp / max(pred.sum(), 1))
        rec.append(tp / P)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ss = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and ss[j + 1] == ss[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    auc = float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    mids = np.concatenate([(thr[:-1] + thr[1:]) / 2.0, [thr[-1] / 2.0]]) if len(thr) > 1 else np.array([0.5])
    cands = np.clip(mids, 1e-6, 1 - 1e-6)
    if mode == "recall":
        chosen = next((float(t) for t in cands if (s[y] >= t).mean() >= target_recall - 1e-12), float(cands[-1]))
    else:
        f1s = []
        for t in cands:
            pred = s >= t
            tp = (pred & y).sum()
            p = tp / max(pred.sum(), 1)
            r = tp / y.sum()
            f1s.append(2 * p * r / (p + r) if p + r else 0.0)
        f1s = np.asarray(f1s)
        ok = np.flatnonzero(f1s >= f1s.max() - tolerance - 1e-12)
        chosen = float(cands[ok[np.argmin(np.abs(cands[ok] - 0.5))]])
    return roc, (np.array(prec), np.array(rec)), auc, chosen


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_metrics_equal_the_loops_they_replaced(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    # Rounded scores make ties; seed 5 includes exact 0 and 1 (the clip edges of the candidates).
    s = np.round(np.clip(rng.normal(0.3 + 0.4 * y, 0.25), 0, 1), int(rng.integers(1, 4)))
    if seed == 5:
        s[:4] = [0.0, 1.0, 1.0, 0.0]
    (ofpr, otpr), (oprec, orec), oauc, othr = _old_curves_and_threshold(y, s, tolerance=0.01 * (seed % 2))
    fpr, tpr, _ = roc_curve(y, s)
    prec, rec, _ = pr_curve(y, s)
    assert np.array_equal(fpr, ofpr) and np.array_equal(tpr, otpr)
    assert np.array_equal(prec, oprec) and np.array_equal(rec, orec)
    assert roc_auc(y, s) == oauc
    assert choose_threshold(y, s, tolerance=0.01 * (seed % 2)) == othr
    for target in (0.5, 0.9, 1.0):
        assert choose_threshold(y, s, "recall", target) == _old_curves_and_threshold(y, s, "recall", target)[3]


def test_threshold_search_on_56k_scores_is_instant():
    import time

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 56_000)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).astype(np.float32).astype(np.float64)  # ~56k unique scores
    assert len(np.unique(s)) > 50_000
    # The loops this replaced took ~1 s for 5.6k scores and grow with n x unique scores: ~100 s here.
    t0 = time.perf_counter()
    t = choose_threshold(y, s, tolerance=0.005)
    took_threshold = time.perf_counter() - t0
    fpr, tpr, _ = roc_curve(y, s)
    prec, rec, _ = pr_curve(y, s)
    auc = roc_auc(y, s)
    took = time.perf_counter() - t0
    # Bounds with headroom for a shared, busy 2-core machine (0.22 s / 0.44 s measured at load 8.7).
    assert took_threshold < 0.5 and took < 1.5, f"threshold {took_threshold:.2f} s, all four {took:.2f} s"
    assert 0.3 < t < 0.7 and 0.8 < auc < 0.9 and tpr[-1] == 1.0 and fpr[-1] == 1.0

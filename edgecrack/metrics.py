"""Classification metrics in numpy: accuracy, per-class P/R/F1, confusion, ROC/PR, thresholds."""

from __future__ import annotations

import numpy as np

from .loop.postprocess import predict_labels


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``cm[i, j]`` = samples of true class i predicted as j."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def per_class(cm: np.ndarray) -> list[dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    out = []
    for i in range(cm.shape[0]):
        tp = cm[i, i]
        fp = cm[:, i].sum() - tp
        fn = cm[i, :].sum() - tp
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        out.append({"precision": float(p), "recall": float(r), "f1": float(f1), "support": int(cm[i, :].sum())})
    return out


def _counts_at_or_above(y: np.ndarray, s: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positives, predicted positives) with ``score >= t`` for every ``t``: one sort, then binary searches.

    Exact counts, O((n + k) log n) for ``n`` scores and ``k`` thresholds (a loop over thresholds
    is O(n k): minutes for a 56k-image out-of-fold threshold search).
    """
    all_sorted = np.sort(s)
    pos_sorted = np.sort(s[y])
    t = np.asarray(thresholds, dtype=np.float64)
    tp = len(pos_sorted) - np.searchsorted(pos_sorted, t, side="left")
    pred = len(all_sorted) - np.searchsorted(all_sorted, t, side="left")
    return tp, pred


def roc_auc(y_true_bin: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank statistic (ties count half). None if one class only."""
    y = np.asarray(y_true_bin).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # Tied scores share the mean of their 1-based ranks: (first + last) / 2 + 1 of their run.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)] - 1
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends) / 2.0 + 1.0, ends - starts + 1)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true_bin: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds descending."""
    y = np.asarray(y_true_bin).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    thr = np.unique(s)[::-1]
    P, N = max(y.sum(), 1), max((~y).sum(), 1)
    tp, pred = _counts_at_or_above(y, s, thr)
    tpr = np.concatenate([[0.0], tp / P])
    fpr = np.concatenate([[0.0], (pred - tp) / N])
    return fpr, tpr, np.concatenate([[np.inf], thr])


def pr_curve(y_true_bin: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) for each distinct score, thresholds descending."""
    y = np.asarray(y_true_bin).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    thr = np.unique(s)[::-1]
    P = max(y.sum(), 1)
    tp, pred = _counts_at_or_above(y, s, thr)
    return tp / np.maximum(pred, 1), tp / P, thr


def choose_threshold(y_true_bin: np.ndarray, score: np.ndarray, mode: str = "f1", target_recall: float | None = None,
                     tolerance: float = 0.0) -> float:
    """Decision threshold on the positive-class probability, chosen on validation data.

    Args:
        y_true_bin: 1 for the positive (cracked) class.
        score: Positive-class probability.
        mode: ``f1`` maximises F1 of the positive class; ``recall`` takes the highest
            threshold whose recall reaches ``target_recall`` (a missed crack costs more than a
            false alarm).
        target_recall: Required recall for ``mode="recall"``.
        tolerance: With ``mode="f1"``, any threshold whose F1 is within ``tolerance`` of the best
            counts as a tie, and the tie closest to 0.5 wins: on a small validation set the exact
            F1 maximum is mostly noise, and a threshold far from 0.5 costs accuracy elsewhere.

    Returns:
        The threshold (midpoint between neighbouring scores, so it generalises a little
        better than a score itself); 0.5 when the data cannot decide.
    """
    y = np.asarray(y_true_bin).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    if y.sum() == 0 or (~y).sum() == 0:
        return 0.5
    thr = np.unique(s)[::-1]
    mids = np.concatenate([(thr[:-1] + thr[1:]) / 2.0, [thr[-1] / 2.0]]) if len(thr) > 1 else np.array([0.5])
    cands = np.clip(mids, 1e-6, 1 - 1e-6)
    tp, pred = _counts_at_or_above(y, s, cands)
    n_pos = int(y.sum())
    if mode == "recall":
        if target_recall is None:
            raise ValueError("target_recall is required for mode='recall'")
        # Candidates descend: the first reaching the recall keeps the most precision.
        hit = np.flatnonzero(tp / n_pos >= target_recall - 1e-12)
        return float(cands[hit[0]] if len(hit) else cands[-1])
    p = tp / np.maximum(pred, 1)
    r = tp / n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        f1s = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    ok = np.flatnonzero(f1s >= f1s.max() - tolerance - 1e-12)
    # prefer the threshold closest to 0.5 among ties (less overfit to the val set)
    return float(cands[ok[np.argmin(np.abs(cands[ok] - 0.5))]])


def classification_report(y_true: np.ndarray, probs: np.ndarray, labels: list[str],
                          positive_index: int | None = None, threshold: float | None = None) -> dict:
    """All metrics of a labelled prediction set, JSON-ready.

    Returns:
        ``accuracy``, ``per_class`` (P/R/F1/support by label), ``confusion`` (rows = truth),
        ``roc_auc`` (binary), ``threshold``, ``n``; plus ``accuracy_argmax``.
    """
    y_true = np.asarray(y_true, int)
    probs = np.asarray(probs, np.float64)
    y_pred = predict_labels(probs, positive_index, threshold)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    pc = per_class(cm)
    rep = {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "accuracy_argmax": float((probs.argmax(1) == y_true).mean()) if len(y_true) else 0.0,
        "threshold": threshold,
        "per_class": {lab: pc[i] for i, lab in enumerate(labels)},
        "confusion": {"labels": labels, "matrix": cm.tolist()},
        "macro_f1": float(np.mean([c["f1"] for c in pc])),
    }
    if positive_index is not None and len(labels) == 2:
        rep["positive_label"] = labels[positive_index]
        rep["roc_auc"] = roc_auc(y_true == positive_index, probs[:, positive_index])
    return rep

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


def roc_auc(y_true_bin: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank statistic (ties count half). None if one class only."""
    y = np.asarray(y_true_bin).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true_bin: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds descending."""
    y = np.asarray(y_true_bin).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    thr = np.unique(s)[::-1]
    P, N = max(y.sum(), 1), max((~y).sum(), 1)
    tpr = np.array([0.0] + [(s[y] >= t).sum() / P for t in thr])
    fpr = np.array([0.0] + [(s[~y] >= t).sum() / N for t in thr])
    return fpr, tpr, np.concatenate([[np.inf], thr])


def pr_curve(y_true_bin: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) for each distinct score, thresholds descending."""
    y = np.asarray(y_true_bin).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    thr = np.unique(s)[::-1]
    P = max(y.sum(), 1)
    prec, rec = [], []
    for t in thr:
        pred = s >= t
        tp = (pred & y).sum()
        prec.append(tp / max(pred.sum(), 1))
        rec.append(tp / P)
    return np.array(prec), np.array(rec), thr


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
    best_t, best = 0.5, -1.0
    if mode == "recall":
        if target_recall is None:
            raise ValueError("target_recall is required for mode='recall'")
        for t in cands:  # descending: first reaching the recall keeps the most precision
            if (s[y] >= t).mean() >= target_recall - 1e-12:
                return float(t)
        return float(cands[-1])
    f1s = []
    for t in cands:
        pred = s >= t
        tp = (pred & y).sum()
        p = tp / max(pred.sum(), 1)
        r = tp / y.sum()
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    f1s = np.asarray(f1s)
    ok = np.flatnonzero(f1s >= f1s.max() - tolerance - 1e-12)
    # prefer the threshold closest to 0.5 among ties (less overfit to the val set)
    best_t = cands[ok[np.argmin(np.abs(cands[ok] - 0.5))]]
    return float(best_t)


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

"""PNG plots of a training run: curves, confusion matrix, ROC and PR curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..metrics import pr_curve, roc_curve


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: list[dict], path: Path) -> Path:
    plt = _plt()
    exact = history and history[0].get("l2") is not None
    ep = [h["l2"] for h in history] if exact else [h["epoch"] for h in history]
    xlabel = "L2 penalty (exact head fit)" if exact else "epoch"
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(ep, [h["train_loss"] for h in history], label="train")
    ax[0].plot(ep, [h["val_loss"] for h in history], label="validation")
    ax[0].set_xlabel(xlabel), ax[0].set_ylabel("loss"), ax[0].legend(), ax[0].grid(alpha=0.3)
    ax[1].plot(ep, [h["train_accuracy"] for h in history], label="train")
    ax[1].plot(ep, [h["val_accuracy"] for h in history], label="validation")
    ax[1].set_xlabel(xlabel), ax[1].set_ylabel("accuracy"), ax[1].legend(), ax[1].grid(alpha=0.3)
    if exact:
        for a in ax:
            a.set_xscale("log")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def plot_confusion(cm: np.ndarray, labels: list[str], path: Path, title: str = "") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="black", fontsize=12)
    ax.set_xticks(range(len(labels)), labels), ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted"), ax.set_ylabel("actual"), ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def plot_roc_pr(y_bin: np.ndarray, score: np.ndarray, path: Path, threshold: float | None = None, title: str = "") -> Path:
    plt = _plt()
    fpr, tpr, _ = roc_curve(y_bin, score)
    prec, rec, thr = pr_curve(y_bin, score)
    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    ax[0].plot(fpr, tpr), ax[0].plot([0, 1], [0, 1], "--", color="grey")
    ax[0].set_xlabel("false positive rate"), ax[0].set_ylabel("true positive rate"), ax[0].set_title(f"ROC {title}")
    ax[1].plot(rec, prec)
    if threshold is not None and len(thr):
        k = int(np.argmin(np.abs(thr - threshold)))
        ax[1].plot([rec[k]], [prec[k]], "o", label=f"threshold {threshold:.2f}")
        ax[1].legend()
    ax[1].set_xlabel("recall"), ax[1].set_ylabel("precision"), ax[1].set_title(f"PR {title}")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path

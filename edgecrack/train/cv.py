"""k-fold cross-validation of ``edgecrack train``: ``edgecrack cv`` and ``benchmarks/bench_train.py``.

Each of ``k`` stratified folds of the data is held out once as the test folder of one ordinary
training run (same defaults, same threshold policy); the other images are split by the default
policy into training and validation. The report is the mean and spread of the held-out
metrics, as ``cv.json`` and ``cv.md``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import DEFAULT_DATASET, discover, kfold_indices
from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_text
from .api import Reporter, TrainConfig, train


def fold_dirs(data: str | Path | None, work: Path, k: int, seed: int, label_from: str = "folder",
              classes: str = "binary", surfaces: list[str] | None = None) -> list[tuple[Path, Path]]:
    """``(train folder, test folder)`` of each fold: links to the images, one folder per class.

    Labels are those :func:`edgecrack.data.discover` gives (a multi-surface SDNET2018 root is
    already merged into cracked/uncracked here). A file name met twice within a class folder
    gets a ``~N`` suffix.

    Raises:
        DatasetError: No usable data.
        ConfigError: ``k`` below 2 or above the size of the smallest class.
    """
    root = Path(data) if data else DEFAULT_DATASET
    ds = discover(root, label_from, classes=classes, surfaces=surfaces)
    smallest = min(ds.counts().values())
    if not 2 <= k <= smallest:
        raise ConfigError(f"--folds must be within 2..{smallest} (images of the smallest class), got {k}")
    folds = kfold_indices(ds.labels, k, seed)
    out = []
    for i, test_idx in enumerate(folds):
        tr_dir, te_dir = work / f"fold{i}" / "train", work / f"fold{i}" / "test"
        test_set = set(test_idx.tolist())
        for j, s in enumerate(ds.samples):
            d = (te_dir if j in test_set else tr_dir) / s.label
            d.mkdir(parents=True, exist_ok=True)
            target, n = d / s.path.name, 1
            while target.exists() or target.is_symlink():
                n += 1
                target = d / f"{s.path.stem}~{n}{s.path.suffix}"
            try:
                os.symlink(s.path.resolve(), target)
            except OSError:  # no symlinks here (some Windows setups): copy
                shutil.copy2(s.path, target)
        out.append((tr_dir, te_dir))
    return out


def cross_validate(data: str | Path | None = None, folds: int = 5, seed: int = 0, base: TrainConfig | None = None,
                   out: str | Path | None = None, reporter: Reporter | None = None,
                   on_fold: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """k-fold CV of ``edgecrack train`` with the settings of ``base``.

    Args:
        data: Dataset folder (None: the bundled SDNET2018 deck sample).
        folds: Number of folds ``k``.
        seed: Seed of the fold assignment (training runs use ``base.loop.seed``).
        base: Training settings (None: the defaults). Its data, validation/test folders,
            output, plots and export are set per fold.
        out: Folder for the fold runs (``fold0`` ...) and ``cv.json`` / ``cv.md``; None: a
            temporary folder, removed afterwards, and no report files.
        reporter: Receives each fold run's progress.
        on_fold: Called with (fold number, that fold's results) after each fold.

    Returns:
        The report: mean/std/per-fold test accuracy (at the stored threshold), argmax accuracy,
        ROC-AUC, cracked-class recall and F1, and the settings.
    """
    base = base or TrainConfig()
    runs = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="edgecrack-cv-"))
    links = Path(tempfile.mkdtemp(prefix="edgecrack-cv-folds-"))
    t_start = time.perf_counter()
    per_fold: list[dict[str, Any]] = []
    try:
        for i, (tr, te) in enumerate(fold_dirs(data, links, folds, seed, base.label_from, base.classes, base.surfaces)):
            t0 = time.perf_counter()
            cfg = dataclasses.replace(base, data=str(tr), test_dir=str(te), val_dir=None, surfaces=None,
                                      out=str(runs / f"fold{i}"), plots=False, export=False,
                                      loop=dataclasses.replace(base.loop))
            res = train(cfg, reporter)
            m = res.metrics["test"]
            pos = res.manifest.positive_label
            pc = m["per_class"].get(pos, {}) if pos else {}
            row = {"fold": i, "n": m["n"], "accuracy": m["accuracy"], "accuracy_argmax": m.get("accuracy_argmax", m["accuracy"]),
                   "roc_auc": m.get("roc_auc"), "cracked_recall": pc.get("recall"), "cracked_f1": pc.get("f1"),
                   "threshold": res.manifest.threshold, "seconds": time.perf_counter() - t0}
            per_fold.append(row)
            if on_fold:
                on_fold(i, row)
        positive = res.manifest.positive_label
    finally:
        shutil.rmtree(links, ignore_errors=True)
        if out is None:
            shutil.rmtree(runs, ignore_errors=True)

    def mean(key: str) -> float | None:
        vals = [r[key] for r in per_fold if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    accs = [r["accuracy"] for r in per_fold]
    rep = {"schema": "edgecrack.cv/1", "data": str(Path(data) if data else DEFAULT_DATASET), "folds": folds,
           "seed": seed, "images": int(sum(r["n"] for r in per_fold)), "positive_label": positive,
           "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)), "accuracy_folds": accs,
           "accuracy_argmax_mean": mean("accuracy_argmax"), "roc_auc_mean": mean("roc_auc"),
           "cracked_f1_mean": mean("cracked_f1"), "cracked_recall_mean": mean("cracked_recall"),
           "per_fold": per_fold, "seconds": time.perf_counter() - t_start,
           "config": {k: v for k, v in base.to_dict().items() if k not in ("data", "out", "val_dir", "test_dir")}}
    if out is not None:
        atomic_write_json(runs / "cv.json", rep)
        atomic_write_text(runs / "cv.md", cv_markdown(rep))
    return rep


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def cv_markdown(rep: dict[str, Any]) -> str:
    """The CV report as Markdown: summary table, then one row per fold."""
    c = rep["config"]
    pos = rep.get("positive_label") or "cracked"
    lines = [f"# {rep['folds']}-fold cross-validation of edgecrack train", "",
             f"Data: {rep['data']} ({rep['images']} images), fold seed {rep['seed']}. Settings: {c['backbone']} at "
             f"{c['image_size'] or 'native'} px, fine-tune blocks {c['fine_tune_blocks']}, views {c['views']}, "
             f"TTA {c['tta']}, solver {c['solver']}.", "",
             "Accuracy is that of the deployed decision: the threshold each fold's run stored in its manifest; "
             "the argmax row shows the same models without it.", "",
             "| measure | value |", "|---|---|",
             f"| accuracy (mean ± std) | {rep['accuracy_mean']:.3f} ± {rep['accuracy_std']:.3f} |",
             f"| folds | {', '.join(f'{a:.3f}' for a in rep['accuracy_folds'])} |",
             f"| accuracy at argmax (no threshold) | {_fmt(rep['accuracy_argmax_mean'])} |",
             f"| ROC-AUC (mean) | {_fmt(rep['roc_auc_mean'])} |",
             f"| {pos} recall / F1 (mean) | {_fmt(rep['cracked_recall_mean'])} / {_fmt(rep['cracked_f1_mean'])} |",
             "", "| fold | test images | accuracy | argmax | ROC-AUC | threshold | seconds |", "|---|---|---|---|---|---|---|"]
    for r in rep["per_fold"]:
        lines.append(f"| {r['fold']} | {r['n']} | {r['accuracy']:.3f} | {r['accuracy_argmax']:.3f} | {_fmt(r['roc_auc'])} "
                     f"| {_fmt(r['threshold'])} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"

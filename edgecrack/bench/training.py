"""The training benchmark (``benchmarks/bench_train.py``, schema ``edgecrack.bench.train/1``) in a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .schema import TRAIN_SCHEMA
from ..io import read_json


def training_section(train_json: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Fold a training benchmark (schema ``edgecrack.bench.train/1``) into the report format.

    Args:
        train_json: Path of ``train.json`` or its parsed content:
            ``{"schema": "edgecrack.bench.train/1", "machine": {...}, "cv": {"folds": 5,
            "accuracy_mean": x, "accuracy_folds": [...]}, "wall_time_s": {"cold": x, "warm": y},
            "bottleneck_images_per_s": z}``.

    Returns:
        The section stored under ``training`` in a bench report: the fields above plus
        ``accuracy_std``, ``accuracy_min``/``max`` and ``source``.

    Raises:
        ConfigError: Unreadable file, other schema or missing fields.
    """
    source = "<dict>"
    if not isinstance(train_json, dict):
        p = Path(train_json)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"training benchmark not found: {p}", "run `make bench` (benchmarks/bench_train.py) first")
        train_json = read_json(p)
    d = train_json
    if not isinstance(d, dict) or d.get("schema") != TRAIN_SCHEMA:
        raise ConfigError(f"{source} is not a training benchmark (schema {d.get('schema') if isinstance(d, dict) else None!r}, "
                          f"expected {TRAIN_SCHEMA})", "pass the train.json benchmarks/bench_train.py writes")
    try:
        cv = dict(d["cv"])
        folds = [float(a) for a in cv.get("accuracy_folds", [])]
        wall = {k: float(v) for k, v in d["wall_time_s"].items()}
        sec = {"schema": TRAIN_SCHEMA, "source": source, "machine": d.get("machine", {}),
               "cv": {**cv, "folds": int(cv.get("folds", len(folds))), "accuracy_mean": float(cv["accuracy_mean"]),
                      "accuracy_folds": folds},
               "wall_time_s": wall, "bottleneck_images_per_s": float(d["bottleneck_images_per_s"])}
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{source}: malformed training benchmark ({type(e).__name__}: {e})",
                          "regenerate it with benchmarks/bench_train.py") from None
    if folds:
        sec["cv"]["accuracy_std"] = float(np.std(folds))
        sec["cv"]["accuracy_min"], sec["cv"]["accuracy_max"] = min(folds), max(folds)
    for k in d:
        if k not in sec:
            sec[k] = d[k]  # later additions travel along unchanged
    return sec


def training_markdown(section: dict[str, Any]) -> str:
    """The training section as Markdown (used inside :func:`report_markdown`)."""
    cv, wall = section["cv"], section["wall_time_s"]
    lines = ["## Training", "", f"Source: `{section.get('source', '?')}`", "", "| measure | value |", "|---|---|"]
    folds = ", ".join(f"{a:.3f}" for a in cv.get("accuracy_folds", []))
    std = f" ± {cv['accuracy_std']:.3f}" if "accuracy_std" in cv else ""
    lines.append(f"| {cv['folds']}-fold CV accuracy | {cv['accuracy_mean']:.3f}{std} ({folds}) |")
    for k, v in wall.items():
        lines.append(f"| wall time, {k} cache | {v:.1f} s |")
    lines.append(f"| bottleneck extraction | {section['bottleneck_images_per_s']:.1f} images/s |")
    mach = section.get("machine") or {}
    if mach:
        lines += ["", "Machine: " + ", ".join(f"{k}: {v}" for k, v in mach.items() if not isinstance(v, (dict, list)))]
    return "\n".join(lines) + "\n"

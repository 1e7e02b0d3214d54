"""Training benchmark: accuracy by 5-fold CV, cold/warm wall time, bottleneck throughput.

Run: ``.venv/bin/python benchmarks/bench_train.py`` (about 5 minutes on a 2-core CPU).
Writes ``benchmarks/train/train.json`` and ``benchmarks/train/train.md``.

- Accuracy: the default ``edgecrack train`` (library call with default options) on each of 5
  stratified folds of the bundled 400 images; the held-out fold is passed as ``--test-dir``, the
  other 320 images are split by the default policy into training and validation. The same code
  as ``edgecrack cv`` (:mod:`edgecrack.train.cv`).
- Wall time: the ``edgecrack train`` command as a subprocess on the bundled data with an empty
  cache (cold) and again with a different ``--epochs`` (warm cache).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecrack.io import atomic_write_json, atomic_write_text  # noqa: E402


def machine() -> dict:
    from edgecrack.bench import machine_summary

    return machine_summary()


def cross_validate(k: int, seed: int, cache: Path, tmp: Path, overrides: dict | None = None) -> dict:
    """k-fold CV of ``edgecrack train`` on the bundled data (defaults, or ``overrides`` of TrainConfig
    fields): :func:`edgecrack.train.cv.cross_validate`, the code behind ``edgecrack cv``."""
    import dataclasses

    from edgecrack.train.api import TrainConfig
    from edgecrack.train.cv import cross_validate as cv
    from edgecrack.train.loop import LoopConfig

    over = dict(overrides or {})
    loop_over = over.pop("loop", {})
    base = TrainConfig(cache_dir=str(cache), **over)
    base.loop = dataclasses.replace(LoopConfig(), **loop_over)

    def show(i: int, r: dict) -> None:
        print(f"fold {i}: test accuracy {r['accuracy']:.3f}  ROC-AUC {r['roc_auc'] or 0:.3f}  "
              f"CD recall {r['cracked_recall'] or 0:.3f}  ({r['seconds']:.1f}s)", flush=True)

    return cv(None, k, seed, base, tmp / "cv-runs", on_fold=show)


def timed_cli(args: list[str], env: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgecrack", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, {}


def wall_times(tmp: Path) -> dict:
    cache = tmp / "cold-cache"
    env = dict(os.environ, EDGECRACK_CACHE=str(cache))
    cold, _ = timed_cli(["train", "--out", str(tmp / "cold")], env)
    metrics_cold = json.loads((tmp / "cold" / "metrics.json").read_text())
    warm, _ = timed_cli(["train", "--out", str(tmp / "warm"), "--epochs", "30"], env)
    metrics_warm = json.loads((tmp / "warm" / "metrics.json").read_text())
    return {"cold": cold, "warm": warm, "breakdown_s": {"cold": metrics_cold["timings"], "warm": metrics_warm["timings"]},
            "bottleneck_images_per_s": metrics_cold["bottleneck"]["images_per_s"],
            "bottleneck_views": metrics_cold["bottleneck"]["views"],
            "bottleneck_engine": metrics_cold["bottleneck"]["engine"],
            "default_run_test_accuracy": metrics_cold.get("test", {}).get("accuracy"),
            "default_run_validation_accuracy": metrics_cold.get("validation", {}).get("accuracy")}


def markdown(rep: dict) -> str:
    cv, wt, m = rep["cv"], rep["wall_time_s"], rep["machine"]
    lines = [
        "# edgecrack train benchmark", "",
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, onnxruntime {m['onnxruntime']}.", "",
        "Accuracy is that of the deployed decision: the cracked-class threshold (max F1 on 5-fold "
        "out-of-fold probabilities of the training + validation images) stored in the manifest. The "
        "argmax row shows the same models without it.", "",
        "| measure | value | floor / budget |", "|---|---|---|",
        f"| {cv['folds']}-fold CV accuracy (mean ± std) | {cv['accuracy_mean']:.3f} ± {cv['accuracy_std']:.3f} | >= 0.88 |",
        f"| CV folds | {', '.join(f'{a:.3f}' for a in cv['accuracy_folds'])} | |",
        f"| CV accuracy at argmax (no threshold) | {cv['accuracy_argmax_mean']:.3f} | |",
        f"| CV ROC-AUC (mean) | {cv['roc_auc_mean']:.3f} | |",
        f"| CV cracked (CD) recall / F1 (mean) | {cv['cracked_recall_mean']:.3f} / {cv['cracked_f1_mean']:.3f} | |",
        f"| `edgecrack train` wall time, cold cache | {wt['cold']:.1f} s | <= 60 s |",
        f"| `edgecrack train` wall time, warm cache (other epochs) | {wt['warm']:.1f} s | <= 10 s |",
        f"| bottleneck throughput (decode included, {rep['bottleneck_views']} views/image) | "
        f"{rep['bottleneck_images_per_s']:.1f} images/s ({rep['bottleneck_images_per_s'] * rep['bottleneck_views']:.1f} views/s) | |",
        "", f"Bottleneck engine: {rep['bottleneck_engine']}.", "",
        "Cold run breakdown (s): " + ", ".join(f"{k} {v:.1f}" for k, v in rep["breakdown_s"]["cold"].items()),
        "", "Warm run breakdown (s): " + ", ".join(f"{k} {v:.1f}" for k, v in rep["breakdown_s"]["warm"].items()),
        "", "The warm wall time includes about 3 s of interpreter start-up and torch/onnx/OpenCV imports "
        "that the in-process breakdown does not see.", "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "train")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-timing", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecrack-bench-train-"))
    try:
        rep: dict = {"schema": "edgecrack.bench.train/1", "machine": machine(),
                     "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if not a.skip_timing:
            wt = wall_times(tmp)
            rep["wall_time_s"] = wt
            rep["bottleneck_images_per_s"] = wt.pop("bottleneck_images_per_s")
            rep["bottleneck_views"] = wt.pop("bottleneck_views")
            rep["bottleneck_engine"] = wt.pop("bottleneck_engine")
            rep["breakdown_s"] = wt.pop("breakdown_s")
            rep["default_run"] = {"test_accuracy": wt.pop("default_run_test_accuracy"),
                                  "validation_accuracy": wt.pop("default_run_validation_accuracy")}
            print(f"wall time: cold {wt['cold']:.1f}s, warm {wt['warm']:.1f}s; bottleneck "
                  f"{rep['bottleneck_images_per_s']:.1f} images/s", flush=True)
        rep["cv"] = cross_validate(a.folds, a.seed, tmp / "cv-cache", tmp)
        print(f"{a.folds}-fold CV accuracy {rep['cv']['accuracy_mean']:.3f} ± {rep['cv']['accuracy_std']:.3f}")
        atomic_write_json(a.out / "train.json", rep)
        if "wall_time_s" in rep:
            atomic_write_text(a.out / "train.md", markdown(rep))
        print(f"wrote {a.out / 'train.json'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

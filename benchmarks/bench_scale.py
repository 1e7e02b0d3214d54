"""Training at scale: wall time and peak RSS of ``edgecrack train`` at 10x the images, per 1,000 images.

Run: ``.venv/bin/python benchmarks/bench_scale.py`` (14 minutes on a busy 2-core CPU; ``--baseline`` adds 6).
Writes ``benchmarks/scale/scale.json`` and ``benchmarks/scale/scale.md``.

Data: synthetic but real-looking images, random crops (70-100 % of the side, resized back to
256 px) with random flips of the bundled SDNET2018 deck sample, half CD and half UD, written as
JPEG to a temporary folder. The small size of a pair (200, 400) is all different images, run
with an empty cache: the bottleneck phase is measured cold. The large size (2,000, 4,000) holds
those images ten times over under other names, run on the small run's cache: the same number
of feature rows to store, split and train on (what memory and the training phase scale with),
while the trunk runs only for the unique images (on a busy 2-core CPU 4,000 x 8 cold views take
most of an hour). Time per 1,000 images is therefore composed of measured parts: the cold
bottleneck rate of the small run plus the slope of the training phase between the two sizes.

Runs, each ``edgecrack train`` in its own subprocess, ``--no-plots --no-export``, default 224 px
EfficientNet-Lite0:
- head-only: the default exact head (L-BFGS), ``--views 1``;
- fine-tuned: ``--fine-tune-blocks 1`` with the default 8 views, ``--epochs 3`` (AdamW).
Wall time is measured around the subprocess; peak RSS is the child's own ``ru_maxrss`` from
``os.wait4``.

``--baseline PATH`` also runs the fine-tuned pairs with the edgecrack package found at PATH (an
older checkout) on the already warm cache, for a before/after peak RSS comparison.
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

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecrack.data import DEFAULT_DATASET, list_images  # noqa: E402
from edgecrack.io import atomic_write_json, atomic_write_text  # noqa: E402

PAIRS = ((200, 2000), (400, 4000))
FULL_SDNET = 56_000
MODES = {
    "head-only": ["--views", "1"],
    "fine-tuned": ["--fine-tune-blocks", "1", "--epochs", "3"],
}


def repeated_dataset(src: Path, out: Path, times: int) -> Path:
    """``src`` ``times`` over under other names (symbolic links: same bytes, other paths)."""
    for p in list_images(src):
        (out / p.parent.name).mkdir(parents=True, exist_ok=True)
        for r in range(times):
            os.symlink(p.resolve(), out / p.parent.name / f"r{r}-{p.name}")
    return out


def synthetic_dataset(out: Path, n: int, seed: int) -> Path:
    """``n`` images (n/2 CD, n/2 UD) cropped and flipped at random from the bundled sample."""
    rng = np.random.default_rng(seed)
    for cls in ("CD", "UD"):
        src = [p for p in list_images(DEFAULT_DATASET / cls)]
        (out / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n // 2):
            img = cv2.imread(str(src[i % len(src)]))
            h, w = img.shape[:2]
            side = int(min(h, w) * rng.uniform(0.7, 1.0))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = img[y:y + side, x:x + side]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            if rng.random() < 0.5:
                crop = crop[::-1]
            crop = cv2.resize(np.ascontiguousarray(crop), (256, 256), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(out / cls / f"syn{i:05d}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return out


def measured_train(data: Path, run: Path, cache: Path, extra: list[str], pythonpath: str) -> dict:
    """One ``edgecrack train`` subprocess: wall time, its own peak RSS, the run's metrics."""
    env = dict(os.environ, PYTHONPATH=pythonpath, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "edgecrack", "train", str(data), "--out", str(run), "--cache-dir", str(cache),
           "--no-plots", "--no-export", *extra]
    t0 = time.perf_counter()
    with open(run.parent / f"{run.name}.log", "w") as logf:
        # cwd outside any checkout: ``python -m`` puts the cwd ahead of PYTHONPATH on sys.path
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=run.parent)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{(run.parent / f'{run.name}.log').read_text()[-3000:]}")
    met = json.loads((run / "metrics.json").read_text())
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
            "timings": met["timings"], "bottleneck": met["bottleneck"],
            "validation_accuracy": met.get("validation", {}).get("accuracy"),
            "test_accuracy": met.get("test", {}).get("accuracy")}


def feature_bytes(cache: Path) -> int | None:
    """Bytes of one image's cached features (``.npy`` entry), from the run's cache."""
    entry = next((cache / "bottleneck").rglob("*.npy"), None)
    if entry is None:
        return None
    return int(np.load(entry, allow_pickle=False).nbytes)


def slope(small: dict, big: dict, n_small: int, n_big: int, key: str) -> float:
    return (big[key] - small[key]) / ((n_big - n_small) / 1000)


def markdown(rep: dict) -> str:
    m = rep["machine"]
    lines = ["# edgecrack training at scale", "",
             f"Machine: {m['cpu']}, {m['cores']} cores (shared with other jobs: load average "
             f"{rep['load_average'][0]:.1f} at start, {rep['load_average'][1]:.1f} at the end); torch {m['torch']}, "
             f"onnxruntime {m['onnxruntime']}. {rep['date']}.", "",
             "Synthetic data: random crops and flips of the bundled SDNET2018 deck sample. The small size of "
             "a pair is all different images with an empty cache (cold bottleneck); the large size is the "
             "same images ten times over under other names, on that cache: as many feature rows to store "
             "and train on, the trunk run only for new content. Each run is `edgecrack train` in its own "
             "process, `--no-plots --no-export`, 224 px EfficientNet-Lite0. Head-only: the default exact "
             "head, `--views 1`. Fine-tuned: `--fine-tune-blocks 1`, the default 8 views, `--epochs 3`. "
             "Peak RSS is the child process's own `ru_maxrss`.", "",
             "| mode | images | cache | wall s | bottleneck s (computed / from cache) | training s | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rep["runs"]:
        t, b = r["timings"], r["bottleneck"]
        lines.append(f"| {r['mode']} | {r['images']} | {r['cache']} | {r['wall_s']:.1f} | {t['bottleneck_s']:.1f} "
                     f"({b['computed']} / {b['cache_hits']}) | {r['training_phase_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "Per 1,000 images: peak RSS and training phase are slopes between the warm runs of a pair; the "
              "bottleneck is the cold rate of the pair's small run.", "",
              "| mode | pair | peak RSS MB / 1,000 | bottleneck s / 1,000 (cold) | training s / 1,000 | total s / 1,000 |",
              "|---|---|---|---|---|---|"]
    for s in rep["slopes"]:
        lines.append(f"| {s['mode']} | {s['pair'][0]} -> {s['pair'][1]} | {s['peak_rss_mb_per_1000']:+.1f} | "
                     f"{s['bottleneck_cold_s_per_1000']:.0f} | {s['training_s_per_1000']:.1f} | {s['wall_s_per_1000']:.0f} |")
    last = rep["slopes"][-1]["pair"]
    lines += ["", f"Projection to the full SDNET2018 ({FULL_SDNET:,} images) on this CPU, from the {last[0]:,} -> "
              f"{last[1]:,} pair "
              "(time: the cold small run plus the cold cost per 1,000 images; memory: the larger of the cold small and "
              "warm large peaks plus the slope):", "",
              "| mode | wall time | peak RSS | feature disk (cache + run file) |", "|---|---|---|---|"]
    for p in rep["projection"]:
        disk = "-" if p["feature_disk_gb"] is None else f"{p['feature_disk_gb']:.1f} GB"
        lines.append(f"| {p['mode']} | {p['wall_h']:.1f} h | {p['peak_rss_gb']:.2f} GB | {disk} |")
    lines += ["", "GPU: not measured (this machine has none); `benchmarks/gpu/check.sh` measures a CUDA fine-tune.", ""]
    if rep.get("baseline"):
        b = rep["baseline"]
        lines += [f"Before ({b['source']}, features stacked in RAM), fine-tuned, same data on the same cache:", "",
                  "| images | peak RSS MB before | after | training s before | after |", "|---|---|---|---|---|"]
        after = {r["images"]: r for r in rep["runs"] if r["mode"] == "fine-tuned" and r["cache"] == "warm"}
        for r in b["runs"]:
            a_ = after[r["images"]]
            lines.append(f"| {r['images']} | {r['peak_rss_mb']:.0f} | {a_['peak_rss_mb']:.0f} | "
                         f"{r['timings']['training_s'] + r['timings'].get('refit_s', 0.0):.1f} | {a_['training_phase_s']:.1f} |")
        lines += ["", "| pair | peak RSS MB / 1,000 before | after |", "|---|---|---|"]
        for s in b["slopes"]:
            s_after = next(x for x in rep["slopes"] if x["mode"] == "fine-tuned" and x["pair"] == s["pair"])
            lines.append(f"| {s['pair'][0]} -> {s['pair'][1]} | {s['peak_rss_mb_per_1000']:+.0f} | "
                         f"{s_after['peak_rss_mb_per_1000']:+.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "scale")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", type=Path, help="Older checkout to compare peak RSS with (fine-tuned runs).")
    ap.add_argument("--pairs", default=",".join(f"{x}:{y}" for x, y in PAIRS),
                    help="Image count pairs, e.g. 200:2000,400:4000 (the last pair projects to 56k).")
    ap.add_argument("--baseline-only", action="store_true",
                    help="Only (re)run --baseline, on the --work folder of an earlier run; update its report.")
    ap.add_argument("--work", type=Path, help="Work folder (default: a temporary one, removed at the end).")
    a = ap.parse_args()
    pairs = tuple(tuple(int(x) for x in p.split(":")) for p in a.pairs.split(","))
    from edgecrack.bench import machine_summary

    tmp = a.work or Path(tempfile.mkdtemp(prefix="edgecrack-bench-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    rep: dict = {"schema": "edgecrack.bench.scale/1", "machine": machine_summary(),
                 "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": MODES, "runs": []}
    if a.baseline_only:
        rep = json.loads((a.out / "scale.json").read_text())
        pairs = tuple(tuple(x["pair"]) for x in rep["slopes"][::len(MODES)])
    try:
        for small, big in (() if a.baseline_only else pairs):
            data_small = synthetic_dataset(tmp / f"data-{small}", small, a.seed + small)
            data_big = repeated_dataset(data_small, tmp / f"data-{big}", big // small)
            for mode, extra in MODES.items():
                cache = tmp / f"cache-{mode}-{small}"
                for n, data, cache_state in ((small, data_small, "cold"), (small, data_small, "warm"),
                                             (big, data_big, "warm")):
                    r = measured_train(data, tmp / f"{mode}-{n}-{cache_state}", cache, extra, str(ROOT))
                    r.update(mode=mode, images=n, cache=cache_state, feature_bytes_per_image=feature_bytes(cache))
                    rep["runs"].append(r)
                    b = r["bottleneck"]
                    print(f"{mode:10s} {n:5d} images {cache_state}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
                          f"(bottleneck {r['timings']['bottleneck_s']:.1f} s, {b['computed']} computed, "
                          f"{b['cache_hits']} from cache)", flush=True)
        for r in rep["runs"]:
            r["training_phase_s"] = r["timings"]["training_s"] + r["timings"].get("refit_s", 0.0)
        by = {(r["mode"], r["images"], r["cache"]): r for r in rep["runs"]}
        rep["slopes"] = [] if not a.baseline_only else rep["slopes"]
        for small, big in (() if a.baseline_only else pairs):
            for mode in MODES:
                # warm vs warm: a cold run also exports and holds the trunk's onnxruntime session
                rs, rb = by[mode, small, "warm"], by[mode, big, "warm"]
                cold = 1000 / by[mode, small, "cold"]["bottleneck"]["images_per_s"]
                train = slope(rs, rb, small, big, "training_phase_s")
                rep["slopes"].append({"mode": mode, "pair": [small, big], "bottleneck_cold_s_per_1000": cold,
                                      "training_s_per_1000": train, "wall_s_per_1000": cold + train,
                                      "peak_rss_mb_per_1000": slope(rs, rb, small, big, "peak_rss_mb")})
        rep["projection"] = [] if not a.baseline_only else rep["projection"]
        for mode in (() if a.baseline_only else MODES):
            small, big = pairs[-1]
            s_ = next(x for x in rep["slopes"] if x["mode"] == mode and x["pair"] == [small, big])
            rs = by[mode, small, "cold"]
            k = (FULL_SDNET - small) / 1000
            fb = rs["feature_bytes_per_image"]
            base = max(rs["peak_rss_mb"], by[mode, big, "warm"]["peak_rss_mb"])
            rep["projection"].append({"mode": mode, "images": FULL_SDNET,
                                      "wall_h": (rs["wall_s"] + k * s_["wall_s_per_1000"]) / 3600,
                                      "peak_rss_gb": (base + (FULL_SDNET - big) / 1000
                                                      * max(s_["peak_rss_mb_per_1000"], 0)) / 1024,
                                      "feature_disk_gb": None if fb is None else 2 * fb * FULL_SDNET / 1e9})
        if a.baseline:
            runs = []
            for small, big in pairs:
                for n in (small, big):
                    r = measured_train(tmp / f"data-{n}", tmp / f"baseline-{n}", tmp / f"cache-fine-tuned-{small}",
                                       MODES["fine-tuned"], str(a.baseline))
                    r.update(images=n)
                    runs.append(r)
                    print(f"baseline   {n:5d} images: peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
            bn = {r["images"]: r for r in runs}
            head = subprocess.run(["git", "-C", str(a.baseline), "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip()
            rep["baseline"] = {"source": f"commit {head}" if head else str(a.baseline), "runs": runs,
                               "slopes": [{"pair": list(p), "peak_rss_mb_per_1000":
                                           slope(bn[p[0]], bn[p[1]], *p, "peak_rss_mb")} for p in pairs]}
        if not a.baseline_only:
            rep["load_average"] = [load0, os.getloadavg()[0]]
        atomic_write_json(a.out / "scale.json", rep)
        atomic_write_text(a.out / "scale.md", markdown(rep))
        print(f"wrote {a.out / 'scale.md'}")
    finally:
        if a.work is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

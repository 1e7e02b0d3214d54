"""``edgecrack bench``: every artifact of a run on every backend here, into one report.

Orchestration only: what to measure comes from :mod:`.config`, the cells from :mod:`.cells`,
each measurement from :mod:`.measure`, agreement with the reference from
:mod:`edgecrack.compare`, goals and summary from :mod:`.goals`, rendering from :mod:`.render`.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..artifacts import Artifact, run_artifacts
from ..compare import compare_probs
from ..data import DEFAULT_DATASET, discover
from ..errors import ArtifactError, BackendUnavailable, ConfigError, DatasetError
from ..platform import environment, usable_cores
from ..progress import Reporter
from ..runtime.registry import probe_backend
from .cells import open_cell_backend, plan, restore_torch_threads, torch_threads
from .config import BACKENDS, BenchConfig
from .goals import goals_of, method_notes, reference_index, summarize
from .measure import accuracy_probs, e2e_paths, measure_compute, measure_e2e, measure_overhead, measure_speedup
from .memory import MemoryProbe
from .render import write_report
from .schema import SCHEMA, BatchResult, BenchReport, CellResult, read_report
from .training import training_section


class _Steps:
    """The benchmark's steps, counted against one total and reported as ``(phase, done, total)``."""

    def __init__(self, rep: Reporter, total: int):
        self.rep, self.total, self.done, self.phase = rep, total, 0, "bench"

    def step(self, phase: str) -> None:
        """A step starts (``phase`` says which)."""
        self.phase = phase
        self.rep.progress(phase, self.done, self.total)

    def advance(self, n: int = 1) -> None:
        """``n`` steps finished (or were skipped)."""
        self.done += n
        self.rep.progress(self.phase, self.done, self.total)

    def message(self, text: str) -> None:
        self.rep.message(text)


def _steps_per_cell(cfg: BenchConfig) -> int:
    return 2 * len(cfg.batches) + (1 if cfg.accuracy else 0)


def bench(cfg: BenchConfig, reporter: Reporter | None = None) -> BenchReport:
    """Benchmark every artifact of a run on every backend this machine has.

    Args:
        cfg: What to measure (see :class:`~edgecrack.bench.config.BenchConfig`).
        reporter: Progress (:mod:`edgecrack.progress`; silent by default): one ``(step, done, total)``
            count over the whole benchmark, and a message per cell that cannot run.

    Returns:
        The report; write it with :func:`~edgecrack.bench.render.write_report`.

    Raises:
        ArtifactError: No artifact in ``cfg.run``.
        DatasetError: ``cfg.data`` has no images, or labels the model does not know.
        ConfigError: Invalid settings.
    """
    cfg.validate()
    threads = cfg.threads or usable_cores()
    data = Path(cfg.data) if cfg.data else DEFAULT_DATASET
    arts = run_artifacts(cfg.run)
    if cfg.artifacts is not None:
        want = set(cfg.artifacts)
        missing = want - {a.name for a in arts}
        if missing:
            raise ConfigError(f"no artifact named {sorted(missing)} in {cfg.run}",
                              f"artifacts there: {', '.join(a.name for a in arts)}")
        arts = [a for a in arts if a.name in want]
    if cfg.accuracy:
        # Fail before minutes of measurement, not after them.
        classes = set(discover(data, "folder", min_classes=1).classes)
        for a in arts:
            if a.manifest is not None and classes - set(a.manifest.labels):
                raise DatasetError(f"{data} has classes {sorted(classes - set(a.manifest.labels))} that {a.name} does not "
                                   f"know (it knows {a.manifest.labels})",
                                   "benchmark accuracy on folders named after the model's labels (--data), or use --no-accuracy")
    paths = e2e_paths(data, cfg.e2e_images)
    env = environment()
    cells = plan(arts, cfg.backends)
    if not cells:
        raise ConfigError(f"none of the backends {list(cfg.backends or [])} runs the artifacts in {cfg.run}",
                          f"artifacts: {', '.join(a.name + ' (' + a.family + ')' for a in arts)}; backends: {', '.join(BACKENDS)}")
    budget = cfg.budget
    rep = _Steps(reporter or Reporter(), len(cells) * _steps_per_cell(cfg) + 3)
    results: list[CellResult] = []
    probs_of: dict[int, dict[str, np.ndarray]] = {}
    manifests: dict[int, Any] = {}
    baseline: dict[str, Any] = {}
    for art, bname in cells:
        cell = CellResult(art.name, str(art.path), art.kind, art.precision, art.size_bytes, bname, "ok")
        rep.step(f"{art.name} on {bname}: loading")
        # Probing imports the backend's library, so the memory baseline below excludes the import.
        why = probe_backend(bname)
        saved_threads = torch_threads()
        mem = MemoryProbe()
        t0 = time.perf_counter()
        try:
            if why:
                raise BackendUnavailable(why)
            backend = open_cell_backend(art, bname, threads)
        except BackendUnavailable as e:
            cell.status, cell.reason = "unavailable", e.message
        except ArtifactError as e:
            cell.status, cell.reason = "error", e.message
        if not cell.ok:
            results.append(cell)
            rep.message(f"{art.name} on {bname}: {cell.status}: {cell.reason}")
            rep.advance(_steps_per_cell(cfg))
            continue
        try:
            cell.load_ms = (time.perf_counter() - t0) * 1e3
            mem.loaded()
            cell.info = backend.info()
            for b in cfg.batches:
                rep.step(f"{art.name} on {bname}: batch {b} compute")
                comp = measure_compute(backend, paths, b, budget)
                rep.advance()
                rep.step(f"{art.name} on {bname}: batch {b} end to end")
                e2e, stages = measure_e2e(backend, paths, b, budget)
                rep.advance()
                cell.batches.append(BatchResult(b, comp, e2e, stages))
            if cfg.accuracy:
                rep.step(f"{art.name} on {bname}: accuracy on {data.name}")
                cell.accuracy, probs_of[len(results)] = accuracy_probs(backend, data, cfg.accuracy_images)
                manifests[len(results)] = art.manifest
                rep.advance()
            cell.memory = mem.result()
            if (cfg.baseline and "bare_onnxruntime" not in baseline and bname == "onnxruntime-cpu"
                    and art.kind == "onnx" and art.precision == "fp32"):
                rep.step(f"{art.name}: edgecrack vs bare onnxruntime (batch 1, interleaved)")
                baseline["bare_onnxruntime"] = measure_overhead(backend, paths, threads, budget)
        finally:
            backend.close()
            del backend
            restore_torch_threads(saved_threads)
        results.append(cell)
    rep.advance()
    by_key = {(a.name, b): a for a, b in cells}
    if cfg.baseline:
        baseline.update(_cpu_pair(results, by_key, paths, threads, cfg, rep))
    rep.advance()
    if cfg.baseline:
        baseline.update(_torch_baseline(results, by_key, paths, threads, cfg, rep, baseline.get("cpu_pair")))
    rep.advance()
    _agreement(results, probs_of, manifests)
    report = BenchReport(schema=SCHEMA, edgecrack_version=__version__,
                         created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                         run=str(cfg.run), config={**cfg.to_dict(), "threads_resolved": threads, "data_resolved": str(data),
                                                   "e2e_files": len(paths)},
                         environment=env, results=results, baseline=baseline)
    report.environment["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report.goals = goals_of(report)
    report.notes = method_notes(report, data)
    if cfg.train_json:
        report.training = training_section(cfg.train_json)
    report.summary = summarize(report)
    return report


def _side_by_side(slow: CellResult, fast: CellResult, arts: dict[tuple[str, str], Artifact], paths: list[Path],
                  threads: int, cfg: BenchConfig) -> dict[str, Any]:
    """Two measured cells timed against each other at batch 1 in alternating blocks (:func:`measure_speedup`).

    onnxruntime sessions are opened without spin-waiting: with it, each session's idle threads held
    the cores through the other's calls, both sides ran slower than in their own loops and the
    ratio of FP32 and INT8 of the default came out near 1."""
    prev = torch_threads()
    sb = open_cell_backend(arts[(slow.artifact, slow.backend)], slow.backend, threads, spin=False)
    fb = open_cell_backend(arts[(fast.artifact, fast.backend)], fast.backend, threads, spin=False)
    try:
        out = measure_speedup(sb, fb, paths, cfg.budget)
    finally:
        sb.close()
        fb.close()
        restore_torch_threads(prev)
    return {"slow_cell": slow.label, "fast_cell": fast.label, "threads": threads, "onnxruntime_spin_wait": False, **out}


def _cpu_pair(results: list[CellResult], arts: dict[tuple[str, str], Artifact], paths: list[Path],
              threads: int, cfg: BenchConfig, rep: _Steps) -> dict[str, Any]:
    """The two fastest onnxruntime CPU cells at batch 1 (by their separate loops), timed side by side.

    Separate loops run seconds to minutes apart; on a shared machine their order is a coin toss for
    artifacts within ~20 % of each other (FP32 and INT8 of the default on the 2-core build box), and
    the summary's "faster than the runner-up" and the eager-PyTorch goal's "fastest CPU artifact"
    rest on it."""
    cpu = sorted((c for c in results if c.ok and c.backend == "onnxruntime-cpu" and c.batch(1)),
                 key=lambda c: c.batch(1).compute.p50_ms)
    if len(cpu) < 2:
        return {}
    rep.step(f"{cpu[0].label} vs {cpu[1].label} (batch 1, interleaved)")
    return {"cpu_pair": _side_by_side(cpu[1], cpu[0], arts, paths, threads, cfg)}


def _torch_baseline(results: list[CellResult], arts: dict[tuple[str, str], Artifact], paths: list[Path],
                    threads: int, cfg: BenchConfig, rep: _Steps, cpu_pair: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    torch_cell = next((c for c in results if c.ok and c.backend == "torch-cpu" and c.batch(1)), None)
    cpu = [c for c in results if c.ok and c.backend == "onnxruntime-cpu" and c.batch(1)]
    if torch_cell is None or not cpu:
        return {}
    fast = min(cpu, key=lambda c: c.batch(1).compute.p50_ms)
    if cpu_pair:  # the side-by-side measurement of the two fastest decides which is the fastest
        name = cpu_pair["fast_cell"] if cpu_pair["ratio_p50"] >= 1 else cpu_pair["slow_cell"]
        fast = next(c for c in cpu if c.label == name)
    rep.step(f"eager PyTorch vs {fast.label} (batch 1, interleaved)")
    return {"eager_torch": _side_by_side(torch_cell, fast, arts, paths, threads, cfg)}


def _agreement(results: list[CellResult], probs_of: dict[int, dict[str, np.ndarray]],
               manifests: dict[int, Any]) -> None:
    """Each measured cell against the reference, on the images both scored (:func:`edgecrack.compare.compare_probs`).

    Decisions are compared at each artifact's own threshold: that is what a user of each gets.
    """
    ref = reference_index(results)
    if ref is None or ref not in probs_of:
        return
    rp = probs_of[ref]
    ref_thr = results[ref].accuracy.threshold if results[ref].accuracy else None
    for i, c in enumerate(results):
        if i not in probs_of or c.accuracy is None:
            continue
        common = [k for k in probs_of[i] if k in rp]
        if not common:
            continue
        m = manifests.get(i)
        agree = compare_probs(np.stack([probs_of[i][k] for k in common]), np.stack([rp[k] for k in common]),
                              positive_index=m.positive_index if m is not None else None,
                              threshold=c.accuracy.threshold, reference_threshold=ref_thr)
        c.accuracy.agreement = agree.decision_agreement
        c.accuracy.max_abs_prob_diff = agree.max_abs_diff


def fold_training(report_path: str | Path, train_json: str | Path, out_dir: str | Path | None = None) -> BenchReport:
    """Add a training benchmark to an existing report and rewrite its JSON/Markdown/PNG.

    Args:
        report_path: An existing ``bench.json``.
        train_json: The ``train.json`` of ``benchmarks/bench_train.py``.
        out_dir: Where to write (default: the report's folder).
    """
    report = read_report(report_path)
    report.training = training_section(train_json)
    report.summary = summarize(report)
    write_report(report, out_dir or Path(report_path).parent)
    return report

"""edgecrack bench: statistics, report schema, --compare, and a short real benchmark."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecrack.bench import (SCHEMA, BenchConfig, BenchReport, LatencyStats, artifacts_of_run, bench, compare_reports,
                             percentile, read_report, report_markdown, training_section, write_report)
from edgecrack.cli import app
from edgecrack.errors import ArtifactError, ConfigError
from edgecrack.runtime import OnnxRuntimeBackend

runner = CliRunner()


# -- statistics -----------------------------------------------------------------------
def test_percentile_matches_hand_computed_values():
    xs = [7, 3, 1, 10, 2, 9, 4, 8, 6, 5]  # 1..10 shuffled
    # rank r = q/100 * (n-1); p50: r=4.5 -> 5 + 0.5*(6-5); p90: r=8.1 -> 9 + 0.1; p99: r=8.91 -> 9 + 0.91
    assert percentile(xs, 50) == pytest.approx(5.5)
    assert percentile(xs, 90) == pytest.approx(9.1)
    assert percentile(xs, 99) == pytest.approx(9.91)
    assert percentile(xs, 0) == 1 and percentile(xs, 100) == 10
    assert percentile([42.0], 99) == 42.0
    assert percentile([1, 2, 3, 4], 25) == pytest.approx(1.75)  # r=0.75
    rng = np.random.default_rng(0)
    ys = rng.exponential(5, 101).tolist()
    for q in (50, 90, 99):
        assert percentile(ys, q) == pytest.approx(float(np.percentile(ys, q)))
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1, 2], 101)


def test_latency_stats_from_samples():
    s = LatencyStats.from_samples([10.0, 20.0, 30.0, 40.0], batch=2, wall_s=0.2)
    assert (s.n, s.batch) == (4, 2)
    assert s.mean_ms == 25.0 and s.min_ms == 10.0 and s.max_ms == 40.0
    assert s.p50_ms == pytest.approx(25.0)
    assert s.p90_ms == pytest.approx(37.0)  # r=2.7 -> 30 + 0.7*10
    assert s.p99_ms == pytest.approx(39.7)
    assert s.std_ms == pytest.approx(math.sqrt(125.0))
    assert s.images_per_s == pytest.approx(40.0)  # 2 images * 4 calls / 0.2 s
    assert s.per_image_ms == pytest.approx(12.5)
    # Without a wall time the loop time is the sum of the calls: 8 images / 0.1 s.
    assert LatencyStats.from_samples([10.0, 20.0, 30.0, 40.0], batch=2).images_per_s == pytest.approx(80.0)
    big = LatencyStats.from_samples(np.arange(5000, dtype=float), batch=1)
    assert big.n == 5000 and len(big.samples_ms) == 2000 and big.samples_ms[0] == 0 and big.samples_ms[-1] == 4999


# -- synthetic reports -----------------------------------------------------------------
def _stats(p50: float, batch: int = 1) -> dict:
    return LatencyStats.from_samples([p50 * 0.9, p50, p50 * 1.1], batch, wall_s=3 * p50 / 1e3).__dict__


def _report_dict(onnx_p50: float = 10.0, torch_p50: float = 40.0, acc: float = 0.9, cpu: str = "Test CPU") -> dict:
    def cell(artifact, backend, kind, p50):
        return {"artifact": artifact, "path": f"/runs/x/{artifact}", "kind": kind, "precision": "fp32",
                "size_bytes": 1000, "backend": backend, "status": "ok", "reason": None,
                "info": {"backend": backend}, "load_ms": 5.0, "memory": {"peak_delta_mb": 50.0},
                "batches": [{"batch": 1, "compute": _stats(p50), "e2e": _stats(p50 * 1.1),
                             "stages_ms": {"decode": 0.5, "preprocess": 0.1, "infer": p50, "postprocess": 0.01}},
                            {"batch": 8, "compute": _stats(p50 * 6, 8), "e2e": None, "stages_ms": {}}],
                "accuracy": {"n": 400, "accuracy": acc, "roc_auc": 0.95, "f1_positive": 0.88, "threshold": 0.5,
                             "agreement": 1.0, "max_abs_prob_diff": 0.0, "skipped": 0, "seconds": 1.0}}

    return {"schema": SCHEMA, "edgecrack_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00", "run": "/runs/x",
            "config": {"accuracy_budget": 0.01, "threads_resolved": 2},
            "environment": {"cpu": {"model": cpu, "usable_cores": 2}, "gpu": [], "versions": {}},
            "results": [cell("checkpoint.safetensors", "torch-cpu", "checkpoint", torch_p50),
                        cell("model.onnx", "onnxruntime-cpu", "onnx", onnx_p50),
                        {"artifact": "model.onnx", "path": "/runs/x/model.onnx", "kind": "onnx", "precision": "fp32",
                         "size_bytes": 1000, "backend": "onnxruntime-cuda", "status": "unavailable",
                         "reason": "onnxruntime has no CUDAExecutionProvider"}],
            "baseline": {}, "goals": [], "summary": {}, "training": None, "notes": []}


def _write(tmp_path: Path, name: str, d: dict) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def test_report_schema_round_trip(tmp_path):
    rep = BenchReport.from_dict(_report_dict())
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["schema"] == "edgecrack.bench/1"
    again = BenchReport.from_dict(d)
    assert again == rep
    assert again.results[2].reason == "onnxruntime has no CUDAExecutionProvider"
    assert again.cell("model.onnx", "onnxruntime-cpu").batch(8).compute.batch == 8
    # Keys added by a later minor version are ignored, not fatal.
    d["results"][1]["added_later"] = 1
    d["added_later"] = {}
    assert BenchReport.from_dict(d).results[1].artifact == "model.onnx"
    newer = dict(d, schema="edgecrack.bench/2")
    with pytest.raises(ArtifactError, match="newer edgecrack"):
        BenchReport.from_dict(newer)
    with pytest.raises(ConfigError, match="not an edgecrack bench report"):
        BenchReport.from_dict({"schema": "something/1"})
    broken = copy.deepcopy(d)
    del broken["results"][0]["batches"][0]["compute"]
    with pytest.raises(ConfigError, match="malformed"):
        BenchReport.from_dict(broken)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_report(bad)


def test_compare_library_ratios_and_regressions():
    old = BenchReport.from_dict(_report_dict(onnx_p50=10.0))
    same = compare_reports(old, BenchReport.from_dict(_report_dict(onnx_p50=11.0)), tolerance=0.15)
    assert same.passed
    row = next(r for r in same.rows if r.cell == "model.onnx / onnxruntime-cpu" and r.batch == 1 and r.metric == "compute_p50_ms")
    assert row.ratio == pytest.approx(1.1)
    slow = compare_reports(old, BenchReport.from_dict(_report_dict(onnx_p50=12.0)), tolerance=0.15)
    assert not slow.passed
    bad = {(r.cell, r.batch, r.metric) for r in slow.regressions}
    assert ("model.onnx / onnxruntime-cpu", 1, "compute_p50_ms") in bad
    assert ("model.onnx / onnxruntime-cpu", 1, "images_per_s") in bad  # 1/1.2 < 1/1.15
    assert all(r.cell == "model.onnx / onnxruntime-cpu" for r in slow.regressions)
    acc = compare_reports(old, BenchReport.from_dict(_report_dict(acc=0.88)), accuracy_tolerance=0.01)
    assert [(r.metric, r.note) for r in acc.regressions] == [("accuracy", "-0.020"), ("accuracy", "-0.020")]
    gone = _report_dict()
    gone["results"][1]["status"], gone["results"][1]["reason"] = "unavailable", "no CPU provider"
    lost = compare_reports(old, BenchReport.from_dict(gone))
    assert [(r.metric, r.note) for r in lost.regressions] == [("status", "unavailable: no CPU provider")]
    other = compare_reports(old, BenchReport.from_dict(_report_dict(cpu="Other CPU")))
    assert other.passed and "different CPUs" in other.notes[0]
    empty = _report_dict()
    empty["results"] = []
    vanished = compare_reports(old, BenchReport.from_dict(empty))
    assert [r.note for r in vanished.regressions] == ["not in the new report"] * 2
    with pytest.raises(ConfigError, match="no measured artifact x backend in common"):
        compare_reports(BenchReport.from_dict(empty), old)


def test_compare_cli_exit_codes(tmp_path):
    old = _write(tmp_path, "old.json", _report_dict(onnx_p50=10.0))
    ok = _write(tmp_path, "ok.json", _report_dict(onnx_p50=10.5))
    slow = _write(tmp_path, "slow.json", _report_dict(onnx_p50=13.0))
    r = runner.invoke(app, ["bench", str(ok), "--compare", str(old)])
    assert r.exit_code == 0, r.output
    assert "no regression" in r.output and "1.05x" in r.output
    r = runner.invoke(app, ["bench", str(slow), "--compare", str(old), "--tolerance", "0.15"])
    assert r.exit_code == 3, r.output
    assert "REGRESSED" in r.output and "1.30x" in r.output
    # A looser tolerance lets the same numbers pass.
    assert runner.invoke(app, ["bench", str(slow), "--compare", str(old), "--tolerance", "0.35"]).exit_code == 0
    r = runner.invoke(app, ["bench", str(ok), "--compare", str(tmp_path / "missing.json")])
    assert r.exit_code == 1 and "bench report not found" in r.output
    r = runner.invoke(app, ["bench", str(ok), "--compare", str(old), "--duration", "1", "--iterations", "3"])
    assert r.exit_code == 1 and "exclude each other" in r.output


def test_training_section_folds_into_report(tmp_path):
    train = {"schema": "edgecrack.bench.train/1", "machine": {"cpu": "Test CPU", "cores": 2},
             "cv": {"folds": 5, "accuracy_mean": 0.86, "accuracy_folds": [0.85, 0.86, 0.87, 0.86, 0.86]},
             "wall_time_s": {"cold": 190.0, "warm": 21.5}, "bottleneck_images_per_s": 20.5}
    sec = training_section(train)
    assert sec["cv"]["accuracy_std"] == pytest.approx(float(np.std([0.85, 0.86, 0.87, 0.86, 0.86])))
    assert sec["cv"]["accuracy_min"] == 0.85 and sec["wall_time_s"] == {"cold": 190.0, "warm": 21.5}
    with pytest.raises(ConfigError, match="not a training benchmark"):
        training_section({"schema": "edgecrack.bench/1"})
    with pytest.raises(ConfigError, match="malformed"):
        training_section({"schema": "edgecrack.bench.train/1", "cv": {}})
    rep_path = _write(tmp_path, "bench.json", _report_dict())
    tj = _write(tmp_path, "train.json", train)
    out = tmp_path / "out"
    r = runner.invoke(app, ["bench", str(rep_path), "--train-json", str(tj), "--report", str(out)])
    assert r.exit_code == 0, r.output
    md = (out / "bench.md").read_text()
    assert "## Training" in md and "| 5-fold CV accuracy | 0.860 ± 0.006" in md and "20.5 images/s" in md
    assert read_report(out / "bench.json").training["cv"]["folds"] == 5


def test_bench_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import edgecrack.bench, edgecrack.cli\n"
            "assert 'bench' in [c.name for c in edgecrack.cli.app.registered_commands]\n"
            "assert edgecrack.bench.BenchConfig(run='x').validate().batches == (1, 8, 32)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown backend"):
        BenchConfig(run="x", backends=("onnxruntime-gpu",)).validate()
    with pytest.raises(ConfigError, match="batch sizes"):
        BenchConfig(run="x", batches=(0,)).validate()
    assert BenchConfig(run="x", backends=("torch", "ort"), batches=(8, 1, 8)).validate().backends == ("torch-cpu", "onnxruntime-cpu")
    assert BenchConfig(run="x", batches=(8, 1, 8)).validate().batches == (1, 8)


# -- real benchmark ----------------------------------------------------------------------
def test_short_real_bench_writes_a_complete_report(trained_run, holdout_deck, tmp_path):
    # One thread: OpenMP/ORT thread pools on a shared 2-core machine turn contention into seconds.
    torch = pytest.importorskip("torch")
    threads_before = torch.get_num_threads()
    data = tmp_path / "deck"
    for cls in ("CD", "UD"):
        (data / cls).mkdir(parents=True)
        for p in sorted((holdout_deck / cls).glob("*.jpg"))[:6]:
            shutil.copy(p, data / cls / p.name)
    out = tmp_path / "report"
    r = runner.invoke(app, ["bench", str(trained_run), "--backends", "onnxruntime-cpu,onnxruntime-cuda,torch-cpu",
                            "--batch", "1,2", "--iterations", "3", "--warmup", "1", "--threads", "1",
                            "--data", str(data), "--e2e-images", "6", "--report", str(out)])
    assert r.exit_code == 0, r.output
    assert "summary" in r.output and "fastest within the accuracy budget" in r.output
    for name in ("bench.json", "bench.md", "bench.png"):
        assert (out / name).stat().st_size > 500, name
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = json.loads((out / "bench.json").read_text())
    rep = BenchReport.from_dict(raw)
    assert rep.schema == SCHEMA and rep.config["threads_resolved"] == 1 and rep.config["iterations"] == 3
    env = rep.environment
    assert env["cpu"]["model"] and env["cpu"]["logical_cores"] >= 1 and env["versions"]["onnxruntime"]
    assert env["versions"]["opencv"] and "gpu" in env and "jetson" in env

    ort = rep.cell("model.onnx", "onnxruntime-cpu")
    torch_cell = rep.cell("checkpoint.safetensors", "torch-cpu")
    for c in (ort, torch_cell):
        assert c.ok and c.size_bytes == Path(c.path).stat().st_size > 0
        assert c.load_ms > 0 and c.info["threads"] == 1
        assert c.memory["peak_delta_mb"] is not None and c.memory["peak_delta_mb"] >= c.memory["rss_after_load_delta_mb"] - 1
        assert [b.batch for b in c.batches] == [1, 2]
        for b in c.batches:
            assert b.compute.n == 3 and b.e2e.n == 3 and b.compute.batch == b.batch
            assert 0 < b.compute.min_ms <= b.compute.p50_ms <= b.compute.p90_ms <= b.compute.p99_ms <= b.compute.max_ms
            assert b.compute.images_per_s == pytest.approx(b.batch * 3 / b.compute.wall_s)
            stages = sum(b.stages_ms.values())
            assert set(b.stages_ms) == {"decode", "preprocess", "infer", "postprocess"}
            assert stages == pytest.approx(b.e2e.mean_ms, rel=0.05)
        assert c.accuracy.n == 12 and 0.0 <= c.accuracy.accuracy <= 1.0
    assert ort.info["library"].startswith("onnxruntime") and torch_cell.info["library"].startswith("torch")
    # The FP32 ONNX is the reference; the checkpoint agrees with it image for image.
    assert ort.accuracy.agreement == 1.0 and ort.accuracy.max_abs_prob_diff == 0.0
    assert torch_cell.accuracy.agreement == 1.0 and torch_cell.accuracy.max_abs_prob_diff < 1e-3
    assert torch_cell.accuracy.accuracy == ort.accuracy.accuracy

    cuda = rep.cell("model.onnx", "onnxruntime-cuda")
    why = OnnxRuntimeBackend.probe("cuda")
    if why is not None:
        assert cuda.status == "unavailable" and cuda.reason == why and not cuda.batches
        assert f"unavailable: {why}" in (out / "bench.md").read_text()
        assert cuda.label in rep.summary["unavailable"]

    goals = {g.name: g for g in rep.goals}
    ov = goals["overhead_vs_bare_onnxruntime"]
    bare = rep.baseline["bare_onnxruntime"]
    assert ov.value == pytest.approx(bare["e2e"]["p50_ms"] / bare["bare"]["p50_ms"])
    assert ov.met == (ov.value <= 1.15) and bare["bare"]["n"] >= 3 and bare["threads"] == 1
    sp = goals["speedup_vs_eager_torch"]
    et = rep.baseline["eager_torch"]
    assert sp.value == pytest.approx(et["slow"]["p50_ms"] / et["fast"]["p50_ms"])
    assert sp.met == (sp.value >= 3.0) and et["slow"]["n"] >= 3 and et["fast"]["n"] == et["slow"]["n"]
    assert sp.detail["fastest"] == et["fast_cell"] == "model.onnx / onnxruntime-cpu"
    assert rep.summary["fastest"]["batch"] == 1
    md = (out / "bench.md").read_text()
    for s in ("## Summary", "## Goals", "## Results", "End-to-end stages", "### Accuracy", "## Environment",
              "## Configuration", "overhead_vs_bare_onnxruntime", "speedup_vs_eager_torch"):
        assert s in md, s
    assert md == report_markdown(rep)
    assert torch.get_num_threads() == threads_before  # the benchmark leaves torch's thread count alone


def test_corrupt_artifact_is_reported_not_fatal(trained_run, holdout_deck, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    data = (trained_run / "model.onnx").read_bytes()
    (run / "model.onnx").write_bytes(data[: len(data) // 3])
    shutil.copy(trained_run / "model.onnx.json", run / "model.onnx.json")
    assert [a.name for a in artifacts_of_run(run)] == ["model.onnx"]
    rep = bench(BenchConfig(run=str(run), backends=("onnxruntime-cpu",), iterations=1, warmup=0, data=str(holdout_deck)))
    (cell,) = rep.results
    assert cell.status == "error" and "cannot load" in cell.reason
    assert rep.summary["fastest"] is None and "nothing could be measured" in rep.summary["lines"][0]
    paths = write_report(rep, tmp_path / "out")
    assert "png" not in paths and any(n.startswith("plots skipped") for n in rep.notes)
    with pytest.raises(ArtifactError, match="holds no checkpoint"):
        artifacts_of_run(tmp_path / "out")

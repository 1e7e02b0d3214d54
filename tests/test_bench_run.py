"""edgecrack.bench.run: configuration, a short real benchmark, and what happens with a broken artifact."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecrack.bench import SCHEMA, BenchConfig, BenchReport, artifacts_of_run, bench, report_markdown, write_report
from edgecrack.cli import app
from edgecrack.errors import ArtifactError, ConfigError
from edgecrack.runtime import OnnxRuntimeBackend

runner = CliRunner()


def test_bench_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import edgecrack.bench, edgecrack.cli\n"
            "assert 'bench' in [c.name for c in edgecrack.cli.app.registered_commands]\n"
            "assert edgecrack.bench.BenchConfig(run='x').validate().batches == (1, 8)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown backend"):
        BenchConfig(run="x", backends=("onnxruntime-gpu",)).validate()
    with pytest.raises(ConfigError, match="batch sizes"):
        BenchConfig(run="x", batches=(0,)).validate()
    assert BenchConfig(run="x", backends=("torch", "ort"), batches=(8, 1, 8)).validate().backends == ("torch-cpu", "onnxruntime-cpu")
    assert BenchConfig(run="x", batches=(8, 1, 8)).validate().batches == (1, 8)
    with pytest.raises(ConfigError, match="cannot be benchmarked"):
        BenchConfig(run="x", backends=("triton",)).validate()
    with pytest.raises(ConfigError, match="accuracy-images"):
        BenchConfig(run="x", accuracy_images=1).validate()


def test_default_preset_is_short_and_full_is_long():
    quick, full = BenchConfig(run="x"), BenchConfig.full("x", warmup=1)
    assert (quick.preset, quick.batches, quick.duration_s, quick.min_iterations, quick.accuracy_images) == (
        "quick", (1, 8), 1.0, 5, 100)
    assert (full.preset, full.batches, full.duration_s, full.min_iterations, full.accuracy_images, full.e2e_images) == (
        "full", (1, 8, 32), 3.0, 10, None, 64)
    assert full.warmup == 1  # an option given with --full overrides the preset
    assert quick.budget.duration_s == 1.0 and full.budget.min_iterations == 10


def test_full_flag_reaches_the_report_and_options_override_it(trained_onnx, holdout_deck, tmp_path):
    out = tmp_path / "report"
    r = runner.invoke(app, ["bench", str(trained_onnx), "--full", "--backends", "onnxruntime-cpu", "--batch", "1",
                            "--iterations", "2", "--warmup", "0", "--threads", "1", "--no-baseline",
                            "--data", str(holdout_deck), "--report", str(out)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "bench.json").read_text())["config"]
    assert (cfg["preset"], cfg["batches"], cfg["iterations"], cfg["warmup"], cfg["e2e_images"], cfg["accuracy_images"]) == (
        "full", [1], 2, 0, 64, None)
    rep = BenchReport.from_dict(json.loads((out / "bench.json").read_text()))
    assert rep.results[0].accuracy.n == 40  # --full scores every labelled image


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


def test_bench_reports_progress_through_the_one_protocol(tiny_run, holdout_deck):
    """bench counts its steps against one total and reports them as ``(phase, done, total)``; a
    backend that cannot run is a message (torch-free: the committed tiny model)."""
    from edgecrack.progress import Reporter

    class Recorder(Reporter):
        def __init__(self):
            self.calls, self.messages = [], []

        def progress(self, phase, done, total):
            self.calls.append((phase, done, total))

        def message(self, text):
            self.messages.append(text)

    rec = Recorder()
    bench(BenchConfig(run=str(tiny_run), backends=("onnxruntime-cpu", "onnxruntime-cuda"), iterations=1, warmup=0,
                      e2e_images=2, accuracy=False, baseline=False, data=str(holdout_deck)), rec)
    totals = {t for _, _, t in rec.calls}
    assert len(totals) == 1 and rec.calls[-1][1] == totals.pop()  # one total, reached at the end
    assert [d for _, d, _ in rec.calls] == sorted(d for _, d, _ in rec.calls)  # never goes back
    assert any("batch 1 compute" in p for p, _, _ in rec.calls)
    from edgecrack.runtime.registry import probe_backend

    if probe_backend("onnxruntime-cuda"):  # no CUDA here: said once, with the reason
        assert [m for m in rec.messages if "onnxruntime-cuda" in m and "unavailable" in m]

"""edgecrack.bench.compare and ``bench --compare``: ratios, regressions, exit codes."""

from __future__ import annotations

import pytest
from bench_reports import report_dict, write
from typer.testing import CliRunner

from edgecrack.bench import BenchReport, compare_reports
from edgecrack.cli import app
from edgecrack.errors import ConfigError

runner = CliRunner()


def test_compare_library_ratios_and_regressions():
    old = BenchReport.from_dict(report_dict(onnx_p50=10.0))
    same = compare_reports(old, BenchReport.from_dict(report_dict(onnx_p50=11.0)), tolerance=0.15)
    assert same.passed
    row = next(r for r in same.rows if r.cell == "model.onnx / onnxruntime-cpu" and r.batch == 1 and r.metric == "compute_p50_ms")
    assert row.ratio == pytest.approx(1.1)
    slow = compare_reports(old, BenchReport.from_dict(report_dict(onnx_p50=12.0)), tolerance=0.15)
    assert not slow.passed
    bad = {(r.cell, r.batch, r.metric) for r in slow.regressions}
    assert ("model.onnx / onnxruntime-cpu", 1, "compute_p50_ms") in bad
    assert ("model.onnx / onnxruntime-cpu", 1, "images_per_s") in bad  # 1/1.2 < 1/1.15
    assert all(r.cell == "model.onnx / onnxruntime-cpu" for r in slow.regressions)
    acc = compare_reports(old, BenchReport.from_dict(report_dict(acc=0.88)), accuracy_tolerance=0.01)
    assert [(r.metric, r.note) for r in acc.regressions] == [("accuracy", "-0.020"), ("accuracy", "-0.020")]
    gone = report_dict()
    gone["results"][1]["status"], gone["results"][1]["reason"] = "unavailable", "no CPU provider"
    lost = compare_reports(old, BenchReport.from_dict(gone))
    assert [(r.metric, r.note) for r in lost.regressions] == [("status", "unavailable: no CPU provider")]
    other = compare_reports(old, BenchReport.from_dict(report_dict(cpu="Other CPU")))
    assert other.passed and "different CPUs" in other.notes[0]
    empty = report_dict()
    empty["results"] = []
    vanished = compare_reports(old, BenchReport.from_dict(empty))
    assert [r.note for r in vanished.regressions] == ["not in the new report"] * 2
    with pytest.raises(ConfigError, match="no measured artifact x backend in common"):
        compare_reports(BenchReport.from_dict(empty), old)


def test_compare_cli_exit_codes(tmp_path):
    old = write(tmp_path, "old.json", report_dict(onnx_p50=10.0))
    ok = write(tmp_path, "ok.json", report_dict(onnx_p50=10.5))
    slow = write(tmp_path, "slow.json", report_dict(onnx_p50=13.0))
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

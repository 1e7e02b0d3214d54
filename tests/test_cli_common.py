"""edgecrack.cli.common: output piped to a file or a journal is not hard-wrapped (real subprocesses,
stdout a pipe); the one progress renderer draws every library progress protocol."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from rich.console import Console

from bench_reports import report_dict, write

from edgecrack.bench import BenchReport, goals_of, summarize
from edgecrack.cli import common
from edgecrack.progress import Reporter


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    return env


def test_console_on_a_pipe_does_not_wrap():
    line = " ".join(f"word{i}" for i in range(40))  # 277 characters
    r = subprocess.run([sys.executable, "-c", f"from edgecrack.cli.common import console, err_console\n"
                        f"console.print({line!r}); err_console.print({line!r})"],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == line + "\n" and r.stderr == line + "\n"


def test_cli_summary_piped_to_a_file_keeps_long_lines_whole(tmp_path):
    report = BenchReport.from_dict(report_dict())
    report.goals = goals_of(report)
    report.summary = summarize(report)
    rep = write(tmp_path, "bench.json", report.to_dict())
    with open(tmp_path / "out.txt", "w") as f:
        r = subprocess.run([sys.executable, "-m", "edgecrack.cli", "bench", str(rep)], stdout=f, stderr=subprocess.PIPE,
                           text=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    out = (tmp_path / "out.txt").read_text().splitlines()
    want = ("  fastest within the accuracy budget: model.onnx / onnxruntime-cpu — 10.00 ms p50 at batch 1, "
            "11.00 ms end to end, accuracy 0.900")
    assert want in out, "\n".join(out)
    assert any(len(x) > 100 for x in out)


@pytest.fixture
def screen(monkeypatch) -> io.StringIO:
    """What the CLI's console prints, as a pipe would receive it (not a terminal)."""
    out = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=out, width=200, force_terminal=False, highlight=False))
    return out


def test_progress_view_is_the_library_protocol(screen):
    view = common.ProgressView()
    assert isinstance(view, Reporter) and callable(view)  # passes as reporter= and as progress=


def test_progress_view_keeps_one_bar_per_phase_and_prints_unknown_lengths(screen):
    """export / build-engine: ``(phase, done, total)``; total 0 is a phase of unknown length."""
    with common.ProgressView() as view:
        view("measuring FP32", 0, 1)
        view("building (TensorRT reports no progress)", 0, 0)
        view("measuring FP32", 1, 1)
        for k in range(4):
            view("calibrating", k + 1, 4)
        view("calibrating", 4, 0)  # a later call without a total keeps the phase's total
    lines = screen.getvalue().splitlines()
    assert "  building (TensorRT reports no progress)" in lines
    bars = [x for x in lines if "measuring FP32" in x or "calibrating" in x]
    assert len(bars) == 2, lines  # one final bar each, left on screen
    assert "1/1" in bars[0] and "4/4" in bars[1]


def test_progress_view_train_style_bars_go_and_stages_stay(screen):
    """train: stages and messages are lines; the bottleneck bar (with its rate) disappears when done."""
    view = common.ProgressView(transient=True, unit="img")
    view.stage("bottleneck", "frozen trunk of [x]")
    for d in (0, 10, 20):
        view.progress("bottleneck", d, 20)
    assert not view._running  # the last phase finished: the bars stopped by themselves
    view.message("bottleneck: 20 computed")
    view.close()
    lines = [x for x in screen.getvalue().splitlines() if x.strip()]  # a piped live display ends in a blank line
    assert lines == ["bottleneck frozen trunk of [x]", "  bottleneck: 20 computed"]


def test_progress_view_single_bar_follows_the_phase(screen):
    """bench: many short phases counted against one total, on one bar."""
    with common.ProgressView(single=True, message_style="dim") as view:
        view.progress("model.onnx on onnxruntime-cpu: loading", 0, 3)
        view.message("model.onnx on tensorrt: unavailable: no GPU")
        view.progress("model.onnx on onnxruntime-cpu: batch 1 compute", 2, 3)
        view.progress("model.onnx on onnxruntime-cpu: accuracy", 3, 3)
    lines = screen.getvalue().splitlines()
    assert "  model.onnx on tensorrt: unavailable: no GPU" in lines
    bars = [x for x in lines if "3/3" in x]
    assert len(bars) == 1 and "accuracy" in bars[0] and "loading" not in screen.getvalue()

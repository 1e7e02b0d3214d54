"""Output piped to a file or a journal is not hard-wrapped (real subprocesses, stdout a pipe)."""

from __future__ import annotations

import os
import subprocess
import sys

from bench_reports import report_dict, write

from edgecrack.bench import BenchReport, goals_of, summarize


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    return env


def test_console_on_a_pipe_does_not_wrap():
    line = " ".join(f"word{i}" for i in range(40))  # 277 characters
    r = subprocess.run([sys.executable, "-c", f"from edgecrack.cli_common import console, err_console\n"
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

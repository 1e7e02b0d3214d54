"""``edgecrack run`` as a user runs it: in-process for output and errors, a real subprocess for signals."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecrack.cli import app

from streaming.helpers import write_video

runner = CliRunner()


def edgecrack_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "edgecrack"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from edgecrack.cli import app; app()"]


def test_folder_prints_one_tutorial_line_per_image_and_a_summary(tiny_run, holdout_deck):
    r = runner.invoke(app, ["run", "--model", str(tiny_run), "--source", str(holdout_deck / "UD"), "--max-frames", "4"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("Image: ")]
    assert len(lines) == 4
    for ln in lines:
        assert re.fullmatch(r"Image: \S+\.jpg \| Actual: UD \| Predicted: (CD|UD) \(p=\d\.\d\d\)", ln)
    assert "with backend: onnxruntime-cpu" in r.output  # the chosen backend is reported at start
    assert "summary 4 frames" in r.output and "stopped: max frames (4)" in r.output
    assert re.search(r"ms/frame: capture [\d.]+, preprocess [\d.]+, inference [\d.]+, postprocess [\d.]+, sinks [\d.]+",
                     r.output)


@pytest.mark.parametrize("args,msg", [
    (["--camera", "0", "--source", "x.mp4"], "give exactly one of --source and --camera"),
    ([], "give exactly one of --source and --camera"),
    (["--source", "/nonexistent/flight.mp4"], "source not found: /nonexistent/flight.mp4"),
    (["--camera", "57"], "camera 57: /dev/video57 does not exist"),
    (["--source", "{folder}", "--smooth", "3"], "--smooth averages consecutive video frames"),
    (["--source", "{folder}", "--backend", "warp-drive"], "unknown backend 'warp-drive'"),
    (["--source", "{folder}", "--tile", "256", "--stride", "300"], "--stride must be in 1..256"),
])
def test_user_errors_exit_1_without_traceback(args, msg, tiny_run, holdout_deck):
    args = [a.replace("{folder}", str(holdout_deck)) for a in args]
    r = runner.invoke(app, ["run", "--model", str(tiny_run), *args])
    assert r.exit_code == 1, r.output
    assert msg in r.output and "Traceback" not in r.output


def test_missing_model_is_a_clear_error(holdout_deck, tmp_path):
    r = runner.invoke(app, ["run", "--model", str(tmp_path / "nope"), "--source", str(holdout_deck)])
    assert r.exit_code == 1 and "artifact not found" in r.output


@pytest.fixture(scope="module")
def long_video(tmp_path_factory, holdout_deck) -> Path:
    """1000 real frames: long enough that a signal always arrives mid-run."""
    return write_video(tmp_path_factory.mktemp("long") / "long.avi", sorted(holdout_deck.glob("*/*.jpg")), fps=25.0,
                       repeat=25)


def _start(tiny_run, video, tmp_path):
    log, table = tmp_path / "run.jsonl", tmp_path / "run.csv"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([*edgecrack_cmd(), "run", "--model", str(tiny_run), "--source", str(video), "--log", str(log),
                          "--log", str(table), "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        if log.exists() and log.read_text().count('"type":"frame"') >= 5:
            return p, log, table
        if p.poll() is not None:
            break
        time.sleep(0.05)
    p.kill()
    out, err = p.communicate()
    pytest.fail(f"run did not log 5 frames: rc={p.returncode} {err.decode()[-2000:]}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_complete_logs_and_summary(sig, tiny_run, long_video, tmp_path):
    p, log, table = _start(tiny_run, long_video, tmp_path)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    err = err.decode()
    assert p.returncode == 0, err[-2000:]
    assert f"stopped: stopped by {sig.name}" in err and "Traceback" not in err
    recs = [json.loads(x) for x in log.read_text().splitlines()]  # every line is whole JSON
    frames = [r for r in recs if r["type"] == "frame"]
    assert recs[0]["type"] == "start" and recs[-1]["type"] == "summary"
    assert recs[-1]["stop_reason"] == f"stopped by {sig.name}"
    assert 5 <= len(frames) < 1000 and recs[-1]["frames"] == len(frames)
    assert [f["index"] for f in frames] == list(range(len(frames)))
    assert [f["position"]["frame"] for f in frames] == list(range(len(frames)))
    rows = list(csv.reader(table.open()))
    assert len(rows) == len(frames) + 1


def test_killed_process_loses_at_most_the_frame_in_flight(tiny_run, long_video, tmp_path):
    p, log, table = _start(tiny_run, long_video, tmp_path)
    time.sleep(0.3)
    p.kill()  # SIGKILL: no handler, no cleanup
    p.communicate(timeout=30)
    text = log.read_text()
    assert text.endswith("\n")
    recs = [json.loads(x) for x in text.splitlines()]
    frames = [r for r in recs if r["type"] == "frame"]
    assert recs[0]["type"] == "start" and recs[-1]["type"] == "frame"  # no summary, nothing half-written
    assert [f["index"] for f in frames] == list(range(len(frames))) and len(frames) >= 5
    rows = list(csv.reader(table.open()))
    assert abs((len(rows) - 1) - len(frames)) <= 1  # the CSV row of the last frame may be the one in flight

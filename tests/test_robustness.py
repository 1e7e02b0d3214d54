"""Reliability and security of the inspection loop, tried the way a careless user or an attacker would.

Real everything: real subprocesses and signals, a real MJPEG camera server on 127.0.0.1, real
FIFOs, /dev/full and a small real tmpfs for a full disk (when this user may mount one), real
huge images, peak memory read from the kernel (``wait4`` rusage).
"""

from __future__ import annotations

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
from edgecrack.loop.config import RunConfig, SourceOptions
from edgecrack.loop.runner import run
from edgecrack.redact import redact

from streaming.helpers import MjpegServer, free_port

REPO = Path(__file__).resolve().parents[1]
JETSON = REPO / "deploy" / "jetson"
runner = CliRunner()


def edgecrack_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "edgecrack"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "edgecrack"]


def cfg(source, model, **kw) -> RunConfig:
    kw.setdefault("handle_signals", False)
    return RunConfig(source=str(source), model=str(model), **kw)


class Lines:
    """Reads a subprocess's stderr on a thread so a test can wait for a line without blocking."""

    def __init__(self, stream):
        import threading

        self.text = ""
        self._stream = stream
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in iter(self._stream.readline, b""):
            self.text += line.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float, proc: subprocess.Popen) -> bool:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if needle in self.text:
                return True
            if proc.poll() is not None:
                self._t.join(timeout=2)
                return needle in self.text
            time.sleep(0.05)
        return False

    def finish(self) -> str:
        self._t.join(timeout=10)
        return self.text


# -- 1. secrets ---------------------------------------------------------------------------
@pytest.mark.parametrize("given,shown", [
    ("rtsp://user:pass@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
    ("rtsp://admin:p/ss@w0rd@cam.local:554/h264?channel=1&password=hunter2",
     "rtsp://***@cam.local:554/h264?channel=1&password=***"),
    ("rtsp://admin:pa@ss@cam/x", "rtsp://***@cam/x"),
    ("http://cam/video.mjpg?user=bob&pass=s3cret&token=t0k", "http://cam/video.mjpg?user=bob&pass=***&token=***"),
    ("https://cam/live#access_token=abc", "https://cam/live#access_token=***"),
    ("rtsp://cam:554/live", "rtsp://cam:554/live"),
    ("rtsp://u:with space@cam/x", "rtsp://***@cam/x"),
    ("/data/flight-2024.mp4", "/data/flight-2024.mp4"),
    ("rtspsrc location=rtsp://u:pw@h/x user-id=admin user-pw=s3cret ! appsink",
     "rtspsrc location=rtsp://***@h/x user-id=admin user-pw=*** ! appsink"),
    ("cannot open stream rtsp://u:p/w@h:1/y (kept trying)", "cannot open stream rtsp://***@h:1/y (kept trying)"),
])
def test_redact_hides_every_credential_form(given, shown):
    assert redact(given) == shown


@pytest.fixture(scope="module")
def camera_images(holdout_deck) -> list[Path]:
    return sorted((holdout_deck / "CD").glob("*.jpg"))[:4] + sorted((holdout_deck / "UD").glob("*.jpg"))[:4]


def test_stream_credentials_stay_out_of_log_console_and_events(tiny_run, camera_images, tmp_path):
    """A real camera stream opened with a password ('@' in it) and a token: the loop connects,
    and neither the JSONL log nor the console ever shows them."""
    import io

    from rich.console import Console

    from edgecrack.loop.sinks import ConsoleSink

    log = tmp_path / "run.jsonl"
    out, err = io.StringIO(), io.StringIO()
    with MjpegServer(camera_images, fps=25) as cam:
        url = cam.url_with("viewer:s3cr@tW0rd", "channel=1&password=hunter22")
        # --url only matters for --backend triton, but it is recorded in the start record too.
        s = run(cfg(url, tiny_run, logs=[str(log)], max_frames=3, url="http://ops:tritonPw@127.0.0.1:1"),
                sinks=[ConsoleSink(Console(file=out, width=200), Console(file=err, width=200))])
    assert s.frames == 3
    text = log.read_text() + out.getvalue() + err.getvalue() + json.dumps(s.source)
    for secret in ("s3cr", "tW0rd", "hunter22", "tritonPw"):
        assert secret not in text
    start = json.loads(log.read_text().splitlines()[0])
    shown = f"http://***@127.0.0.1:{cam.port}/cam.mjpg?channel=1&password=***"
    assert start["source"] == shown and start["config"]["source"] == shown
    assert "connected to " + shown in err.getvalue()


def test_stream_password_with_slash_stays_out_of_errors(tiny_run):
    port = free_port()  # nothing listens: the connection is refused
    r = runner.invoke(app, ["run", "--model", str(tiny_run), "--source", f"rtsp://admin:pa/ss@127.0.0.1:{port}/x"])
    assert r.exit_code == 1, r.output
    assert f"cannot open stream rtsp://***@127.0.0.1:{port}/x" in r.output
    assert "pa/ss" not in r.output and "admin" not in r.output and "Traceback" not in r.output


def test_start_script_keeps_the_password_out_of_journal_and_process_list(tiny_run, tmp_path):
    """deploy/jetson/edgecrack-start.sh as systemd runs it: its journal lines and the command
    line of `edgecrack run` (world-readable in /proc) never hold the stream password."""
    port = free_port()
    secret_src = f"rtsp://admin:Sup3r/S@cret@127.0.0.1:{port}/live?token=T0K3N"
    env = dict(os.environ, EDGECRACK_MODEL=str(tiny_run), EDGECRACK_SOURCE=secret_src, EDGECRACK_ENGINE="off",
               EDGECRACK_STATE_DIR=str(tmp_path / "state"), EDGECRACK_PYTHON=sys.executable,
               EDGECRACK_BIN=edgecrack_cmd()[0], EDGECRACK_RUN_ARGS="--wait 30 --threads 1", PYTHONUNBUFFERED="1")
    p = subprocess.Popen(["bash", str(JETSON / "edgecrack-start.sh")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    err = Lines(p.stderr)
    try:
        assert err.wait_for("connecting to", 120, p), err.text[-3000:]
        cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes().decode(errors="replace")
        assert "run" in cmdline and "Sup3r" not in cmdline and "T0K3N" not in cmdline
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
        stopped_in = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    text = err.finish()
    assert f"source rtsp://***@127.0.0.1:{port}/live?token=***" in text
    assert "Sup3r" not in text and "S@cret" not in text and "T0K3N" not in text
    assert p.returncode == 0 and stopped_in < 2.5, (p.returncode, stopped_in, text[-2000:])


def test_env_file_is_installed_0640():
    script = (JETSON / "install.sh").read_text()
    env_lines = [ln for ln in script.splitlines() if "edgecrack.env" in ln and re.search(r"\b0[0-7]{3}\b", ln)]
    assert env_lines and all("0640" in ln for ln in env_lines), env_lines
    assert "root:edgecrack /etc/edgecrack/edgecrack.env" in script


# -- 3. SIGTERM while a stream is connecting ---------------------------------------------
def _run_until_connecting(tiny_run, source: str, tmp_path, *extra: str):
    log = tmp_path / "run.jsonl"
    p = subprocess.Popen([*edgecrack_cmd(), "run", "--model", str(tiny_run), "--source", source, "--wait", "20",
                          "--threads", "1", "--log", str(log), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    err = Lines(p.stderr)
    if not err.wait_for("connecting to", 120, p):
        p.kill()
        pytest.fail(f"run never said it was connecting: {err.finish()[-2000:]}")
    time.sleep(0.7)  # well inside the retry loop (or the blocked open)
    return p, err, log


def _stop_and_time(p: subprocess.Popen) -> float:
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=25)
    finally:
        if p.poll() is None:
            p.kill()
    return time.monotonic() - t0


def test_sigterm_while_connecting_to_a_refusing_stream_stops_at_once(tiny_run, tmp_path):
    port = free_port()  # connection refused, retried with backoff for up to --wait 20 s
    p, err, log = _run_until_connecting(tiny_run, f"rtsp://127.0.0.1:{port}/x", tmp_path)
    took = _stop_and_time(p)
    text = err.finish()
    assert took < 2.0 and p.returncode == 0, (took, p.returncode, text[-2000:])
    assert "stopped: stopped by SIGTERM" in text and "Traceback" not in text
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert recs[0]["type"] == "start" and recs[-1]["type"] == "summary" and recs[-1]["frames"] == 0
    assert {r.get("kind") for r in recs[1:-1]} == {"reconnecting"}  # the refused attempts are on record
    assert recs[-1]["stop_reason"] == "stopped by SIGTERM"


def test_sigterm_while_an_open_hangs_stops_at_once(tiny_run, tmp_path):
    """A server that completes the TCP handshake and never answers: FFmpeg's open blocks for its
    whole timeout (the watchdog's, 10 s here) inside C code; the stop must not wait for it."""
    import socket

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)  # never accept()ed: the kernel finishes handshakes, nobody ever replies
        port = srv.getsockname()[1]
        p, err, log = _run_until_connecting(tiny_run, f"rtsp://127.0.0.1:{port}/x", tmp_path, "--watchdog", "10")
        took = _stop_and_time(p)
    text = err.finish()
    assert took < 2.0 and p.returncode == 0, (took, p.returncode, text[-2000:])
    assert "stopped: stopped by SIGTERM" in text


def test_unit_stop_timeout_exceeds_the_longest_stop_path():
    from edgecrack.loop.runner import STOP_TIMEOUT_S

    unit = (JETSON / "edgecrack.service").read_text()
    stop = float(re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.M).group(1))
    assert stop > STOP_TIMEOUT_S + 5, (stop, STOP_TIMEOUT_S)
    # SIGTERM reaches `edgecrack run` itself: the start script execs it.
    assert re.search(r'^exec "\$edgecrack" run ', (JETSON / "edgecrack-start.sh").read_text(), re.M)
    assert re.search(r"^KillSignal=SIGTERM$", unit, re.M)


# -- 2. file names are printed literally ----------------------------------------------------
@pytest.fixture()
def bracket_files(tmp_path, holdout_deck):
    """Real deck images named like rich markup: ``[bold]a.jpg`` and ``x[/y]z.jpg`` (a folder
    ``x[`` holding ``y]z.jpg``), plus a broken ``[red]broken.jpg`` that gets skipped."""
    import shutil

    imgs = sorted((holdout_deck / "CD").glob("*.jpg"))
    root = tmp_path / "shots"
    (root / "x[").mkdir(parents=True)
    shutil.copy(imgs[0], root / "[bold]a.jpg")
    shutil.copy(imgs[1], root / "x[" / "y]z.jpg")
    (root / "x[" / "[red]broken.jpg").write_bytes(imgs[2].read_bytes()[:300])
    return root


def test_predict_prints_markup_like_names_literally(tiny_run, bracket_files):
    odd = bracket_files / "x[" / "y]z.jpg"
    r = runner.invoke(app, ["predict", str(tiny_run), str(bracket_files / "[bold]a.jpg"), str(odd),
                            str(bracket_files / "x[" / "[red]broken.jpg"), str(bracket_files / "x[/gone].jpg")])
    assert r.exit_code == 0, r.output
    assert "MarkupError" not in r.output and "Traceback" not in r.output
    assert re.search(r"^Image: \[bold\]a\.jpg \| Predicted: (CD|UD)", r.output, re.M)
    assert re.search(r"^Image: y\]z\.jpg \| Predicted: ", r.output, re.M)
    assert f"skipped {bracket_files / 'x[' / '[red]broken.jpg'}: " in r.output
    assert f"skipped {bracket_files / 'x[/gone].jpg'}: file not found" in r.output


def test_run_prints_markup_like_names_literally(tiny_run, bracket_files):
    odd = bracket_files / "x[" / "y]z.jpg"
    r = runner.invoke(app, ["run", "--model", str(tiny_run), "--source", str(odd)])
    assert r.exit_code == 0, r.output
    assert f"run {odd} (images)" in r.output and re.search(r"^Image: .*y\]z\.jpg \| Predicted", r.output, re.M)
    r = runner.invoke(app, ["run", "--model", str(tiny_run), "--source", str(bracket_files)])
    assert r.exit_code == 0, r.output
    assert "[bold]a.jpg | Predicted" in r.output
    assert "skipped: " in r.output and "[red]broken.jpg" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["run", "--model", str(tiny_run), "--source", str(bracket_files / "x[/none]" / "*.jpg")])
    assert r.exit_code == 1 and f"no images match {bracket_files / 'x[/none]' / '*.jpg'}" in r.output


# -- 4. captures stuck in read() ------------------------------------------------------------
def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _hanging_opener(url: str):
    """Opens the MJPEG camera the way edgecrack's stream opener does, minus FFmpeg's read timeout:
    a stalled read then blocks in C for good, as a V4L2 camera or OpenCV's GStreamer appsink does
    when the device or driver hangs (those have no timeout at all)."""
    import cv2

    from edgecrack.loop.sources.opencv import _cv_open

    props = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10_000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 3_600_000]
    return lambda: _cv_open(url, cv2.CAP_FFMPEG, props, "hanging camera", None)


def _wait_threads_below(n: int, timeout: float) -> int:
    t0 = time.monotonic()
    while _os_threads() > n and time.monotonic() - t0 < timeout:
        time.sleep(0.1)
    return _os_threads()


def test_captures_stuck_in_read_are_bounded_then_the_source_fails(camera_images):
    from edgecrack.errors import SourceError
    from edgecrack.loop.sources import LiveSource

    cam = MjpegServer(camera_images, fps=25, stall_after=4).start()  # every connection: 4 frames, then silence
    try:
        base = _os_threads()
        src = LiveSource("hanging camera", _hanging_opener(cam.url),
                         SourceOptions(watchdog_s=0.4, backoff_s=0.1, max_abandoned=2), kind="camera")
        src.start()
        err, frames, peak = None, 0, base
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20:
            try:
                frames += src.next_frame(0.1) is not None
            except SourceError as e:
                err = e
                break
            peak = max(peak, _os_threads())
        at_failure = _os_threads()
        time.sleep(1.5)
        later = _os_threads()
        kinds = [e.kind for e in src.events()]
        stats = src.stats()
        src.stop()
    finally:
        cam.kill()
    assert err is not None, f"the source never gave up; threads {base} -> {_os_threads()}, events {kinds}"
    assert "3 captures are stuck in a read that never returns (more than 2)" in err.message
    assert "--max-abandoned" in err.hint and src.end_reason == err.message
    assert frames >= 4 and kinds.count("stalled") == 3 and kinds[-1] == "error" and stats["stuck_captures"] == 3
    assert later <= at_failure  # nothing new is spawned once failed
    per_capture = (at_failure - base) / 3
    assert per_capture <= 8 and peak <= at_failure + 8, (base, peak, at_failure)
    # The camera's end (server killed) makes the stuck reads return: no thread outlives them.
    assert _wait_threads_below(base, 10) <= base


def test_stuck_captures_make_run_exit_nonzero_with_a_complete_log(tiny_run, camera_images, tmp_path, monkeypatch):
    """systemd restarts a service that exits non-zero (Restart=on-failure): the process that holds
    stuck captures ends, with its log closed by a summary."""
    import edgecrack.loop.runner as runner_module
    from edgecrack.loop.sources import LiveSource

    cam = MjpegServer(camera_images, fps=25, stall_after=4).start()
    monkeypatch.setattr(runner_module, "open_source",
                        lambda spec, opts: LiveSource("hanging camera", _hanging_opener(cam.url), opts, kind="camera"))
    log = tmp_path / "run.jsonl"
    try:
        r = runner.invoke(app, ["run", "--model", str(tiny_run), "--camera", "0", "--watchdog", "0.4",
                                "--max-abandoned", "1", "--log", str(log), "--threads", "1"])
    finally:
        cam.kill()
    assert r.exit_code == 1, r.output
    assert "error: hanging camera: 2 captures are stuck in a read that never returns (more than 1)" in r.output
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert recs[0]["type"] == "start" and recs[-1]["type"] == "summary" and recs[-1]["frames"] >= 4
    assert recs[-1]["stop_reason"].startswith("source failed: hanging camera: 2 captures are stuck")
    assert [r_["kind"] for r_ in recs if r_["type"] == "event"].count("stalled") == 2


# -- 5. logs: torn lines, fsync, unwritable and full disks ---------------------------------
TORN = '{"type":"frame","time":1712.5,"index":41,"na'


def test_appending_after_a_torn_line_starts_on_a_fresh_line(tiny_run, holdout_deck, tmp_path):
    jl, table = tmp_path / "run.jsonl", tmp_path / "run.csv"
    jl.write_text('{"type":"start"}\n' + TORN)  # the previous flight was killed mid-write
    table.write_text("time,utc,index\n1712.5,2024-04-0")
    run(cfg(holdout_deck / "CD", tiny_run, logs=[str(jl), str(table)], max_frames=2))
    lines = jl.read_text().splitlines()
    assert lines[1] == TORN
    recs = [json.loads(x) for x in lines[2:]]  # the new run is whole JSON, line by line
    assert [r["type"] for r in recs] == ["start", "frame", "frame", "summary"]
    rows = table.read_text().splitlines()
    assert rows[1] == "1712.5,2024-04-0" and len(rows) == 4 and rows[2].count(",") == rows[3].count(",") == 18


def _mount_tmpfs(path: Path, size: str, *opts: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *opts]), "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(folder: Path) -> Path:
    filler = folder / "filler.bin"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def _refused(args: list[str]) -> str:
    r = runner.invoke(app, ["run", *args])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    return r.output


def test_unusable_log_is_refused_before_the_source_and_model_open(tmp_path):
    """No model, no stream: the first error must be the log's, so it comes before both."""
    nothing = ["--model", str(tmp_path / "no-model"), "--source", f"rtsp://127.0.0.1:{free_port()}/x"]
    (tmp_path / "logs.jsonl").mkdir()
    out = _refused([*nothing, "--log", str(tmp_path / "logs.jsonl")])
    assert f"--log {tmp_path / 'logs.jsonl'} is a folder" in out
    (tmp_path / "file").write_text("")
    out = _refused([*nothing, "--log", str(tmp_path / "file" / "run.csv")])
    assert f"{tmp_path / 'file'} exists and is not a folder" in out
    ro, full = tmp_path / "ro", tmp_path / "full"
    if not _mount_tmpfs(ro, "1m", "ro"):
        pytest.skip("mounting a tmpfs needs root (the folder and path checks above ran)")
    try:
        out = _refused([*nothing, "--log", str(ro / "run.jsonl")])
        assert f"--log {ro / 'run.jsonl'}: folder {ro} is not writable" in out
        assert _mount_tmpfs(full, "1m")
        _fill(full)
        out = _refused([*nothing, "--log", str(full / "run.jsonl")])
        assert re.search(rf"--log {re.escape(str(full / 'run.jsonl'))}: the disk holding it is full \(\d+ KiB free", out)
        out = _refused([*nothing, "--save-video", str(full / "out.avi")])
        assert "--save-video" in out and "the disk holding it is full" in out
        assert not (full / "run.jsonl").exists()
    finally:
        _umount(ro)
        _umount(full)


def test_log_on_a_full_device_is_an_event_not_a_traceback(tiny_run, holdout_deck, tmp_path):
    """/dev/full accepts the open and fails every write with ENOSPC, like a disk that fills up."""
    full = tmp_path / "run.jsonl"
    full.symlink_to("/dev/full")
    r = runner.invoke(app, ["run", "--model", str(tiny_run), "--source", str(holdout_deck / "CD"), "--max-frames", "3",
                            "--log", str(full), "--log", str(tmp_path / "ok.jsonl")])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert f"error: --log {full}: cannot write (No space left on device); the inspection goes on" in r.output
    assert "summary 3 frames" in r.output and "log_jsonl_lost_records: 4" in r.output  # start and 3 frames
    recs = [json.loads(x) for x in (tmp_path / "ok.jsonl").read_text().splitlines()]
    assert [x.get("kind", x["type"]) for x in recs] == ["start", "error", "frame", "frame", "frame", "summary"]


@pytest.mark.slow
def test_disk_filling_up_mid_run_pauses_the_log_and_it_resumes(tiny_run, holdout_deck, tmp_path):
    import io
    import threading

    from rich.console import Console

    from edgecrack.loop.sinks import ConsoleSink
    from edgecrack.loop.types import Sink
    from streaming.helpers import write_video

    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "2m"):
        pytest.skip("mounting a small tmpfs needs root")
    video = write_video(tmp_path / "v.avi", sorted(holdout_deck.glob("*/*.jpg")), fps=25.0, repeat=4)  # 160 frames
    log = disk / "run.jsonl"
    err = io.StringIO()
    freed = threading.Event()

    def chaos():
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            if log.exists() and log.read_text().count('"type":"frame"') >= 5:
                filler = _fill(disk)
                while "cannot write" not in err.getvalue() and time.monotonic() - t0 < 60:
                    time.sleep(0.05)
                time.sleep(0.3)
                filler.unlink()
                freed.set()
                return
            time.sleep(0.02)

    class HoldWhileFull(Sink):
        """Holds the sink thread while the disk is full, so frames are left to write once it is
        freed: the tiny model finishes 160 frames faster than the disk can be freed."""

        def write(self, result):
            if "cannot write" in err.getvalue():
                freed.wait(30)

    th = threading.Thread(target=chaos, daemon=True)
    th.start()
    try:
        s = run(cfg(video, tiny_run, logs=[str(log)]), sinks=[ConsoleSink(Console(file=io.StringIO()),
                                                                             Console(file=err, width=300)),
                                                               HoldWhileFull()])
        th.join(timeout=30)
        text = log.read_text()
    finally:
        _umount(disk)
    assert freed.is_set() and s.frames == 160
    assert f"error: --log {log}: cannot write (No space left on device)" in err.getvalue()
    lost = s.outputs.get("log_jsonl_lost_records", 0)
    assert lost >= 1 and re.search(rf"recovered: --log {re.escape(str(log))}: writing again \({lost} records lost\)",
                                   err.getvalue())
    lines = text.splitlines()
    recs = [json.loads(x) for x in lines if x.endswith("}")]
    assert len(recs) >= len(lines) - 1  # at most the one line cut by ENOSPC is not whole JSON
    frames = [r_["index"] for r_ in recs if r_["type"] == "frame"]
    assert recs[0]["type"] == "start" and recs[-1]["type"] == "summary" and frames[-1] == 159
    assert len(frames) == 160 - lost and frames == sorted(frames)


@pytest.mark.slow
def test_logs_are_fsynced_every_few_seconds_and_at_the_end(tiny_run, tmp_path, holdout_deck):
    import shutil

    from streaming.helpers import write_video

    if shutil.which("strace") is None:
        pytest.skip("strace not installed (apt-get install strace)")
    video = write_video(tmp_path / "v.avi", sorted(holdout_deck.glob("*/*.jpg")), fps=25.0, repeat=25)  # 1000 frames
    log, trace = tmp_path / "run.jsonl", tmp_path / "trace.txt"
    p = subprocess.Popen(["strace", "-f", "-e", "trace=openat,fsync,fdatasync", "-o", str(trace), *edgecrack_cmd(), "run",
                          "--model", str(tiny_run), "--source", str(video), "--log", str(log), "--threads", "1",
                          # 64 tiles a frame: the tiny model must still be busy when the signal comes
                          "--tile", "32"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while not (log.exists() and log.read_text().count('"type":"frame"') >= 3) and time.monotonic() - t0 < 120:
        if p.poll() is not None:
            pytest.skip(f"strace cannot trace here: {p.stderr.read().decode()[-300:]}")
        time.sleep(0.1)
    time.sleep(4.5)
    (child,) = {int(c) for t in Path(f"/proc/{p.pid}/task").iterdir() for c in (t / "children").read_text().split()}
    os.kill(child, signal.SIGTERM)  # to `edgecrack run` itself, not to strace
    p.wait(timeout=60)
    calls = trace.read_text().splitlines()
    opened = [re.search(r"= (\d+)$", c) for c in calls if f'"{log}"' in c and "openat" in c and "O_APPEND" in c]
    fd = [m.group(1) for m in opened if m][-1]  # the descriptor the run writes through (the last one opened)
    syncs = [c for c in calls if re.search(rf"\b(fsync|fdatasync)\({fd}\)", c)]
    assert len(syncs) >= 3, (len(syncs), fd)  # >= 2 on the way (every 2 s over ~4.5 s) + 1 at the end
    assert json.loads(log.read_text().splitlines()[-1])["type"] == "summary"


# -- 6. the annotated video survives SIGKILL -------------------------------------------------
@pytest.fixture(scope="module")
def long_clip(tmp_path_factory, holdout_deck) -> Path:
    from streaming.helpers import write_video

    return write_video(tmp_path_factory.mktemp("clip") / "long.avi", sorted(holdout_deck.glob("*/*.jpg")), fps=25.0,
                       repeat=25)  # 1000 frames


def _decoded_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def _kill_when(p: subprocess.Popen, ready, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not ready() and time.monotonic() - t0 < timeout:
        if p.poll() is not None:
            pytest.fail(f"run ended early: {p.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    p.kill()  # SIGKILL: no handler runs, nothing is finalised
    p.communicate(timeout=30)


@pytest.mark.parametrize("suffix", [".avi", ".mkv", ".ts"])
def test_cut_safe_video_plays_after_sigkill(suffix, tiny_run, long_clip, tmp_path):
    out = tmp_path / "video" / f"annotated{suffix}"
    p = subprocess.Popen([*edgecrack_cmd(), "run", "--model", str(tiny_run), "--source", str(long_clip),
                          "--save-video", str(out), "--threads", "1", "--tile", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def partial():
        return [f for f in out.parent.glob(f"annotated.*.partial{suffix}") if f.stat().st_size > 600_000]

    _kill_when(p, lambda: bool(partial()))
    (left,) = out.parent.iterdir()  # visible, next to where the video was asked for
    assert re.fullmatch(rf"annotated\.\d{{8}}T\d{{6}}Z\.partial{re.escape(suffix)}", left.name)
    assert _decoded_frames(left) > 10


def test_mp4_is_written_in_segments_that_survive_sigkill(tiny_run, long_clip, tmp_path):
    out = tmp_path / "video" / "annotated.mp4"
    p = subprocess.Popen([*edgecrack_cmd(), "run", "--model", str(tiny_run), "--source", str(long_clip),
                          "--save-video", str(out), "--video-segment", "1", "--threads", "1", "--tile", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _kill_when(p, lambda: len(list(out.parent.glob("annotated.*-00[0-9].mp4"))) >= 2)
    done = sorted(out.parent.glob("annotated.*-[0-9][0-9][0-9].mp4"))
    assert len(done) >= 2 and all(re.fullmatch(r"annotated\.\d{8}T\d{6}Z-\d{3}\.mp4", f.name) for f in done)
    assert [_decoded_frames(f) for f in done[:2]] == [25, 25]  # 1 s at the source's 25 fps each


def test_segmented_run_that_ends_cleanly(tiny_run, holdout_deck, tmp_path):
    from streaming.helpers import write_video

    clip = write_video(tmp_path / "c.avi", sorted(holdout_deck.glob("*/*.jpg"))[:30], fps=10.0)  # 3 s
    out = tmp_path / "video" / "annotated.mp4"
    s = run(cfg(clip, tiny_run, save_video=str(out), save_video_segment_s=1.0, tile=0))
    parts = sorted(out.parent.iterdir())
    assert s.outputs["video"] == [str(p) for p in parts] and s.outputs["video_frames"] == 30
    assert [_decoded_frames(p) for p in parts] == [10, 10, 10] and not out.exists()
    s = run(cfg(clip, tiny_run, save_video=str(tmp_path / "one.mp4"), tile=0, max_frames=7))
    assert s.outputs["video"] == str(tmp_path / "one.mp4") and _decoded_frames(tmp_path / "one.mp4") == 7


# -- 7. bounded memory ---------------------------------------------------------------------
_PEAK_WRAPPER = """
import os, resource, subprocess, sys
limit = int(sys.argv[1])
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
p = subprocess.Popen(sys.argv[2:], preexec_fn=cap if limit else None)
_, status, usage = os.wait4(p.pid, 0)
print(f"\\nPEAK_KB {usage.ru_maxrss} EXIT {os.waitstatus_to_exitcode(status)}")
"""


def _peak_rss(cmd: list[str], max_address_space: int = 0) -> tuple[int, str, float]:
    """(exit code, output, peak resident MB) of a real subprocess, from the kernel (wait4 rusage).

    Started from a small wrapper process: a child forked from this big test process would
    count the parent's pages until it execs. ``max_address_space`` caps the child's virtual
    memory, so code that tries to allocate gigabytes fails fast instead of swapping the machine.
    """
    r = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, str(max_address_space), *cmd], capture_output=True,
                       text=True, timeout=600)
    out = r.stdout + r.stderr
    m = re.search(r"PEAK_KB (\d+) EXIT (-?\d+)", r.stdout)
    assert m, out[-2000:]
    return int(m.group(2)), out, int(m.group(1)) / 1024


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory) -> Path:
    """A real 20000x20000 JPEG (400 megapixels, 1.2 GB decoded); mostly flat, so 8 MB on disk."""
    import cv2
    import numpy as np

    img = np.zeros((20000, 20000), np.uint8)  # calloc: untouched pages cost nothing
    img[::512, :] = 200
    img[:, ::512] = 90
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    del img
    path.write_bytes(buf.tobytes())
    return path


def test_huge_jpeg_is_predicted_within_1gb(tiny_run, huge_jpeg):
    code, out, peak = _peak_rss([*edgecrack_cmd(), "predict", str(tiny_run), str(huge_jpeg)])
    assert code == 0 and re.search(r"^Image: huge\.jpg \| Predicted: (CD|UD) \(p=\d\.\d\d\)$", out, re.M), out
    assert peak < 1024, f"predict peaked at {peak:.0f} MB"


def test_huge_jpeg_in_run_reduced_whole_or_refused_tiled_within_1gb(tiny_run, huge_jpeg):
    code, out, peak = _peak_rss([*edgecrack_cmd(), "run", "--model", str(tiny_run), "--source", str(huge_jpeg),
                                 "--tile", "0", "--threads", "1"])
    assert code == 0 and "Image: " in out and "summary 1 frames" in out and peak < 1024, (peak, out[-1500:])
    code, out, peak = _peak_rss([*edgecrack_cmd(), "run", "--model", str(tiny_run), "--source", str(huge_jpeg),
                                 "--threads", "1"])
    assert code == 0 and peak < 1024, (peak, out[-1500:])
    assert (f"skipped: {huge_jpeg}: 20000x20000 is 400 megapixels, over the limit of 100 (--max-pixels)" in out
            and "summary 0 frames" in out)


@pytest.mark.slow
def test_16_bit_image_converts_without_float64(tiny_run, tmp_path):
    import cv2
    import numpy as np

    from edgecrack.preprocess import to_bgr8

    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    np.testing.assert_array_equal(to_bgr8(every)[..., 0], np.round(every / 257.0).astype(np.uint8))  # same as before
    deep = np.zeros((4000, 6000, 3), np.uint16)
    deep[..., 2] = np.arange(6000, dtype=np.uint16) * 10
    deep[::7, :, 1] = 60000
    path = tmp_path / "deep16.png"
    cv2.imwrite(str(path), deep, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    del deep
    code, out, peak = _peak_rss([*edgecrack_cmd(), "predict", str(tiny_run), str(path)])
    assert code == 0 and "Image: deep16.png | Predicted: " in out, out
    # 144 MB decoded; the float64 detour alone took 2 x 576 MB (1.4 GB peak measured before).
    assert peak < 700, f"predict of a 24-megapixel 16-bit PNG peaked at {peak:.0f} MB"


def test_dense_tiling_is_refused_instead_of_allocating_gigabytes(tiny_run, holdout_deck, tmp_path):
    import cv2

    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), cv2.resize(cv2.imread(str(sorted((holdout_deck / "CD").glob("*.jpg"))[0])), (512, 512)))
    code, out, peak = _peak_rss([*edgecrack_cmd(), "run", "--model", str(tiny_run), "--source", str(frame),
                                 "--stride", "1", "--threads", "1"], max_address_space=4 << 30)
    assert code == 1 and "Traceback" not in out, out[-2000:]
    assert "a 512x512 frame makes 66049 tiles of 256 px (stride 1), over --max-tiles 4096" in out
    assert peak < 1024


def test_tiles_beyond_the_eager_budget_are_preprocessed_batch_by_batch(tiny_run, deck_dir, monkeypatch):
    """A grid too big to preprocess ahead is preprocessed during inference, batch by batch, and
    gives the same crack map as the eager path."""
    import numpy as np

    import edgecrack.loop.inspector as inspector
    from edgecrack.loop.types import Frame
    from edgecrack.runtime import open_backend
    from streaming.helpers import mosaic

    big = mosaic(sorted((deck_dir / "CD").glob("*.jpg"))[:6], 2, 3)
    frame = Frame(big, 0, "mosaic", time.time(), 0)
    with open_backend(tiny_run, "onnxruntime-cpu").backend as backend:
        eager = inspector.Inspector(backend, tile=128, batch=4)  # 4x6 = 24 tiles
        p = eager.prepare(frame)
        assert p.batch is not None and p.batch.shape[0] == 24
        want = eager.infer([p])[0].crack_map
        monkeypatch.setattr(inspector, "EAGER_PREPARE_BYTES", 1)
        lazy = inspector.Inspector(backend, tile=128, batch=4)
        p = lazy.prepare(frame)
        assert p.batch is None and p.nbytes == big.nbytes
        sizes = []
        probs = backend.probs
        monkeypatch.setattr(backend, "probs", lambda x: sizes.append(len(x)) or probs(x))
        got = lazy.infer([p])[0].crack_map
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert sizes == [4] * 6 and p.prep_ms > 0


def test_read_ahead_is_bounded_in_bytes(tmp_path):
    import cv2
    import numpy as np

    from edgecrack.loop.sources import ImageFilesSource

    paths = []
    for i in range(6):  # 6 real JPEGs of 18 MB each decoded
        img = np.full((2000, 3000, 3), 40 * i, np.uint8)
        paths.append(tmp_path / f"{i}.jpg")
        cv2.imwrite(str(paths[-1]), img)
    src = ImageFilesSource(paths, "six", prefetch=16, prefetch_bytes=40 << 20)
    with src:
        time.sleep(2.0)  # nobody consumes: the reader fills what it may
        held, held_bytes = src._q.qsize(), src._q.bytes
        got = [src.next_frame(5.0) for _ in range(6)]
    assert held == 2 and held_bytes == 2 * 18_000_000  # a third would pass 40 MB
    assert [int(f.image[0, 0, 0]) for f in got] == [0, 40, 80, 120, 160, 200]
    one = ImageFilesSource(paths[:2], "big", prefetch=16, prefetch_bytes=1)
    with one:  # a frame larger than the budget still passes, alone
        assert one.next_frame(5.0) is not None and one.next_frame(5.0) is not None


# -- 8/9. docs say what the code does --------------------------------------------------------
def test_triton_docs_publish_on_loopback_unless_the_reader_chooses():
    text = (REPO / "docs" / "triton.md").read_text()
    commands = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    published = re.findall(r"-p (\S+)", commands)
    assert published and published[0] == "127.0.0.1:8000:8000"
    assert all(re.fullmatch(r"(\d+\.\d+\.\d+\.\d+):\d+:\d+", p) for p in published), published  # never all interfaces
    assert "no authentication" in text and "--http-address=127.0.0.1" in text


def test_threat_model_limits_name_real_flags_and_settings():
    import importlib

    import typer.main

    text = (REPO / "docs" / "threat-model.md").read_text()
    assert "(security-artifacts.md)" in text
    run_cmd = typer.main.get_command(app).commands["run"]
    known = {o for p in run_cmd.params for o in p.opts}
    flags = set(re.findall(r"`run (--[a-z-]+)`", text)) | set(re.findall(r"`run (--[a-z-]+) ", text))
    assert {"--max-pixels", "--max-tiles", "--queue-mb", "--max-abandoned", "--video-segment"} <= flags <= known
    for mod, name in re.findall(r"`edgecrack\.(\w+)\.([A-Z_]+)`", text):
        assert hasattr(importlib.import_module(f"edgecrack.{mod}"), name), f"edgecrack.{mod}.{name}"
    unit = (JETSON / "edgecrack.service").read_text()
    for directive in ("MemoryMax=75%", "TasksMax=256", "LimitNOFILE=4096", "TimeoutStopSec=30"):
        assert directive in unit and directive.split("=")[0] in text

"""Jetson deployment files: shellcheck, hadolint, systemd-analyze verify, flags in sync with
``edgecrack run``, and the start script run for real (headless, on a folder source, on this
machine without TensorRT: the engine step reports why and the ONNX model runs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
JETSON = DEPLOY / "jetson"
SHELL_SCRIPTS = sorted(DEPLOY.rglob("*.sh"))
DOCKERFILES = sorted(p for p in DEPLOY.rglob("Dockerfile*") if not p.name.endswith(".dockerignore"))


def _tool(name: str) -> str:
    """A linter from PATH or from this Python's environment (the dev extra installs them there)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def test_deploy_files_exist():
    names = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    assert {"jetson/Dockerfile", "jetson/install.sh", "jetson/edgecrack-start.sh", "jetson/edgecrack.service",
            "jetson/edgecrack.env", "jetson/requirements-jetson.txt", "triton/make-server-env.sh"} <= names
    for s in SHELL_SCRIPTS:
        assert os.access(s, os.X_OK), f"{s} is not executable"
        assert s.read_text().startswith("#!/usr/bin/env bash\n")


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_shellcheck(script):
    r = subprocess.run([_tool("shellcheck"), "--severity=style", "--external-sources", str(script)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_hadolint(dockerfile):
    r = subprocess.run([_tool("hadolint"), "--no-color", "--failure-threshold", "info", str(dockerfile)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_catches_a_bad_recipe(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install python3\nRUN cd /tmp && pip install numpy\n")
    r = subprocess.run([_tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    for rule in ("DL3006", "DL3008", "DL3013", "DL3003"):
        assert rule in r.stdout


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = (JETSON / "edgecrack.service").read_text()
    assert "ExecStart=/opt/edgecrack/bin/edgecrack-start\n" in unit
    # verify checks that ExecStart exists: point it at this checkout's start script.
    local = tmp_path / "edgecrack.service"
    local.write_text(unit.replace("ExecStart=/opt/edgecrack/bin/edgecrack-start",
                                  f"ExecStart={JETSON / 'edgecrack-start.sh'}"))
    r = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(local.read_text().replace("Restart=on-failure", "Restart=sometimes")
                      .replace(str(JETSON / "edgecrack-start.sh"), "/nonexistent/edgecrack-start"))
    r = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "sometimes" in r.stderr and "/nonexistent/edgecrack-start" in r.stderr


def test_systemd_unit_exposure_is_below_4(tmp_path):
    """`systemd-analyze security` scores the unit's sandbox (0 best, 10 worst; it was 8.8)."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = (JETSON / "edgecrack.service").read_text()
    local = tmp_path / "edgecrack.service"
    local.write_text(unit.replace("ExecStart=/opt/edgecrack/bin/edgecrack-start",
                                  f"ExecStart={JETSON / 'edgecrack-start.sh'}"))
    r = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(local)], capture_output=True, text=True,
                       timeout=60)
    m = re.search(r"Overall exposure level for edgecrack\.service: (\d+\.\d)", r.stdout)
    if m is None and "offline" in r.stderr:
        pytest.skip(f"this systemd-analyze cannot score a unit file offline: {r.stderr.strip()[:200]}")
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) < 4.0, r.stdout
    for line in ("ProtectSystem=strict", "NoNewPrivileges=yes", "UMask=0027", "SystemCallErrorNumber=EPERM",
                 "CapabilityBoundingSet="):
        assert re.search(rf"^{re.escape(line)}$", unit, re.M), line
    assert re.search(r"^MemoryMax=\d+[%MG]$", unit, re.M) and re.search(r"^TasksMax=\d+$", unit, re.M)
    assert re.search(r"^SystemCallFilter=@system-service$", unit, re.M)


def test_unit_contract():
    unit = (JETSON / "edgecrack.service").read_text()
    for line in ("Restart=on-failure", "StandardOutput=journal", "StateDirectory=edgecrack",
                 "EnvironmentFile=-/etc/edgecrack/edgecrack.env", "WantedBy=multi-user.target",
                 "TimeoutStartSec=infinity", "User=edgecrack", "SupplementaryGroups=video"):
        assert re.search(rf"^{re.escape(line)}$", unit, re.M), line


def test_start_script_flags_exist_in_edgecrack_run():
    import typer.main

    from edgecrack.cli import app

    run = typer.main.get_command(app).commands.get("run")
    if run is None:
        pytest.skip("this build has no `edgecrack run` command")
    known = {o for p in run.params for o in p.opts}
    script = (JETSON / "edgecrack-start.sh").read_text()
    exec_line = script[script.index('exec "$edgecrack" run'):]
    used = set(re.findall(r"(--[a-z][a-z-]+)", exec_line)) | {"--camera", "--source"}
    assert used <= known, f"edgecrack run has no {sorted(used - known)}"
    env_opts = re.findall(r"(--[a-z][a-z-]+)", re.search(r"^EDGECRACK_RUN_ARGS=(.*)$",
                                                       (JETSON / "edgecrack.env").read_text(), re.M).group(1))
    assert set(env_opts) <= known, f"edgecrack.env passes unknown options {sorted(set(env_opts) - known)}"


def test_env_file_names_only_settings_the_script_reads():
    script = (JETSON / "edgecrack-start.sh").read_text()
    env = (JETSON / "edgecrack.env").read_text()
    keys = re.findall(r"^#?(EDGECRACK_[A-Z_]+)=", env, re.M)
    assert len(keys) >= 8
    for k in keys:
        assert "${" + k + ":-" in script, f"{k} is set in edgecrack.env but edgecrack-start.sh ignores it"


def _start(tmp_path, source: Path, model: Path, **env_extra) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, EDGECRACK_MODEL=str(model), EDGECRACK_SOURCE=str(source),
               EDGECRACK_STATE_DIR=str(tmp_path / "state"), EDGECRACK_PYTHON=sys.executable,
               EDGECRACK_BIN=str(bin_dir / "edgecrack"), EDGECRACK_RUN_ARGS="--max-frames 4 --tile 0",
               **env_extra)
    return subprocess.run(["bash", str(JETSON / "edgecrack-start.sh")], capture_output=True, text=True, env=env,
                          timeout=240)


def test_start_script_runs_headless_and_keeps_results(tmp_path, trained_run, small_deck):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here: the engine step would build a real engine")
    except ImportError:
        pass
    r = _start(tmp_path, small_deck / "CD", trained_run)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "edgecrack engine cache: unavailable: TensorRT cannot run here" in r.stderr
    assert f"edgecrack-start: model {trained_run / 'model.onnx'}" in r.stderr
    logs = list((tmp_path / "state" / "results").glob("edgecrack-*.jsonl"))
    assert len(logs) == 1 and re.fullmatch(r"edgecrack-\d{8}\.jsonl", logs[0].name)
    records = [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip()]
    assert [rec["type"] for rec in records] == ["start"] + ["frame"] * 4 + ["summary"]
    assert records[0]["backend"]["backend"] == "onnxruntime-cpu" and records[0]["source"] == str(small_deck / "CD")
    assert records[-1]["stop_reason"] == "max frames (4)"
    assert all(0.0 <= rec["p"] <= 1.0 and rec["label"] in ("CD", "UD") for rec in records[1:-1])
    assert (tmp_path / "state" / "engines").is_dir() and (tmp_path / "state" / "cache").is_dir()
    # A second start appends to the same day's results.
    r = _start(tmp_path, small_deck / "UD", trained_run)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(logs[0].read_text().splitlines()) > len(records)


def test_start_script_engine_modes(tmp_path, trained_run, small_deck):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    r = _start(tmp_path, small_deck / "CD", trained_run, EDGECRACK_ENGINE="sometimes")
    assert r.returncode == 2 and "EDGECRACK_ENGINE must be auto, require or off (got 'sometimes')" in r.stderr
    # require: no engine here, so the service fails (and systemd's restart limit applies).
    r = _start(tmp_path, small_deck / "CD", trained_run, EDGECRACK_ENGINE="require")
    assert r.returncode != 0 and "unavailable: TensorRT cannot run here" in r.stderr
    assert not list((tmp_path / "state" / "results").glob("*.jsonl"))
    r = _start(tmp_path, small_deck / "CD", trained_run, EDGECRACK_ENGINE="off")
    assert r.returncode == 0 and "engine cache" not in r.stderr

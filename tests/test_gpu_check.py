"""benchmarks/gpu/check.sh, rehearsed on this CPU: the one script that waits for a CUDA machine
must have run end to end before it gets one (train head-only and fine-tuned, the scale step,
FP16 and INT8 Q/DQ exports, torch inference, the report), with ``DEVICE=cpu`` on 100 real
deck images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DECK = ROOT / "edgecrack" / "data" / "sdnet2018-deck"

pytestmark = pytest.mark.slow


def test_gpu_check_script_runs_end_to_end_on_cpu(tmp_path):
    pytest.importorskip("torch")
    data = tmp_path / "deck data"  # a space: the script must quote it
    for cls in ("CD", "UD"):
        (data / cls).mkdir(parents=True)
        for p in sorted((DECK / cls).glob("*.jpg"))[:50]:
            shutil.copy(p, data / cls / p.name)
    report = tmp_path / "report"
    env = dict(os.environ, DEVICE="cpu", DATA=str(data), SCALE_IMAGES="40", PYTHON=sys.executable,
               BENCH_ARGS="--batch 1 --iterations 3 --warmup 1 --e2e-images 8 --artifacts model.onnx",
               TMPDIR=str(tmp_path))
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "check.sh"), str(report)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "wrote " in out and "model.fp16.onnx" in out, out[-4000:]
    assert "model.qdq.onnx" in out or "INT8 Q/DQ refused" in out, out[-4000:]
    rep = json.loads((report / "gpu-check.json").read_text())
    assert rep["device"] == "cpu" and rep["gpu"].startswith("none (rehearsal on")
    assert [(r["dtype"], r["batch"]) for r in rep["inference"]] == [("float32", 1), ("float32", 8)]
    assert all(r["p50_ms"] > 0 and r["peak_gpu_mb"] is None for r in rep["inference"])
    for name in ("head", "ft2"):
        t = rep["training"][name]
        assert 0.0 <= t["validation_accuracy"] <= 1.0
        assert t["bottleneck"]["computed"] > 0
    assert rep["training"]["ft2"]["workers"] == 4
    assert rep["scale"]["images"] == 40 and rep["scale"]["wall_s"] > 0
    md = (report / "gpu-check.md").read_text()
    assert md.startswith("# GPU check: none (rehearsal on") and "| float32 | 8 |" in md
    bench = json.loads((report / "bench" / "bench.json").read_text())
    assert any(r["backend"] == "onnxruntime-cpu" and r["status"] == "ok" for r in bench["results"]), bench["results"]
    assert not any(p.name.startswith("tmp.") for p in tmp_path.iterdir()), "run folders left behind"

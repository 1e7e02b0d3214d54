"""The deploy side imports without torch (a Jetson has TensorRT/onnxruntime + OpenCV + numpy only)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

MODULES = [
    "edgecrack.runtime", "edgecrack.runtime.onnxruntime_backend", "edgecrack.runtime.tensorrt_backend",
    "edgecrack.runtime.torch_backend", "edgecrack.loop.config", "edgecrack.loop.types", "edgecrack.loop.tiling",
    "edgecrack.loop.postprocess", "edgecrack.loop.render", "edgecrack.loop.sources", "edgecrack.loop.sources.live",
    "edgecrack.loop.sources.gstreamer", "edgecrack.loop.inspector", "edgecrack.loop.workers", "edgecrack.loop.runner",
    "edgecrack.loop.sinks", "edgecrack.redact",
    "edgecrack.preprocess", "edgecrack.metrics", "edgecrack.bench", "edgecrack.calibration", "edgecrack.doctor",
    "edgecrack.evaluate", "edgecrack.export.tensorrt", "edgecrack.export.quantize", "edgecrack.manifest",
]

SCRIPT = textwrap.dedent("""
    import importlib, importlib.abc, json, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name == "torchvision" or name.startswith("torchvision."):
                raise ImportError(f"No module named {name!r} (blocked by the isolation test)", name=name)
            return None

    sys.meta_path.insert(0, BlockTorch())
    result = {}
    for mod in json.loads(sys.argv[1]):
        try:
            importlib.import_module(mod)
            result[mod] = "ok"
        except Exception as e:
            result[mod] = f"{type(e).__name__}: {e}"
    from typer.testing import CliRunner
    from edgecrack.cli import app
    r = CliRunner().invoke(app, ["--help"])
    result["cli --help"] = "ok" if r.exit_code == 0 and "build-engine" in r.output else f"exit {r.exit_code}: {r.output[-300:]}"
    from edgecrack.doctor import run_doctor
    rep = run_doctor()
    torch_check = [c for c in rep.checks if c.name == "PyTorch"][0]
    result["doctor"] = "ok" if not torch_check.ok and rep.backends["torch"] else "doctor saw torch"
    result["torch_loaded"] = "torch" in sys.modules
    print(json.dumps(result))
""")


def test_deploy_modules_import_without_torch():
    present = [m for m in MODULES if importlib.util.find_spec(m) is not None]
    missing = sorted(set(MODULES) - set(present))
    r = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(present)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    bad = {k: v for k, v in res.items() if v not in ("ok", False)}
    assert not bad, f"imports needing torch: {bad} (modules not in this build, skipped: {missing})"
    assert res["torch_loaded"] is False

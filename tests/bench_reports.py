"""Synthetic benchmark reports for the bench tests (numbers chosen so ratios are easy to check)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from edgecrack.bench import SCHEMA, LatencyStats


def stats(p50: float, batch: int = 1) -> dict:
    return LatencyStats.from_samples([p50 * 0.9, p50, p50 * 1.1], batch, wall_s=3 * p50 / 1e3).__dict__


def report_dict(onnx_p50: float = 10.0, torch_p50: float = 40.0, acc: float = 0.9, cpu: str = "Test CPU") -> dict:
    def cell(artifact, backend, kind, p50):
        return {"artifact": artifact, "path": f"/runs/x/{artifact}", "kind": kind, "precision": "fp32",
                "size_bytes": 1000, "backend": backend, "status": "ok", "reason": None,
                "info": {"backend": backend}, "load_ms": 5.0, "memory": {"peak_delta_mb": 50.0},
                "batches": [{"batch": 1, "compute": stats(p50), "e2e": stats(p50 * 1.1),
                             "stages_ms": {"decode": 0.5, "preprocess": 0.1, "infer": p50, "postprocess": 0.01}},
                            {"batch": 8, "compute": stats(p50 * 6, 8), "e2e": None, "stages_ms": {}}],
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


def write(tmp_path: Path, name: str, d: dict) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def benchmark_module(name: str):
    """Import ``benchmarks/<name>.py`` (the benchmarks are scripts, not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod

"""edgecrack.runtime.registry: one name per backend, for open_backend, bench, doctor and eval."""

from __future__ import annotations

import pytest

from edgecrack.errors import ConfigError
from edgecrack.runtime import OnnxRuntimeBackend, open_backend
from edgecrack.runtime.registry import (ALIASES, AUTO_ORDER, LOCAL, PREFERENCES, SPECS, backends_for, canonical_backend,
                                        probe_backend)


def test_names_and_aliases():
    assert [s.name for s in SPECS] == ["tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu",
                                       "torch-cuda", "torch-cpu", "triton"]
    assert {a: canonical_backend(a) for a in ("torch", "ort", "trt", "onnxruntime", "ORT-CUDA")} == {
        "torch": "torch-cpu", "ort": "onnxruntime-cpu", "trt": "tensorrt", "onnxruntime": "onnxruntime-cpu",
        "ORT-CUDA": "onnxruntime-cuda"}
    assert set(ALIASES.values()) <= {s.name for s in SPECS} and "triton" not in LOCAL
    assert backends_for("onnx") == ("onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")
    assert backends_for("checkpoint") == ("torch-cuda", "torch-cpu") and backends_for("engine") == ("tensorrt",)
    assert set(AUTO_ORDER) <= set(PREFERENCES) and canonical_backend("auto", allow_auto=True) == "auto"
    with pytest.raises(ConfigError, match="unknown backend 'onnxruntime-gpu'") as e:
        canonical_backend("onnxruntime-gpu")
    assert "onnxruntime-cpu" in e.value.hint and "auto" not in e.value.hint


def test_probes_are_the_backends_own():
    assert probe_backend("onnxruntime-cpu") is None
    assert probe_backend("ort-cuda") == OnnxRuntimeBackend.probe("cuda")


def test_open_backend_speaks_the_same_names(tmp_path):
    pytest.importorskip("onnx")
    from tiny_onnx import write_tiny_onnx

    from edgecrack.doctor import run_doctor

    path, _ = write_tiny_onnx(tmp_path / "model.onnx")
    for name in ("onnxruntime-cpu", "ort", "onnxruntime"):
        with open_backend(path, name).backend as b:
            assert b.name == "onnxruntime-cpu"
    with pytest.raises(ConfigError, match="unknown backend"):
        open_backend(path, "cuda")
    assert set(run_doctor().backends) == {*AUTO_ORDER, "torch-cpu"}

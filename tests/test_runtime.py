"""open_backend fallback decisions on real ONNX models, clear errors for broken artifacts, and the
committed tiny model's golden tensors. Torch-free: the model is tests/assets/tiny (conftest ``tiny_onnx``).

No TensorRT on this machine: an engine next to the model is a stand-in plan file with a real
sidecar manifest. Only the selection logic reads it (size, sha256, sidecar, machine match); the
TensorRT path itself is covered by tests/test_tensorrt.py on GPU machines.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecrack.errors import ArtifactError, BackendUnavailable, ConfigError
from edgecrack.manifest import read_manifest, sidecar_path, write_manifest
from edgecrack.preprocess import InputContract, preprocess_files
from edgecrack.runtime import engines_for_onnx, open_backend
from edgecrack.runtime.tensorrt_backend import engine_matches_machine, tensorrt_version

#: Only the fallback decisions assume TensorRT is absent; everything else here runs on a GPU machine too.
no_tensorrt = pytest.mark.skipif(tensorrt_version() is not None, reason="this decision assumes TensorRT is absent")


@pytest.fixture()
def run_copy(tmp_path, tiny_onnx) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(tiny_onnx, d / "model.onnx")
    shutil.copy(sidecar_path(tiny_onnx), sidecar_path(d / "model.onnx"))
    return d


def _stand_in_engine(run: Path, precision: str = "fp16", onnx_sha: str | None = None) -> Path:
    """A plan file plus a sidecar exactly as build-engine writes it (built on an Orin)."""
    onnx = run / "model.onnx"
    plan = b"stand-in plan bytes " * 64
    eng = run / f"model.{precision}.engine"
    eng.write_bytes(plan)
    m = read_manifest(onnx).with_kind("tensorrt", extra={
        "precision": precision, "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
        "onnx_sha256": onnx_sha or hashlib.sha256(onnx.read_bytes()).hexdigest(), "onnx_file": "model.onnx",
        "plan_bytes": len(plan), "plan_sha256": hashlib.sha256(plan).hexdigest()})
    write_manifest(eng, m)
    return eng


@no_tensorrt
def test_onnx_only_auto_walks_to_cpu_and_records_why(run_copy, holdout_deck):
    sel = open_backend(run_copy)
    assert sel.backend.name == "onnxruntime-cpu"
    names = [n for n, _ in sel.skipped]
    assert names == ["tensorrt", "onnxruntime-cuda"]
    assert "no engine next to model.onnx" in sel.skipped[0][1]
    assert "CUDAExecutionProvider" in sel.skipped[1][1]
    batch = preprocess_files(sorted((holdout_deck / "CD").glob("*.jpg"))[:3], sel.backend.manifest.input)
    p = sel.backend.probs(batch)
    assert p.shape == (3, 2) and np.allclose(p.sum(1), 1, atol=1e-5)


@no_tensorrt
def test_engine_next_to_onnx_without_tensorrt_falls_back_with_reason(run_copy):
    _stand_in_engine(run_copy)
    sel = open_backend(run_copy / "model.onnx")
    assert sel.backend.name == "onnxruntime-cpu"
    name, why = sel.skipped[0]
    assert name == "tensorrt (model.fp16.engine)" and "TensorRT" in why and "not installed" in why


@no_tensorrt
def test_engine_given_falls_back_to_its_onnx_unless_strict(run_copy):
    eng = _stand_in_engine(run_copy)
    sel = open_backend(eng)
    assert sel.backend.name == "onnxruntime-cpu"
    assert sel.backend.artifact == run_copy / "model.onnx"
    assert sel.skipped[0][0] == "tensorrt (model.fp16.engine)"
    with pytest.raises(BackendUnavailable, match="TensorRT cannot run model.fp16.engine"):
        open_backend(eng, strict=True)
    with pytest.raises(BackendUnavailable):
        open_backend(eng, prefer="tensorrt")
    with pytest.raises(ArtifactError, match="model.fp16.engine"):
        open_backend(run_copy / "model.onnx", strict=True)


@no_tensorrt
def test_engine_given_with_onnxruntime_preference_uses_its_onnx(run_copy):
    eng = _stand_in_engine(run_copy)
    sel = open_backend(eng, prefer="onnxruntime-cpu")
    assert sel.backend.name == "onnxruntime-cpu" and sel.backend.artifact.name == "model.onnx"


@no_tensorrt
def test_engine_for_this_machine_reports_mismatch(run_copy):
    eng = _stand_in_engine(run_copy)
    why = engine_matches_machine(read_manifest(eng))
    assert why is not None and "TensorRT is not installed" in why and "10.3.0" in why


@no_tensorrt
def test_truncated_engine_is_named_and_falls_back_in_auto(run_copy):
    eng = _stand_in_engine(run_copy)
    eng.write_bytes(eng.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"truncated or corrupt: 100 bytes, its sidecar says 1280") as e:
        open_backend(eng, strict=True)
    assert "build-engine" in e.value.hint
    sel = open_backend(eng)
    assert sel.backend.name == "onnxruntime-cpu" and "truncated" in sel.skipped[0][1]


@no_tensorrt
def test_corrupt_engine_same_size_is_detected_by_sha256(run_copy):
    eng = _stand_in_engine(run_copy)
    eng.write_bytes(b"X" * eng.stat().st_size)
    with pytest.raises(ArtifactError, match="sha256 differs"):
        open_backend(eng, strict=True)


def test_engine_without_sidecar_is_refused(run_copy):
    eng = run_copy / "model.fp16.engine"
    eng.write_bytes(b"plan")
    with pytest.raises(ArtifactError, match="no sidecar manifest"):
        open_backend(eng)


@no_tensorrt
def test_engine_from_another_export_is_skipped(run_copy):
    _stand_in_engine(run_copy, onnx_sha="0" * 64)
    found = engines_for_onnx(run_copy / "model.onnx")
    assert len(found) == 1 and "another export" in found[0][2]
    sel = open_backend(run_copy)
    assert "another export" in sel.skipped[0][1]


def test_engines_are_tried_fp16_int8_fp32(run_copy):
    for p in ("fp32", "int8", "fp16"):
        _stand_in_engine(run_copy, p)
    assert [e.name for e, _, _ in engines_for_onnx(run_copy / "model.onnx")] == [
        "model.fp16.engine", "model.int8.engine", "model.fp32.engine"]


def test_truncated_onnx_is_a_clear_error(run_copy):
    onnx = run_copy / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="corrupt or truncated|cannot load"):
        open_backend(onnx)
    sidecar_path(onnx).unlink()
    with pytest.raises(ArtifactError, match="not a readable ONNX model"):
        open_backend(onnx)


def test_empty_onnx_is_a_clear_error(run_copy):
    (run_copy / "model.onnx").write_bytes(b"")
    with pytest.raises(ArtifactError, match="empty"):
        open_backend(run_copy)


def test_newer_manifest_schema_is_a_clear_error(run_copy):
    side = sidecar_path(run_copy / "model.onnx")
    d = json.loads(side.read_text())
    d["schema"], d["edgecrack_version"] = 99, "9.0.0"
    side.write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="schema 99 was written by a newer edgecrack") as e:
        open_backend(run_copy)
    assert "upgrade edgecrack" in e.value.hint


def test_unknown_preference_and_missing_artifact(tmp_path):
    with pytest.raises(ConfigError, match="unknown backend"):
        open_backend(tmp_path, prefer="fastest")
    with pytest.raises(ArtifactError, match="artifact not found"):
        open_backend(tmp_path / "nope.onnx")
    with pytest.raises(ArtifactError, match="holds no model.onnx"):
        open_backend(tmp_path)


@no_tensorrt
def test_prefer_tensorrt_without_engine_says_how_to_build(run_copy):
    with pytest.raises(BackendUnavailable, match="no TensorRT engine") as e:
        open_backend(run_copy, prefer="tensorrt")
    assert "build-engine" in e.value.hint


@no_tensorrt
def test_eval_all_lists_every_artifact_with_deltas(run_copy, holdout_deck):
    from typer.testing import CliRunner

    from edgecrack.cli import app

    shutil.copy(run_copy / "model.onnx", run_copy / "copy.onnx")
    shutil.copy(sidecar_path(run_copy / "model.onnx"), sidecar_path(run_copy / "copy.onnx"))
    _stand_in_engine(run_copy)
    out = run_copy / "eval_all.json"
    r = CliRunner().invoke(app, ["eval", str(run_copy), str(holdout_deck), "--all", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "TensorRT is not installed" in " ".join(r.output.split())
    rows = {Path(a["artifact"]).name: a for a in json.loads(out.read_text())["artifacts"]}
    assert rows["model.onnx"]["accuracy_delta_points"] == 0 and rows["model.onnx"]["agreement_with_fp32"] == 1.0
    assert rows["copy.onnx"]["accuracy_delta_points"] == 0 and rows["copy.onnx"]["agreement_with_fp32"] == 1.0
    assert rows["model.fp16.engine"]["metrics"] is None and "TensorRT" in rows["model.fp16.engine"]["error"]
    assert rows["model.onnx"]["metrics"]["n"] == 40


def test_golden_tensors_of_the_tiny_model(tiny_onnx, tiny_golden, deck_dir):
    """The committed model gives its committed probabilities (max |dp| < 1e-5), and the committed
    input is exactly what preprocess makes of the named real images today."""
    gold = tiny_golden
    sel = open_backend(tiny_onnx, "onnxruntime-cpu")
    with sel.backend as be:
        assert be.manifest.input == InputContract(height=64, width=64) and be.manifest.positive_label == "CD"
        x = preprocess_files([deck_dir / str(n) for n in gold["names"]], be.manifest.input)
        np.testing.assert_array_equal(x, gold["images"])
        p = be.probs(gold["images"])
    assert p.shape == gold["probs"].shape == (4, 2) and p.dtype == np.float32
    assert float(np.abs(p - gold["probs"]).max()) < 1e-5
    # The golden images hold both verdicts, so a model that answers one class everywhere fails here.
    assert (p[:, 0] >= be.manifest.threshold).any() and (p[:, 0] < be.manifest.threshold).any()

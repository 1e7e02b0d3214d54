"""edgecrack.artifacts: one listing of a run's artifacts, one naming of its variants, typed engine facts."""

from __future__ import annotations

import shutil

import pytest

from edgecrack.artifacts import (EngineFacts, artifact_at, check_plan_file, engine_path, fp32_sibling, precision_of,
                                 precision_onnx_path, run_artifacts)
from edgecrack.errors import ArtifactError
from edgecrack.manifest import write_manifest

onnx = pytest.importorskip("onnx")
from tiny_onnx import tiny_manifest, write_tiny_onnx  # noqa: E402

ENGINE_EXTRA = {"precision": "fp16", "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
                "onnx_sha256": "ab" * 32, "onnx_file": "model.onnx", "plan_bytes": 4, "plan_sha256": "0" * 64,
                "build_seconds": 61.5}


@pytest.fixture
def run(tmp_path):
    """A run folder with a checkpoint manifest, three ONNX models, a .engine and a .plan (all with sidecars)."""
    r = tmp_path / "run"
    r.mkdir()
    (r / "checkpoint.safetensors").write_bytes(b"weights")
    write_manifest(r, tiny_manifest("checkpoint"))
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        write_tiny_onnx(r / name)
    for name, prec in (("model.fp16.engine", "fp16"), ("model.int8.plan", "int8")):
        (r / name).write_bytes(b"plan")
        write_manifest(r / name, tiny_manifest("tensorrt", **{**ENGINE_EXTRA, "precision": prec}))
    (r / ".model.onnx.tmp").write_bytes(b"half-written")  # an interrupted atomic write is not an artifact
    return r


def test_one_listing_for_bench_and_eval(run):
    from edgecrack.bench import artifacts_of_run
    from edgecrack.evaluate import artifacts_of_run as eval_artifacts

    arts = run_artifacts(run)
    assert [a.name for a in arts] == ["checkpoint.safetensors", "model.onnx", "model.int8.onnx", "model.fp16.onnx",
                                      "model.fp16.engine", "model.int8.plan"]
    assert [a.family for a in arts] == ["checkpoint", "onnx", "onnx", "onnx", "engine", "engine"]
    # bench and eval --all list the same files (eval without the checkpoint); .plan engines included.
    assert [a.name for a in artifacts_of_run(run)] == [a.name for a in arts]
    assert [p.name for p in eval_artifacts(run)] == [a.name for a in arts[1:]]
    assert [p.name for p in eval_artifacts(run / "model.onnx")] == [a.name for a in arts[1:]]
    (run.parent / "empty").mkdir()
    with pytest.raises(ArtifactError, match="holds no checkpoint, ONNX model or engine"):
        run_artifacts(run.parent / "empty")
    with pytest.raises(ArtifactError, match="run folder not found"):
        run_artifacts(run / "missing")


def test_artifact_fields_are_typed(run):
    eng = artifact_at(run / "model.fp16.engine")
    assert (eng.kind, eng.precision, eng.size_bytes) == ("tensorrt", "fp16", 4)
    assert eng.engine == EngineFacts(precision="fp16", tensorrt_version="10.3.0", gpu_name="Orin",
                                     compute_capability="8.7", onnx_sha256="ab" * 32, onnx_file="model.onnx",
                                     plan_bytes=4, plan_sha256="0" * 64, build_seconds=61.5)
    assert eng.engine.built_for() == "TensorRT 10.3.0 on Orin (sm 8.7)"
    ckpt = artifact_at(run / "checkpoint.safetensors")
    assert (ckpt.kind, ckpt.precision, ckpt.engine) == ("checkpoint", "fp32", None)
    assert precision_of(tiny_manifest("onnx-int8")) == "int8"
    (run / "model.fp16.engine.json").write_text("{broken")
    broken = artifact_at(run / "model.fp16.engine")
    assert broken.manifest is None and broken.error and broken.precision == "?"
    with pytest.raises(ArtifactError, match="not an edgecrack artifact"):
        artifact_at(run / "notes.txt")


def test_variant_paths_have_one_naming(tmp_path):
    assert fp32_sibling(tmp_path / "model.qdq.onnx") == tmp_path / "model.onnx"
    assert precision_onnx_path(tmp_path / "model.qdq.onnx", "fp16") == tmp_path / "model.fp16.onnx"
    assert precision_onnx_path(tmp_path / "model.onnx", "int8") == tmp_path / "model.qdq.onnx"
    assert engine_path(tmp_path / "model.onnx", "int8") == tmp_path / "model.int8.engine"


def test_variant_naming_lives_only_in_artifacts():
    """The export modules name variants through edgecrack.artifacts, not wrappers of their own."""
    import edgecrack.export.precision as precision
    import edgecrack.export.tensorrt as tensorrt

    for mod, gone in ((precision, ("default_precision_path", "fp32_sibling")), (tensorrt, ("default_engine_path",))):
        for name in gone:
            assert not hasattr(mod, name) or getattr(mod, name).__module__ == "edgecrack.artifacts", name


def test_plan_file_checked_against_its_sidecar(run):
    m = artifact_at(run / "model.fp16.engine").manifest
    with pytest.raises(ArtifactError, match="sha256 differs"):
        check_plan_file(run / "model.fp16.engine", m)
    shutil.copy(run / "model.fp16.engine", run / "short.engine")
    (run / "short.engine").write_bytes(b"pl")
    with pytest.raises(ArtifactError, match="truncated or corrupt: 2 bytes, its sidecar says 4"):
        check_plan_file(run / "short.engine", m)

"""TensorRT engines: real builds and parity on GPU machines (marked gpu + trt); refusals everywhere."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecrack.cli import app
from edgecrack.export.tensorrt import calibration_cache_key, int8_unsupported_reason
from edgecrack.runtime.tensorrt_backend import tensorrt_version

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cc,name,refused", [
    ((5, 3), "NVIDIA Tegra X1", "Jetson Nano"),
    ((6, 2), "NVIDIA Tegra X2", "Jetson TX2"),
    ((6, 0), "Tesla P100", "sm 6.0"),
    ((5, 2), "GeForce GTX 980", "sm 5.2"),
    ((6, 1), "GeForce GTX 1080", None),
    ((7, 2), "Xavier", None),
    ((8, 7), "Orin", None),
    ((9, 0), "NVIDIA H200", None),
])
def test_int8_refused_on_devices_without_fast_int8(cc, name, refused):
    why = int8_unsupported_reason(*cc, name)
    if refused is None:
        assert why is None
    else:
        assert refused in why and "no fast INT8" in why
    assert int8_unsupported_reason(8, 7, "Orin", platform_has_fast_int8=False) is not None


def test_calibration_cache_key_covers_model_data_tensorrt_and_device():
    base = ("a" * 64, "c0ffee", "10.3.0", "Orin", "8.7", 8, None)
    k = calibration_cache_key(*base)
    for i, other in enumerate(("b" * 64, "beef", "8.6.2", "Xavier", "7.2", 4, 0)):
        changed = list(base)
        changed[i] = other
        assert calibration_cache_key(*changed) != k
    assert calibration_cache_key(*base) == k


@pytest.mark.skipif(tensorrt_version() is not None, reason="checks the no-TensorRT message")
def test_build_engine_without_tensorrt_names_target_cpu(trained_onnx):
    r = CliRunner().invoke(app, ["build-engine", str(trained_onnx), "--precision", "fp16"])
    assert r.exit_code == 1
    assert "TensorRT is not installed" in r.output and "--target cpu" in r.output


def test_build_engine_option_errors(trained_onnx):
    r = CliRunner().invoke(app, ["build-engine", str(trained_onnx), "--precision", "int8"])
    assert r.exit_code == 1 and "cannot build a TensorRT engine here" in r.output
    r = CliRunner().invoke(app, ["build-engine", str(trained_onnx), "--precision", "fp16", "--target", "cpu"])
    assert r.exit_code == 1 and "--target cpu builds INT8" in r.output
    r = CliRunner().invoke(app, ["build-engine", str(trained_onnx), "--precision", "fp8"])
    assert r.exit_code == 1 and "unknown precision" in r.output
    r = CliRunner().invoke(app, ["build-engine", str(trained_onnx), "--max-batch", "4", "--opt-batch", "2",
                                 "--precision", "fp32", "--dla-core", "0"])
    assert r.exit_code == 1 and "DLA runs FP16 or INT8 only" in r.output


# -- real builds: GPU + TensorRT ---------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory, trained_onnx):
    d = tmp_path_factory.mktemp("trt")
    shutil.copy(trained_onnx, d / "model.onnx")
    shutil.copy(trained_onnx.with_name("model.onnx.json"), d / "model.onnx.json")
    return d


@pytest.mark.gpu
@pytest.mark.trt
def test_fp16_engine_parity_and_sidecar(gpu_run, holdout_deck, tmp_path, monkeypatch):
    from edgecrack.evaluate import evaluate
    from edgecrack.export.tensorrt import engine_from_onnx
    from edgecrack.manifest import read_manifest
    from edgecrack.runtime import open_backend
    from edgecrack.runtime.tensorrt_backend import engine_matches_machine

    monkeypatch.setenv("EDGECRACK_CACHE", str(tmp_path / "cache"))
    eng, m = engine_from_onnx(gpu_run / "model.onnx", precision="fp16", max_batch=16, opt_batch=4)
    assert eng.name == "model.fp16.engine" and eng.stat().st_size == m.extra["plan_bytes"]
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "onnx_sha256", "build_seconds"):
        assert m.extra[key]
    par = m.extra["parity_vs_onnxruntime"]
    assert par["top1_agreement"] >= 0.97 and par["max_abs_diff"] < 0.02
    assert engine_matches_machine(read_manifest(eng)) is None
    sel = open_backend(gpu_run)
    assert sel.backend.name == "tensorrt"
    x = np.zeros((40, 224, 224, 3), np.uint8)  # above max batch: split into chunks
    assert sel.backend.probs(x).shape == (40, 2)
    assert sel.backend.info()["last_gpu_ms"] > 0
    ref = evaluate(gpu_run / "model.onnx", holdout_deck, backend="onnxruntime-cpu").metrics["accuracy"]
    got = evaluate(eng, holdout_deck, backend="tensorrt").metrics["accuracy"]
    assert abs(got - ref) <= 0.05


@pytest.mark.gpu
@pytest.mark.trt
def test_int8_engine_strongly_typed_from_qdq_onnx(gpu_run, holdout_deck, tmp_path, monkeypatch):
    """TensorRT >= 10: INT8 from the Q/DQ ONNX made on CPU, no calibrator, no precision flags."""
    import tensorrt as trt

    from edgecrack.export.precision import precision_onnx_from_onnx
    from edgecrack.export.tensorrt import engine_from_onnx

    if int(trt.__version__.split(".")[0]) < 10:
        pytest.skip("TensorRT 8.x builds INT8 with flags (covered by the calibrator test)")
    monkeypatch.setenv("EDGECRACK_CACHE", str(tmp_path / "cache"))
    precision_onnx_from_onnx(gpu_run / "model.onnx", "int8", calib=REPO / "calibration" / "deck",
                             eval_data=holdout_deck, budget=0.99)
    eng, m = engine_from_onnx(gpu_run / "model.onnx", precision="int8", max_batch=8, opt_batch=4)
    assert m.extra["build_mode"] == {"onnx": "int8", "strongly_typed": True, "flags": [], "calibrator": False}
    assert m.extra["calibration_images"] == 64
    assert m.extra["parity_vs_onnxruntime"]["top1_agreement"] >= 0.9


@pytest.mark.gpu
@pytest.mark.trt
def test_int8_engine_uses_calibration_and_reuses_its_cache(gpu_run, tmp_path, monkeypatch):
    import tensorrt as trt

    from edgecrack.export.tensorrt import EngineConfig, engine_from_onnx

    if int(trt.__version__.split(".")[0]) >= 10:
        pytest.skip("TensorRT >= 10 builds INT8 only from model.qdq.onnx (implicit calibration deprecated/removed)")
    monkeypatch.setenv("EDGECRACK_CACHE", str(tmp_path / "cache"))
    cfg = EngineConfig(precision="int8", calib=str(REPO / "calibration" / "deck"), max_batch=8, opt_batch=4)
    eng, m = engine_from_onnx(gpu_run / "model.onnx", gpu_run / "a.int8.engine", config=cfg)
    assert m.extra["calibration_hash"] and m.extra["calibration_images"] == 64
    assert m.extra["calibration_cache_reused"] is False and Path(m.extra["calibration_cache"]).is_file()
    assert m.extra["parity_vs_onnxruntime"]["top1_agreement"] >= 0.9
    _, m2 = engine_from_onnx(gpu_run / "model.onnx", gpu_run / "b.int8.engine", config=cfg)
    assert m2.extra["calibration_cache_reused"] is True

"""onnxruntime static INT8 on real images: accuracy within one point of FP32 on held-out images."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from edgecrack.cli import app
from edgecrack.errors import ConfigError
from edgecrack.export.quantize import QuantizeConfig, int8_from_onnx, preprocessing_nodes
from edgecrack.manifest import manifest_from_onnx, read_manifest, sidecar_path
from edgecrack.runtime import open_backend

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, deck_dir, small_deck) -> Path:
    """The bundled deck minus the 40 training images of ``trained_run`` (360 real images)."""
    root = tmp_path_factory.mktemp("heldout")
    train = {p.name for p in small_deck.rglob("*.jpg")}
    for cls in ("CD", "UD"):
        (root / cls).mkdir()
        for p in (deck_dir / cls).glob("*.jpg"):
            if p.name not in train:
                shutil.copy(p, root / cls / p.name)
    return root


@pytest.fixture(scope="module")
def int8(tmp_path_factory, trained_onnx, heldout):
    d = tmp_path_factory.mktemp("int8")
    shutil.copy(trained_onnx, d / "model.onnx")
    shutil.copy(sidecar_path(trained_onnx), sidecar_path(d / "model.onnx"))
    cfg = QuantizeConfig(calib=str(REPO / "calibration" / "deck"), formats=("qdq-u8s8",), eval_data=str(heldout),
                         latency_runs=5, accuracy_budget=0.01)
    return int8_from_onnx(d / "model.onnx", config=cfg)


def test_int8_accuracy_within_one_point_of_fp32(int8):
    n = int8.eval_images
    assert n >= 250  # held-out minus calibration images
    assert int8.fp32.accuracy > 0.6  # a real model, not chance
    assert int8.chosen.accuracy >= int8.fp32.accuracy - 0.01
    assert int8.chosen.top1_agreement >= 0.9


def test_int8_manifest_records_deltas_and_calibration(int8):
    m = read_manifest(int8.path)
    assert int8.path.name == "model.int8.onnx" and m.kind == "onnx-int8"
    ex = m.extra
    assert ex["format"] == "qdq-u8s8" and ex["calibration_images"] == 64
    assert ex["calibration_hash"] == read_manifest_hash()
    d = ex["deltas_vs_fp32"]
    assert d["speedup_batch1"] > 0 and d["speedup_batch8"] > 0
    assert d["accuracy_points"] == pytest.approx((int8.chosen.accuracy - int8.fp32.accuracy) * 100, abs=1e-3)
    assert set(ex["fp32"]["latency_ms"]) == {"1", "8"}
    assert manifest_from_onnx(int8.path).to_dict() == m.to_dict()
    assert m.parent == ex["onnx_sha256"]


def read_manifest_hash() -> str:
    import json

    return json.loads((REPO / "calibration" / "deck" / "calibration.json").read_text())["hash"]


def test_preprocessing_stays_float_and_input_stays_uint8(int8):
    model = onnx.load(str(int8.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    excluded = read_manifest(int8.path).extra["excluded_nodes"]
    assert any("Cast" in n for n in excluded) and any("Transpose" in n for n in excluded)
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # Nothing quantizes the uint8 pixels before the in-graph normalisation.
    first_q = ops.index("QuantizeLinear")
    assert {"Cast", "Transpose"} <= set(ops[:first_q])


def test_int8_runs_on_onnxruntime_with_reason_for_tensorrt(int8):
    sel = open_backend(int8.path)
    assert sel.backend.name == "onnxruntime-cpu"
    assert ("tensorrt", "onnx-int8 models run on onnxruntime only") in sel.skipped
    assert sel.backend.info()["precision"] == "int8"


def test_preprocessing_nodes_stop_at_first_conv(trained_onnx):
    names = preprocessing_nodes(onnx.load(str(trained_onnx)))
    assert names and all(n.startswith("/normalize/") or "Pad" in n or "pad" in n.lower() for n in names[:5])


def test_bad_options_and_wrong_input_are_clear(int8, trained_onnx):
    with pytest.raises(ConfigError, match="unknown INT8 format"):
        int8_from_onnx(trained_onnx, config=QuantizeConfig(formats=("fp4",)))
    with pytest.raises(ConfigError, match="not an FP32 ONNX model"):
        int8_from_onnx(int8.path, config=QuantizeConfig(calib=str(REPO / "calibration" / "deck")))
    r = CliRunner().invoke(app, ["build-engine", str(trained_onnx), "--precision", "int8", "--target", "cpu",
                                 "--calib", "/nonexistent/cal"])
    assert r.exit_code == 1 and "calibration set not found" in r.output

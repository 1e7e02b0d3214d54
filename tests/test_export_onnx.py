"""ONNX export: parity PyTorch vs onnxruntime on real images, manifest round trip, checker, CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from edgecrack.cli import app
from edgecrack.manifest import manifest_from_onnx, read_manifest, sidecar_path
from edgecrack.preprocess import preprocess_files

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "re.onnx"
    r = CliRunner().invoke(app, ["export", str(trained_run), "--out", str(out), "--parity-images", "12"])
    assert r.exit_code == 0, r.output
    return out, r.output


def test_export_records_parity_on_real_images(exported):
    out, text = exported
    m = read_manifest(out)
    par = m.extra["parity_torch_vs_ort"]
    assert par["n"] == 12
    assert par["top1_agreement"] == 1.0
    assert par["max_abs_diff"] < 1e-4
    assert m.extra["opset"] == 17 and m.kind == "onnx"
    assert "top-1 agreement 100 %" in " ".join(text.split())


def test_manifest_round_trip_sidecar_and_metadata_props(exported):
    out, _ = exported
    side = read_manifest(out)
    embedded = manifest_from_onnx(out)
    assert embedded is not None and embedded.to_dict() == side.to_dict()
    assert json.loads(sidecar_path(out).read_text())["labels"] == ["CD", "UD"]
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["edgecrack.labels"] == "CD,UD"
    # Without the sidecar the manifest still comes from metadata_props.
    sidecar_path(out).rename(out.with_suffix(".bak"))
    try:
        assert read_manifest(out).to_dict() == side.to_dict()
    finally:
        out.with_suffix(".bak").rename(sidecar_path(out))


def test_graph_contract_uint8_nhwc_dynamic_batch_softmax(exported, holdout_deck):
    out, _ = exported
    m = read_manifest(out)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.name == "images" and inp.type == "tensor(uint8)" and inp.shape[1:] == [224, 224, 3]
    assert not isinstance(inp.shape[0], int)  # dynamic batch
    paths = sorted(holdout_deck.rglob("*.jpg"))[:5]
    x = preprocess_files(paths, m.input)
    p5 = sess.run(None, {"images": x})[0]
    p1 = np.concatenate([sess.run(None, {"images": x[i:i + 1]})[0] for i in range(5)])
    assert p5.shape == (5, 2) and np.allclose(p5.sum(1), 1, atol=1e-5)
    assert np.abs(p5 - p1).max() < 1e-5


def test_export_matches_training_time_model_onnx(exported, trained_onnx, holdout_deck):
    out, _ = exported
    m = read_manifest(out)
    x = preprocess_files(sorted(holdout_deck.rglob("*.jpg"))[:8], m.input)
    a = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    b = ort.InferenceSession(str(trained_onnx), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert np.abs(a - b).max() < 1e-5


def test_export_errors_are_clear(tmp_path, trained_run):
    r = CliRunner().invoke(app, ["export", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "run folder not found" in r.output
    r = CliRunner().invoke(app, ["export", str(trained_run), "--opset", "11", "--out", str(tmp_path / "x.onnx")])
    assert r.exit_code == 1 and "below the supported floor 13" in r.output
    r = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert r.exit_code == 1 and "no checkpoint.safetensors" in r.output

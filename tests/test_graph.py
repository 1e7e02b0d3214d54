"""Exported graphs are TensorRT-ready: uint8 only into Cast, constant pads, no shape arithmetic."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecrack.errors import ArtifactError
from edgecrack.export.graph import fold_constants, readiness_of_models, tensorrt_readiness

torch = pytest.importorskip("torch")


def _onnx_of(module, x) -> onnx.ModelProto:
    buf = io.BytesIO()
    torch.onnx.export(module.eval(), (x,), buf, input_names=["images"], output_names=["out"], opset_version=17,
                      dynamic_axes={"images": {0: "n"}, "out": {0: "n"}}, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


@pytest.mark.parametrize("tta", [1, 2, 4])
def test_every_exported_cracknet_is_tensorrt_ready(tta):
    from edgecrack.export.onnx import onnx_bytes_from_model
    from edgecrack.preprocess import InputContract
    from edgecrack.train.model import skeleton_cracknet

    net = skeleton_cracknet("efficientnet_lite0", 2, 1, InputContract(224, 224), tta=tta)
    model = onnx.load_from_string(onnx_bytes_from_model(net, 224, 224))
    r = tensorrt_readiness(model)
    assert r.ok, r.summary()
    consumers = [n.op_type for n in model.graph.node if "images" in n.input]
    assert consumers == ["Cast"]
    assert not {"Shape", "ConstantOfShape", "Identity"} & set(r.ops)
    # the folded graph computes what torch computes
    import onnxruntime as ort

    x = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with torch.inference_mode():
        want = net(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 1e-5


def test_session_model_is_tensorrt_ready(trained_onnx):
    r = tensorrt_readiness(trained_onnx)
    assert r.ok, r.summary()
    assert "TensorRT-ready" in r.summary()


def test_uint8_into_transpose_is_refused():
    """The exporter's old graph: permute (Transpose) on the uint8 input, then Cast."""

    class Old(torch.nn.Module):
        def forward(self, x):
            return x.permute(0, 3, 1, 2).float() * 2.0

    r = tensorrt_readiness(_onnx_of(Old(), torch.zeros(1, 8, 8, 3, dtype=torch.uint8)))
    assert not r.ok
    f = [f for f in r.findings if f.rule == "uint8-cast"]
    assert f and "Transpose" in f[0].where and "direct input of a Cast" in f[0].message


def test_uint8_into_slice_for_tta_is_refused():
    class OldTTA(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x, torch.flip(x, [2])], 0).float()

    r = tensorrt_readiness(_onnx_of(OldTTA(), torch.zeros(1, 8, 8, 3, dtype=torch.uint8)))
    assert any(f.rule == "uint8-cast" for f in r.findings)


def test_fold_constants_turns_pad_arithmetic_into_a_constant_pad():
    m = torch.nn.Sequential(torch.nn.ZeroPad2d((0, 1, 0, 1)), torch.nn.Conv2d(3, 4, 3, 2))
    raw = _onnx_of(m, torch.zeros(1, 3, 16, 16))
    raw_ops = {n.op_type for n in raw.graph.node}
    assert "ConstantOfShape" in raw_ops and not tensorrt_readiness(raw).ok  # the exporter's pad arithmetic
    folded = fold_constants(onnx.load_from_string(raw.SerializeToString()))
    ops = [n.op_type for n in folded.graph.node]
    assert ops == ["Pad", "Conv"], ops
    assert tensorrt_readiness(folded).ok
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    a = ort.InferenceSession(raw.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    b = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    np.testing.assert_allclose(a, b, rtol=0, atol=0)


def _qdq_model(zero_point: int, zp_type=TensorProto.INT8, op="QuantizeLinear") -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             helper.make_tensor("z", zp_type, [], [zero_point])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")]
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_symmetric_int8_qdq_passes_and_asymmetric_uint8_fails():
    assert tensorrt_readiness(_qdq_model(0)).ok
    r = tensorrt_readiness(_qdq_model(128, TensorProto.UINT8))
    msgs = " ".join(f.message for f in r.findings)
    assert not r.ok and "zero point must be 0" in msgs


def test_ort_only_integer_ops_and_new_opsets_are_reported():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("QLinearConv", ["x"], ["y"], name="qc"),
                           helper.make_node("NonZero", ["x"], ["nz"], name="nz")], "g", [x], [y])
    r = tensorrt_readiness(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)]))
    rules = {f.rule for f in r.findings}
    assert {"ort-only-op", "shape-arithmetic", "opset"} <= rules


def test_doctor_model_reports_readiness(trained_run, tmp_path):
    from typer.testing import CliRunner

    from edgecrack.cli import app

    r = CliRunner().invoke(app, ["doctor", "--model", str(trained_run)])
    assert r.exit_code == 0, r.output
    assert "TensorRT-ready" in r.output

    class Old(torch.nn.Module):
        def forward(self, x):
            return x.permute(0, 3, 1, 2).float() * 2.0

    bad = tmp_path / "old.onnx"
    onnx.save(_onnx_of(Old(), torch.zeros(1, 8, 8, 3, dtype=torch.uint8)), str(bad))
    r = CliRunner().invoke(app, ["doctor", "--model", str(bad)])
    out = " ".join(r.output.split())  # rich wraps at the test terminal's width
    assert r.exit_code == 1 and "[uint8-cast] Transpose" in out and "not TensorRT-ready" in out


def test_readiness_of_a_run_folder_judges_cpu_int8_models_by_the_input_rules_only(tiny_run, tmp_path):
    """What ``edgecrack doctor --model`` reports: every ONNX file of a folder; an onnxruntime CPU
    INT8 model (integer ops are its point) only by the uint8-cast and static-shape rules."""
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    qc = helper.make_model(helper.make_graph([helper.make_node("QLinearConv", ["x"], ["y"], name="qc")], "g", [x], [y]),
                           opset_imports=[helper.make_opsetid("", 17)])
    for name in ("model.int8.onnx", "stray.onnx"):
        onnx.save(qc, str(run / name))
    # a CPU INT8 model whose uint8 input goes into a Transpose breaks its contract all the same
    u = helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 4, 4, 3])
    t = helper.make_tensor_value_info("t", TensorProto.UINT8, [1, 3, 4, 4])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Transpose", ["images"], ["t"], perm=[0, 3, 1, 2],
                                                                    name="tr")], "g", [u], [t]),
                                opset_imports=[helper.make_opsetid("", 17)]), str(run / "bad.int8.onnx"))
    side = json.loads((run / "model.onnx.json").read_text())
    for name in ("model.int8.onnx", "bad.int8.onnx"):
        (run / f"{name}.json").write_text(json.dumps({**side, "kind": "onnx-int8"}))
    res = {p.name: r for p, r in readiness_of_models(run).items()}
    assert sorted(res) == ["bad.int8.onnx", "model.int8.onnx", "model.onnx", "stray.onnx"]
    assert res["model.onnx"].ok and res["model.int8.onnx"].ok and not res["model.int8.onnx"].tensorrt_input
    bad = res["bad.int8.onnx"]
    assert not bad.ok and [str(f) for f in bad.findings] == [
        "[uint8-cast] Transpose node tr: takes uint8 tensor 'images'; TensorRT accepts uint8 only as the direct input "
        "of a Cast: cast first, then transpose/slice/normalise", "[uint8-cast] output t: graph outputs must not be uint8"]
    assert bad.summary().startswith("onnxruntime CPU INT8, contract broken: 2 problem(s)")
    assert not res["stray.onnx"].ok and "ort-only-op" in {f.rule for f in res["stray.onnx"].findings}
    with pytest.raises(ArtifactError, match="no ONNX model at"):
        readiness_of_models(tmp_path / "empty")
    (run / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="broken.onnx is not a readable ONNX model"):
        readiness_of_models(run)

"""ONNX graph hygiene: constant folding and the static TensorRT-readiness check.

Torch-free (needs only the ``onnx`` package), so ``edgecrack doctor --model`` can run it on a
Jetson or a CPU box before anyone tries to build an engine.

The readiness rules are those that make TensorRT's ONNX parser refuse a graph, taken from the
ONNX-TensorRT operator support matrix (8.5/8.6, 10.x, 11.x) and its parser's error messages:

- a ``uint8`` tensor may only be the direct input of a ``Cast`` (NVIDIA/TensorRT issue 3985:
  "All UINT8 inputs must directly feed into a cast layer", even Transpose/Reshape/Slice/Shape);
- only operators every supported TensorRT version parses (the list below is the subset of the
  support matrix that image classifiers use; anything else is reported, not guessed);
- ``QuantizeLinear``/``DequantizeLinear`` with int8 values and zero points of 0 (TensorRT's
  explicit quantization is symmetric), per-channel scales only on constant weights;
- no operator from a non-standard domain (``com.microsoft`` fused/QOperator ops are
  onnxruntime-only), and no integer-arithmetic ops (``QLinearConv``, ``ConvInteger``,
  ``MatMulInteger``, ``DynamicQuantizeLinear``);
- no shape arithmetic left on the graph (``Shape``/``ConstantOfShape``/``Range``/``NonZero``):
  edgecrack's graphs have static per-image shapes and only a dynamic batch, so any such node is
  an exporter artefact that older parsers reject and newer ones turn into shape-tensor layers;
- opset <= 17 (the newest TensorRT 8.5/8.6 parses) and static H, W, C on the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: ONNX operators parsed by TensorRT 8.5, 8.6, 10.x and 11.x (ONNX-TensorRT support matrix),
#: restricted to those a convolutional classifier needs.
TENSORRT_OPS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "DequantizeLinear",
    "Div", "Dropout", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid", "Identity",
    "LeakyRelu", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mul", "Pad", "QuantizeLinear", "ReduceMax",
    "ReduceMean", "Relu", "Reshape", "Sigmoid", "Slice", "Softmax", "Split", "Squeeze", "Sub", "Sum", "Tanh",
    "Transpose", "Unsqueeze",
})
#: Operators that exist only in onnxruntime's integer (QOperator) quantization format.
ORT_ONLY_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
                          "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QGemm", "QLinearConcat"})
SHAPE_OPS = frozenset({"Shape", "ConstantOfShape", "Range", "NonZero", "Size"})
MAX_TENSORRT_OPSET = 17

_UINT8 = 2  # onnx.TensorProto.UINT8


@dataclass
class Finding:
    """One rule a graph breaks: where, what, what to do."""

    rule: str
    where: str
    message: str
    #: Concerns a graph input or output (the preprocessing contract), not a tensor inside the graph.
    contract: bool = False

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


@dataclass
class Readiness:
    """Result of :func:`tensorrt_readiness`.

    Attributes:
        ok: No rule is broken.
        findings: Every broken rule, one entry per offending node or tensor.
        ops: Operator histogram of the graph (for the report).
        opset: The default-domain opset.
    """

    ok: bool
    findings: list[Finding] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    opset: int = 0
    #: False for an onnxruntime CPU INT8 model: judged by its input/output contract only.
    tensorrt_input: bool = True

    def summary(self) -> str:
        nodes = f"opset {self.opset}, {sum(self.ops.values())} nodes"
        if not self.tensorrt_input:
            if self.ok:
                return (f"onnxruntime CPU INT8, not a TensorRT input: its contract holds (uint8 input cast first, "
                        f"static H, W, C; {nodes})")
            head = f"onnxruntime CPU INT8, contract broken: {len(self.findings)} problem(s)"
        elif self.ok:
            return f"TensorRT-ready ({nodes}, checked for TensorRT 8.5-11.x)"
        else:
            head = f"not TensorRT-ready: {len(self.findings)} problem(s)"
        return head + "".join(f"\n  - {f}" for f in self.findings[:12]) + (
            f"\n  ... and {len(self.findings) - 12} more" if len(self.findings) > 12 else "")


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _const_values(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    vals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def tensorrt_readiness(model) -> Readiness:
    """Check an ONNX model against the rules TensorRT's ONNX parser enforces (no GPU needed).

    Args:
        model: ``onnx.ModelProto`` (or a path / bytes, loaded here).

    Returns:
        A :class:`Readiness` listing every broken rule.
    """
    import onnx

    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    elif not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    g = model.graph
    findings: list[Finding] = []
    ops: dict[str, int] = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    opset = _opset(model)
    if opset > MAX_TENSORRT_OPSET:
        findings.append(Finding("opset", "model", f"opset {opset} is newer than TensorRT 8.5/8.6 parse "
                                f"(<= {MAX_TENSORRT_OPSET}); export with --opset {MAX_TENSORRT_OPSET}"))

    # dtypes of every tensor we can see: inputs, value_info after shape inference, initializers
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a model shape inference cannot handle is judged on declared types
        inferred = model
    dtype: dict[str, int] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dtype[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        dtype[init.name] = init.data_type
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            if i:
                consumers.setdefault(i, []).append(n)

    inits = {i.name for i in g.initializer}
    for vi in g.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims[1:]):
            findings.append(Finding("static-shape", f"input {vi.name}",
                                    "only the batch axis may be dynamic (H, W, C must be fixed numbers)",
                                    contract=True))

    inputs = {vi.name for vi in g.input if vi.name not in inits}
    for name, t in dtype.items():
        if t != _UINT8:
            continue
        for c in consumers.get(name, []):
            if c.op_type != "Cast":
                findings.append(Finding("uint8-cast", f"{c.op_type} node {c.name or '?'}",
                                        f"takes uint8 tensor {name!r}; TensorRT accepts uint8 only as the direct "
                                        "input of a Cast: cast first, then transpose/slice/normalise",
                                        contract=name in inputs))
        if name in {o.name for o in g.output}:
            findings.append(Finding("uint8-cast", f"output {name}", "graph outputs must not be uint8", contract=True))

    consts = _const_values(model)
    for n in g.node:
        where = f"{n.op_type} node {n.name or '?'}"
        if n.domain not in ("", "ai.onnx"):
            findings.append(Finding("domain", where, f"operator from domain {n.domain!r} is onnxruntime-only"))
            continue
        if n.op_type in ORT_ONLY_OPS:
            findings.append(Finding("ort-only-op", where, "integer (QOperator) quantization runs on onnxruntime only; "
                                    "TensorRT needs QuantizeLinear/DequantizeLinear (export --precision int8)"))
            continue
        if n.op_type in SHAPE_OPS:
            findings.append(Finding("shape-arithmetic", where, "shape arithmetic left in the graph; edgecrack graphs "
                                    "have static per-image shapes: fold it (export does) or fix the model code"))
            continue
        if n.op_type not in TENSORRT_OPS:
            findings.append(Finding("unsupported-op", where, "not in the operator set TensorRT 8.5-11.x parse"))
            continue
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = n.input[2] if len(n.input) > 2 and n.input[2] else None
            scale = consts.get(n.input[1]) if len(n.input) > 1 else None
            if scale is None:
                findings.append(Finding("qdq", where, "scale must be a constant"))
            if zp is None:
                if n.op_type == "QuantizeLinear":
                    findings.append(Finding("qdq", where, "QuantizeLinear without a zero point makes uint8; "
                                            "TensorRT needs int8 (zero point 0, type int8)"))
                continue
            zv = consts.get(zp)
            if zv is None:
                findings.append(Finding("qdq", where, "zero point must be a constant"))
            elif np.any(zv != 0):
                findings.append(Finding("qdq", where, "zero point must be 0 (TensorRT quantization is symmetric)"))
            elif zv.dtype != np.int8:
                findings.append(Finding("qdq", where, f"quantized type is {zv.dtype}, TensorRT needs int8"))
            if scale is not None and scale.size > 1 and n.op_type == "QuantizeLinear" and n.input[0] not in consts:
                findings.append(Finding("qdq", where, "per-channel scales are only for constant weights"))
        if n.op_type in ("Slice", "Squeeze", "Unsqueeze", "Reshape", "Pad") and len(n.input) > 1:
            for i in n.input[1:]:
                if i and i not in consts:
                    findings.append(Finding("shape-arithmetic", where, f"parameter {i!r} is computed at run time; "
                                            "it must be a constant"))
        if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] not in consts:
            src = next((p for p in g.node if n.input[1] in p.output), None)
            if not (src is not None and src.op_type == "DequantizeLinear" and src.input[0] in consts):
                findings.append(Finding("conv-weights", where, "Conv weights must be a constant (or DequantizeLinear "
                                        "of a constant)"))
    return Readiness(not findings, findings, ops, opset)


def fold_constants(model):
    """Evaluate every node whose inputs are all constants and replace it by an initializer.

    The TorchScript exporter writes a fixed ``ZeroPad2d`` as ConstantOfShape/Concat/Reshape/
    Slice/Transpose/Cast arithmetic on constants; TensorRT 8.x wants Pad's ``pads`` as an
    initializer. Folding here (onnx's reference evaluator, no runtime needed) leaves plain
    ``Pad -> Conv`` that every runtime fuses. Identity nodes are removed.

    Args:
        model: ``onnx.ModelProto``; modified in place and returned.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    graph_outputs = {o.name for o in g.output}
    opset = list(model.opset_import)
    keep = []
    rename: dict[str, str] = {}
    for n in g.node:
        ins = [rename.get(i, i) for i in n.input]
        del n.input[:]
        n.input.extend(ins)
        if n.op_type == "Identity" and n.output[0] not in graph_outputs:
            if ins[0] in consts:
                consts[n.output[0]] = consts[ins[0]]
            else:
                rename[n.output[0]] = ins[0]
            continue
        foldable = n.op_type == "Constant" or (n.domain in ("", "ai.onnx") and all((not i) or i in consts for i in ins)
                                                and n.op_type not in ("RandomNormal", "RandomUniform"))
        if foldable and not (set(n.output) & graph_outputs):
            sub = helper.make_model(
                helper.make_graph([n], "fold", [], [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                                                    for o in n.output],
                                  initializer=[numpy_helper.from_array(np.asarray(consts[i]), i) for i in ins if i]),
                opset_imports=opset)
            try:
                outs = ReferenceEvaluator(sub).run(None, {})
            except Exception:  # noqa: BLE001 - an op the evaluator lacks stays in the graph
                keep.append(n)
                continue
            for o, v in zip(n.output, outs):
                consts[o] = np.asarray(v)
            continue
        keep.append(n)
    used = {i for n in keep for i in n.input} | graph_outputs
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    for name, v in consts.items():
        if name in used:
            g.initializer.append(numpy_helper.from_array(np.asarray(v), name))
    # stale value_info of folded tensors confuses later shape inference
    live = {o for n in keep for o in n.output}
    vis = [vi for vi in g.value_info if vi.name in live]
    del g.value_info[:]
    g.value_info.extend(vis)
    return model


def readiness_of_models(model: str | Path) -> dict[Path, Readiness]:
    """:func:`tensorrt_readiness` of an ONNX file, or of every ``*.onnx`` of a run folder.

    An onnxruntime CPU INT8 model (manifest kind ``onnx-int8``) is never a TensorRT input: its
    integer operators and uint8 Q/DQ tensors are its point, so only its contract is checked: the
    uint8 graph input goes into a Cast, only the batch axis is dynamic, no output is uint8. A model
    without a readable sidecar is judged as a TensorRT input.

    Raises:
        ArtifactError: No ONNX model there, or a file onnx cannot read.
    """
    from ..errors import ArtifactError
    from ..manifest import read_manifest

    model = Path(model)
    paths = sorted(model.glob("*.onnx")) if model.is_dir() else [model]
    if not paths or not all(p.is_file() for p in paths):
        raise ArtifactError(f"no ONNX model at {model}", "pass a .onnx file or a run folder")
    results = {}
    for p in paths:
        try:
            r = tensorrt_readiness(p)
        except Exception as e:  # noqa: BLE001 - a file onnx cannot read is reported, not raised
            raise ArtifactError(f"{p} is not a readable ONNX model ({str(e).splitlines()[0][:160]})",
                                "re-export it: edgecrack export RUN") from None
        try:
            cpu_only = read_manifest(p).kind == "onnx-int8"
        except Exception:  # noqa: BLE001 - a model without a sidecar is judged as a TensorRT input
            cpu_only = False
        if cpu_only:
            r.findings = [f for f in r.findings if f.contract]
            r.ok, r.tensorrt_input = not r.findings, False
        results[p] = r
    return results

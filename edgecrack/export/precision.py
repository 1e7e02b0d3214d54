"""Explicit-precision ONNX artifacts for TensorRT, made and measured on a CPU.

TensorRT 11 builds only strongly typed networks: FP16 comes from an FP16 ONNX, INT8 from
explicit QuantizeLinear/DequantizeLinear nodes (10.x accepts both ways, 8.5/8.6 need the builder
flags). So the precision is decided here, once, where it can be measured, and the engine builder
only compiles it:

- ``model.fp16.onnx``: FP16 weights and compute after the input Cast; ``uint8`` input and
  ``float32`` probabilities unchanged. Budget: 0.5 accuracy points vs FP32.
- ``model.qdq.onnx``: TensorRT-style INT8: symmetric int8 activations (zero point 0), per-channel
  symmetric int8 weights, float biases, Q/DQ around every convolution (where TensorRT fuses
  them); in-graph preprocessing and the classifier head stay float. Budget: 1 accuracy point.

Both are evaluated through onnxruntime against FP32 on the run's held-out images (validation +
test split) with top-1 agreement reported. The Q/DQ model is evaluated in reference arithmetic
(Q/DQ executed as written, no fused integer kernels): that is what TensorRT computes (int8
products, 32-bit accumulation); onnxruntime's fused x86 kernels without VNNI saturate int16 pair
sums and would judge the artifact by a CPU quirk it never meets on a GPU (see :mod:`edgecrack.platform`).

Chosen over NVIDIA Model Optimizer (``nvidia-modelopt``): see docs/deploy-artifacts.md.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..artifacts import precision_onnx_path
from ..calibration import CalibrationSource, load_calibration
from ..compare import Fidelity, fidelity, probs_on
from ..errors import ArtifactError, BackendUnavailable, ConfigError
from ..io import atomic_write_bytes
from ..manifest import QDQ_TENSORRT, Manifest, write_manifest
from ..progress import Progress
from . import mixed
from .biascorrect import BiasCorrector
from .ortquant import BATCH, CalibrationReader, float_nodes, quiet_root_logger, search_scorer, session
from .run_images import calibration_for, eval_images_for, fp32_source, search_images_for

BUDGETS = {"fp16": 0.005, "int8": 0.01}
#: Most backbone units (of 13 in the default trunk, 18 in all of EfficientNet-Lite0) the Q/DQ search keeps
#: float. Float units cost GPU time that no CPU measurement shows (the CPU path judges its own by speed),
#: and the search's stopping point on 160 images moves by one image: uncapped, it stopped at the first 6
#: units of the default (43 % of the trunk's multiply-accumulates) for 99.2 % held-out agreement where 3
#: units (19 %) had given 100.0 % (``benchmarks/int8/int8.md`` as of commits 8704260 and ba2456d).
MAX_FLOAT_UNITS = 4


# -- FP16 ----------------------------------------------------------------------------------


def fp16_graph(model):
    """Rewrite an FP32 edgecrack graph to FP16 compute: the input Cast makes float16, every float
    initializer becomes float16, a final Cast returns float32 probabilities."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inp = g.input[0].name
    first = [n for n in g.node if inp in n.input]
    if len(first) != 1 or first[0].op_type != "Cast":
        raise ArtifactError("the FP32 graph does not start with a Cast of its uint8 input (exported by an older "
                            "edgecrack?)", "re-export it: edgecrack export RUN")
    for a in first[0].attribute:
        if a.name == "to":
            a.i = TensorProto.FLOAT16
    for i, init in enumerate(list(g.initializer)):
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init)
            if np.abs(arr).max(initial=0) > 65504:
                raise ArtifactError(f"weight {init.name} exceeds the FP16 range", "keep FP32 for this model")
            g.initializer[i].CopyFrom(numpy_helper.from_array(arr.astype(np.float16), init.name))
    out = g.output[0].name
    prod = next(n for n in g.node if out in n.output)
    prod.output[list(prod.output).index(out)] = out + "_fp16"
    g.node.append(helper.make_node("Cast", [out + "_fp16"], [out], name="/output/CastToFloat", to=TensorProto.FLOAT))
    del g.value_info[:]
    onnx.checker.check_model(model)
    return model


# -- the builder ---------------------------------------------------------------------------


@dataclass
class PrecisionResult:
    path: Path
    manifest: Manifest
    fidelity: Fidelity
    eval_images: str
    calibration: str | None
    seconds: float


def precision_onnx_from_onnx(onnx_path: str | Path, precision: str, out_path: str | Path | None = None,
                             calib: str | Path | None = None, eval_data: str | Path | None = None,
                             budget: float | None = None, threads: int | None = None,
                             progress: Progress | None = None, min_agreement: float = 0.99,
                             max_float: int = MAX_FLOAT_UNITS, bias_correction: bool = True) -> PrecisionResult:
    """Write ``model.fp16.onnx`` or the TensorRT Q/DQ ``model.qdq.onnx`` from an FP32 edgecrack ONNX.

    Args:
        onnx_path: FP32 ``model.onnx`` with its manifest (in its run folder for the defaults).
        precision: ``fp16`` or ``int8``.
        out_path: Destination (default ``model.fp16.onnx`` / ``model.qdq.onnx``).
        calib: Calibration folder (INT8; default: draw from the run's training split).
        eval_data: Labelled folder (default: the run's validation + test split).
        budget: Largest accuracy drop vs FP32 as a fraction (default 0.005 FP16, 0.01 INT8).
        threads: onnxruntime threads.
        progress: ``(phase, done, total)`` callback.
        min_agreement: INT8: smallest top-1 agreement with FP32 on the held-out images; also the
            target of the mixed-precision search on training images outside the calibration set.
        max_float: INT8: most backbone units kept float by that search (0: all INT8).
        bias_correction: INT8: shift the convolutions' biases so each channel's mean on the
            calibration images matches FP32 (:mod:`edgecrack.export.biascorrect`).

    Raises:
        ArtifactError: Over budget (nothing written) or not an FP32 edgecrack ONNX.
        DatasetError: No calibration / evaluation images.
    """
    import onnx

    from .graph import tensorrt_readiness

    if precision not in BUDGETS:
        raise ConfigError(f"--precision {precision!r} is not an ONNX precision", "use fp16 or int8 (fp32 is model.onnx)")
    onnx_path = Path(onnx_path)
    m = fp32_source(onnx_path)
    budget = BUDGETS[precision] if budget is None else budget
    say = progress or (lambda *_: None)
    t0 = time.perf_counter()
    src = onnx_path.read_bytes()
    calib_src = calibration_for(onnx_path, calib) if precision == "int8" else (
        load_calibration(calib) if calib else CalibrationSource(onnx_path.parent, [], [], "", {}))
    where, x, y = eval_images_for(onnx_path, eval_data, m, calib_src)
    say("FP32 reference", 0, 1)
    p0 = probs_on(session(src, threads), x, BATCH, m.input_name)
    say("FP32 reference", 1, 1)
    extra: dict = {"precision": precision}
    mixed_record: dict = {}
    if precision == "fp16":
        say("converting to FP16", 0, 1)
        model = fp16_graph(onnx.load_from_string(src))
        blob = model.SerializeToString()
        p = probs_on(session(blob, threads), x, BATCH, m.input_name)
        extra["format"] = "fp16"
    else:
        blob, mixed_record = _qdq_blob(onnx_path, calib_src, m, say, min_agreement, max_float, threads,
                                       bias_correction)
        p = probs_on(session(blob, threads, reference=True), x, BATCH, m.input_name)
        extra.update({"format": QDQ_TENSORRT, "activations": "int8 symmetric per-tensor",
                      "weights": "int8 symmetric per-channel", "bias": "float",
                      "evaluated_as": "onnxruntime reference arithmetic (Q/DQ as written, no fused kernels)",
                      "calibration_hash": calib_src.hash, "calibration_images": len(calib_src),
                      "calibration_set": str(calib_src.meta.get("source") or calib_src.root),
                      "calibrate_method": "minmax (moving average)",
                      "bias_correction": mixed_record.pop("bias_correction"), "mixed_precision": mixed_record})
    fid = fidelity(p, p0, y, m)
    ready = tensorrt_readiness(blob)
    if not ready.ok:
        raise ArtifactError(f"the {precision} graph is not TensorRT-ready: {ready.summary()}", "please report this bug")
    if fid.fp32_accuracy - fid.accuracy > budget + 1e-9:
        raise ArtifactError(f"{precision.upper()} loses {-fid.accuracy_delta_points:.1f} accuracy points vs FP32 "
                            f"({fid.accuracy:.3f} vs {fid.fp32_accuracy:.3f}, top-1 agreement "
                            f"{fid.top1_agreement * 100:.1f} %, on {where}); budget {budget * 100:.1f}: nothing written",
                            "keep FP32 (model.onnx), or pass a larger --calib set for INT8")
    if fid.top1_agreement < min_agreement - 1e-9:
        floats = f", {len(mixed_record['float_units'])} backbone units kept float" if precision == "int8" else ""
        raise ArtifactError(f"{precision.upper()} agrees with FP32 on {fid.top1_agreement * 100:.1f} % of {where} "
                            f"(needed {min_agreement * 100:.0f} %{floats}; accuracy {fid.accuracy:.3f} vs "
                            f"{fid.fp32_accuracy:.3f}): nothing written",
                            "keep FP32/FP16 on this model, or allow more float units (--max-float-units)")
    onnx_sha = hashlib.sha256(src).hexdigest()
    extra.update({"onnx_sha256": onnx_sha, "fidelity_vs_fp32": asdict(fid), "budget_points": budget * 100,
                  "eval": where, "tensorrt_ready": True})
    import onnxruntime as ort

    om = m.with_kind("onnx", extra=dict(m.extra, **extra), versions=dict(m.versions, onnx=onnx.__version__,
                                                                         onnxruntime=ort.__version__), parent=onnx_sha)
    from .onnx import attach_manifest

    final = attach_manifest(blob, om)
    out = Path(out_path) if out_path else precision_onnx_path(onnx_path, precision)
    atomic_write_bytes(out, final)
    write_manifest(out, om)
    return PrecisionResult(out, om, fid, where, calib_src.describe() if precision == "int8" else None,
                           time.perf_counter() - t0)


#: Ops the TensorRT Q/DQ graph quantizes (Clip with its convolution: see :func:`_qdq_blob`).
TENSORRT_QDQ_OPS = ["Conv", "Add", "Clip"]


def tensorrt_qdq_settings() -> dict:
    """``quantize_static`` options of the TensorRT explicit-quantization graph: symmetric int8
    activations and per-channel weights (zero points 0), float biases, min/max ranges averaged over
    calibration batches. Shared with ``benchmarks/bench_int8_sources.py``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    return dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                per_channel=True, reduce_range=False, op_types_to_quantize=TENSORRT_QDQ_OPS,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                               "CalibMovingAverage": True})


def _qdq_blob(onnx_path: Path, calib: CalibrationSource, m: Manifest, say: Progress, target: float,
              max_float: int, threads: int | None, bias_correction: bool = True) -> tuple[bytes, dict]:
    """Symmetric int8 Q/DQ graph (TensorRT explicit quantization) calibrated on ``calib``.

    ``Clip`` (ReLU6) is in the quantized op set so a convolution's output is quantized with the
    clipped [0, 6] range rather than its raw pre-activation range (-30..40 on this backbone).
    Each candidate's convolution biases are then corrected against FP32 on the calibration images
    (:mod:`edgecrack.export.biascorrect`). The most sensitive backbone units stay float until the
    decisions on the search images (:func:`~edgecrack.export.run_images.search_images_for`) agree
    with FP32's (:mod:`edgecrack.export.mixed`).

    Returns:
        (model bytes, the mixed-precision record for the manifest)
    """
    try:
        import onnx
        from onnxruntime.quantization import quantize_static
    except ImportError as e:
        raise BackendUnavailable(f"INT8 Q/DQ export needs the onnx package ({e.name} is missing)",
                                 "pip install 'edgecrack[quant]'") from None
    base = onnx.load(str(onnx_path))
    keep = [p for p in base.metadata_props if not p.key.startswith("edgecrack")]
    del base.metadata_props[:]
    base.metadata_props.extend(keep)
    always_float = float_nodes(base)
    quantizable = [n.name for n in base.graph.node if n.op_type in TENSORRT_QDQ_OPS and n.name not in set(always_float)]
    x = search_images_for(onnx_path, calib, m)
    p0 = probs_on(session(onnx_path.read_bytes(), threads), x, BATCH, m.input_name)
    with tempfile.TemporaryDirectory(prefix="edgecrack-qdq-") as tmp:
        pre, out, cache = Path(tmp) / "pre.onnx", Path(tmp) / "qdq.onnx", Path(tmp) / "ranges.json"
        onnx.save(base, str(pre))
        say(f"calibrating on {len(calib)} images", 0, 1)

        def quantize(extra_float: set[str]) -> bytes:
            # The first call calibrates and caches the ranges; the search's calls reuse them.
            first = not cache.is_file()
            with quiet_root_logger():
                quantize_static(str(pre), str(out), None if cache.is_file() else CalibrationReader(calib, m),
                                nodes_to_exclude=always_float + sorted(extra_float),
                                calibration_cache_path=str(cache), **tensorrt_qdq_settings())
            if first:
                say(f"calibrating on {len(calib)} images", 1, 1)
            return out.read_bytes()

        fix = BiasCorrector(pre.read_bytes(), calib, m, threads) if bias_correction else None
        found = mixed.search(mixed.backbone_units(base, quantizable), quantize,
                             search_scorer(x, p0, m, threads, reference=True), target, max_float, say, fix)
        return found.blob, dict(found.record(), search_images=int(len(x)),
                                bias_correction=fix.record_of(found.blob) if fix else None)

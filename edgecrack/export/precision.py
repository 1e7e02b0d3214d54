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
from typing import Callable

import numpy as np

from ..calibration import CalibrationSource, calibration_hash, load_calibration
from ..errors import ArtifactError, BackendUnavailable, ConfigError, DatasetError
from ..io import atomic_write_bytes
from ..manifest import Manifest, read_manifest, write_manifest

Progress = Callable[[str, int, int], None]
BUDGETS = {"fp16": 0.005, "int8": 0.01}
CALIBRATION_IMAGES = 64
#: Training images (outside the calibration set) the mixed-precision search is scored on.
SEARCH_IMAGES = 160
#: Most backbone units (of 18 in EfficientNet-Lite0) the INT8 search keeps float.
MAX_FLOAT_UNITS = 8


# -- the run's own images ------------------------------------------------------------------


def calibration_for(onnx_path: Path, calib: str | Path | None, n: int = CALIBRATION_IMAGES, seed: int = 0
                    ) -> CalibrationSource:
    """The calibration set: ``calib`` when given, else a seeded stratified draw from the run's training split.

    Raises:
        DatasetError: No ``--calib`` and no recorded splits next to the model.
    """
    if calib is not None:
        return load_calibration(calib)
    from ..splits import run_dir_of, run_split, stratified_draw, verified

    run = run_dir_of(onnx_path)
    if run is None:
        raise DatasetError(f"no calibration images for {onnx_path}: it is not in a run folder with splits.json",
                           "pass --calib FOLDER (edgecrack calibration build --source YOUR_DATA --out FOLDER)")
    picked = verified(stratified_draw(run_split(run, "train"), n, seed), "training")
    if len(picked) < 8:
        raise DatasetError(f"only {len(picked)} training images of {run} are available for calibration",
                           "pass --calib FOLDER with at least 32 images")
    return CalibrationSource(run, [p for p, _, _ in picked], [lab for _, lab, _ in picked],
                             calibration_hash([sha for _, _, sha in picked]),
                             {"source": f"{run} training split", "seed": seed, "n": len(picked)})


def search_images_for(onnx_path: Path, calib: CalibrationSource, m: Manifest, n: int = SEARCH_IMAGES) -> np.ndarray:
    """Images the mixed-precision search scores models on: training images that did not set the
    ranges (a seeded stratified draw), else the calibration images when the model has no run.

    Scored on the calibration images themselves, one float unit "reached" 100 % agreement on the
    224 px default where the held-out images then gave 95.8 %: ranges fitted to a set flatter it.
    """
    from ..preprocess import decode_image, preprocess
    from ..splits import run_dir_of, run_split, stratified_draw, verified

    run = run_dir_of(onnx_path)
    if run is not None:
        from ..data import content_hash

        cal = {content_hash(p) for p in calib.paths}
        rest = [it for it in run_split(run, "train") if it[2] not in cal]
        picked = verified(stratified_draw(rest, n, seed=1), "training") if len(rest) >= 32 else []
        if picked:
            return preprocess([decode_image(p) for p, _, _ in picked], m.input)
    return np.concatenate(list(calib.batches(m.input, 32)))


def eval_images_for(onnx_path: Path, eval_data: str | Path | None, manifest: Manifest, calib: CalibrationSource
                    ) -> tuple[str, np.ndarray, np.ndarray]:
    """Labelled held-out images for the accuracy check, preprocessed by the inference function.

    ``eval_data`` when given (minus any calibration image), else the run's validation + test split.

    Returns:
        (description, ``uint8 [N,H,W,3]``, label indices)
    """
    from ..data import content_hash, discover
    from ..errors import ImageDecodeError
    from ..preprocess import decode_image, preprocess

    if eval_data is not None:
        ds = discover(Path(eval_data), "folder", min_classes=1)
        items = [(s.path, s.label, content_hash(s.path)) for s in ds.samples]
        where = str(eval_data)
    else:
        from ..splits import run_dir_of, run_split, verified

        run = run_dir_of(onnx_path)
        if run is None:
            raise DatasetError(f"no held-out images for {onnx_path}: it is not in a run folder with splits.json",
                               "pass --eval-data FOLDER (labelled class folders)")
        items = verified(run_split(run, "validation", "test"), "held-out")  # sha1 checked there, once
        where = f"{run} validation + test split"
    calib_hashes = {content_hash(p) for p in calib.paths}
    keep = [(p, lab) for p, lab, sha in items if lab in manifest.labels and sha not in calib_hashes]
    if len(keep) < 20:
        raise DatasetError(f"only {len(keep)} labelled held-out images ({where}) outside the calibration set; the "
                           "accuracy check needs at least 20", "pass --eval-data with a larger labelled folder")
    imgs, ys = [], []
    for p, lab in keep:
        try:
            imgs.append(decode_image(p))
            ys.append(manifest.labels.index(lab))
        except ImageDecodeError:
            continue
    return f"{len(ys)} images, {where}", preprocess(imgs, manifest.input), np.array(ys)


# -- fidelity ------------------------------------------------------------------------------


@dataclass
class Fidelity:
    """A model's decisions against FP32's on the same held-out images."""

    accuracy: float
    fp32_accuracy: float
    accuracy_delta_points: float
    top1_agreement: float
    decision_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    n: int


def decisions(probs: np.ndarray, m: Manifest) -> np.ndarray:
    from ..loop.postprocess import predict_labels

    return predict_labels(probs, m.positive_index, m.threshold)


def fidelity(p: np.ndarray, p0: np.ndarray, y: np.ndarray, m: Manifest) -> Fidelity:
    d, d0 = decisions(p, m), decisions(p0, m)
    acc, acc0 = float((d == y).mean()), float((d0 == y).mean())
    return Fidelity(acc, acc0, round((acc - acc0) * 100, 3), float((p.argmax(1) == p0.argmax(1)).mean()),
                    float((d == d0).mean()), float(np.abs(p - p0).max()), float(np.abs(p - p0).mean()), int(len(y)))


def session(model: bytes | Path, threads: int | None = None, reference: bool = False):
    """onnxruntime CPU session; ``reference`` runs Q/DQ as written (no fused integer kernels)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if reference
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if threads:
        so.intra_op_num_threads = threads
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def probs_of(sess, x: np.ndarray, input_name: str, batch: int = 32) -> np.ndarray:
    return np.concatenate([sess.run(None, {input_name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


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


def default_precision_path(onnx_path: str | Path, precision: str) -> Path:
    """``model.onnx`` -> ``model.fp16.onnx`` (fp16) / ``model.qdq.onnx`` (int8), from any sibling."""
    from ..artifacts import precision_onnx_path

    return precision_onnx_path(onnx_path, precision)


def fp32_sibling(onnx_path: str | Path) -> Path:
    """The FP32 model a precision variant sits next to: ``model.qdq.onnx`` -> ``model.onnx``."""
    from ..artifacts import fp32_sibling as sibling

    return sibling(onnx_path)


def precision_onnx_from_onnx(onnx_path: str | Path, precision: str, out_path: str | Path | None = None,
                             calib: str | Path | None = None, eval_data: str | Path | None = None,
                             budget: float | None = None, threads: int | None = None,
                             progress: Progress | None = None, min_agreement: float = 0.99,
                             max_float: int = MAX_FLOAT_UNITS) -> PrecisionResult:
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
            target of the mixed-precision search on the calibration images.
        max_float: INT8: most backbone units kept float by that search (0: all INT8).

    Raises:
        ArtifactError: Over budget (nothing written) or not an FP32 edgecrack ONNX.
        DatasetError: No calibration / evaluation images.
    """
    import onnx

    from .graph import tensorrt_readiness

    if precision not in BUDGETS:
        raise ConfigError(f"--precision {precision!r} is not an ONNX precision", "use fp16 or int8 (fp32 is model.onnx)")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ArtifactError(f"ONNX model not found: {onnx_path}", "export it first: edgecrack export RUN")
    m = read_manifest(onnx_path)
    if m.kind != "onnx" or m.extra.get("precision", "fp32") != "fp32":
        raise ConfigError(f"{onnx_path} is not an FP32 edgecrack ONNX model", "pass the run's model.onnx")
    budget = BUDGETS[precision] if budget is None else budget
    say = progress or (lambda *_: None)
    t0 = time.perf_counter()
    src = onnx_path.read_bytes()
    calib_src = calibration_for(onnx_path, calib) if precision == "int8" else (
        load_calibration(calib) if calib else CalibrationSource(onnx_path.parent, [], [], "", {}))
    where, x, y = eval_images_for(onnx_path, eval_data, m, calib_src)
    say("FP32 reference", 0, 1)
    p0 = probs_of(session(src, threads), x, m.input_name)
    say("FP32 reference", 1, 1)
    extra: dict = {"precision": precision}
    mixed_record: dict = {}
    if precision == "fp16":
        say("converting to FP16", 0, 1)
        model = fp16_graph(onnx.load_from_string(src))
        blob = model.SerializeToString()
        p = probs_of(session(blob, threads), x, m.input_name)
        extra["format"] = "fp16"
    else:
        blob, mixed_record = _qdq_blob(onnx_path, calib_src, m, say, min_agreement, max_float, threads)
        p = probs_of(session(blob, threads, reference=True), x, m.input_name)
        extra.update({"format": "qdq-tensorrt", "activations": "int8 symmetric per-tensor",
                      "weights": "int8 symmetric per-channel", "bias": "float",
                      "evaluated_as": "onnxruntime reference arithmetic (Q/DQ as written, no fused kernels)",
                      "calibration_hash": calib_src.hash, "calibration_images": len(calib_src),
                      "calibration_set": str(calib_src.meta.get("source") or calib_src.root),
                      "calibrate_method": "minmax (moving average)", "mixed_precision": mixed_record})
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
    out = Path(out_path) if out_path else default_precision_path(onnx_path, precision)
    atomic_write_bytes(out, final)
    write_manifest(out, om)
    return PrecisionResult(out, om, fid, where, calib_src.describe() if precision == "int8" else None,
                           time.perf_counter() - t0)


def _qdq_blob(onnx_path: Path, calib: CalibrationSource, m: Manifest, say: Progress, target: float,
              max_float: int, threads: int | None) -> tuple[bytes, dict]:
    """Symmetric int8 Q/DQ graph (TensorRT explicit quantization) calibrated on ``calib``.

    ``Clip`` (ReLU6) is in the quantized op set so a convolution's output is quantized with the
    clipped [0, 6] range rather than its raw pre-activation range (-30..40 on this backbone):
    measured on the 224 px default, top-1 agreement 85.8 % -> 93.3 % on 120 held-out images.
    The most sensitive backbone units stay float until the decisions on the calibration images
    agree with FP32's (:mod:`edgecrack.export.mixed`).

    Returns:
        (model bytes, the mixed-precision record for the manifest)
    """
    try:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as e:
        raise BackendUnavailable(f"INT8 Q/DQ export needs the onnx package ({e.name} is missing)",
                                 "pip install 'edgecrack[quant]'") from None
    from . import mixed
    from .quantize import _quiet_root_logger, float_nodes

    ops = ["Conv", "Add", "Clip"]
    base = onnx.load(str(onnx_path))
    keep = [p for p in base.metadata_props if not p.key.startswith("edgecrack")]
    del base.metadata_props[:]
    base.metadata_props.extend(keep)
    always_float = float_nodes(base)
    quantizable = [n.name for n in base.graph.node if n.op_type in ops and n.name not in set(always_float)]
    x_cal = np.concatenate(list(calib.batches(m.input, 32)))
    x = search_images_for(onnx_path, calib, m)
    p0 = probs_of(session(onnx_path.read_bytes(), threads), x, m.input_name)
    with tempfile.TemporaryDirectory(prefix="edgecrack-qdq-") as tmp:
        pre, out, cache = Path(tmp) / "pre.onnx", Path(tmp) / "qdq.onnx", Path(tmp) / "ranges.json"
        onnx.save(base, str(pre))
        say(f"calibrating on {len(calib)} images", 0, 1)

        class _Reader:
            def __init__(self):
                self._it = iter([x_cal[i:i + 8] for i in range(0, len(x_cal), 8)])

            def get_next(self):
                b = next(self._it, None)
                return None if b is None else {m.input_name: b}

        def quantize(extra_float: set[str]) -> bytes:
            # The first call calibrates and caches the ranges; the search's calls reuse them.
            with _quiet_root_logger():
                quantize_static(str(pre), str(out), None if cache.is_file() else _Reader(),
                                quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
                                nodes_to_exclude=always_float + sorted(extra_float), op_types_to_quantize=ops,
                                calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
                                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                               "QuantizeBias": False, "CalibMovingAverage": True})
            return out.read_bytes()

        def agreement(blob: bytes) -> mixed.Score:
            p = probs_of(session(blob, threads, reference=True), x, m.input_name)
            return mixed.Score(float((p.argmax(1) == p0.argmax(1)).mean()), mixed.logit_shift(p, p0, m.positive_index))

        found = mixed.search(mixed.backbone_units(base, quantizable), quantize, agreement, target, max_float, say)
        say(f"calibrating on {len(calib)} images", 1, 1)
        return found.blob, found.record()

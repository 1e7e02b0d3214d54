"""onnxruntime static INT8 (``edgecrack build-engine --precision int8 --target cpu``).

INT8 is a trade, not a free win: depending on the CPU (VNNI/AMX or not) and the format,
a quantized EfficientNet-Lite0 is several times faster or several times *slower* than FP32.
So this module measures instead of assuming: it quantizes the model in each candidate format
with the same calibration images, measures latency (batch 1 and 8, in blocks alternating with
FP32's so both see the same load) and accuracy against FP32 on labelled held-out images, keeps
the fastest format within the accuracy budget, and records every candidate's numbers in the INT8
manifest.

An INT8 model is written only when it is within the accuracy budget, agrees with FP32 on at
least ``min_agreement`` of the held-out images (top-1) *and* runs at least ``min_speedup`` times
faster than FP32 at the selected batch on this machine; otherwise nothing is written and the
error carries every measured number. Weights are quantized to 7 bits on x86 without VNNI
(:mod:`edgecrack.platform` says why). Calibration and the checks default to the run's own images
(:mod:`edgecrack.splits`).

The graph input is ``uint8 NHWC BGR`` followed by the preprocessing ops (Cast, Transpose,
channel Gather, Mul/Add normalisation). Those are excluded from quantization: quantizing them
would re-quantize already 8-bit pixels and put the mean/std arithmetic in int8. Calibration data
comes from :mod:`edgecrack.calibration`, through the inference preprocessing.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..compare import Agreement, compare_probs, probs_on
from ..errors import ArtifactError, BackendUnavailable, ConfigError
from ..io import atomic_write_bytes
from ..manifest import Manifest, write_manifest
from ..progress import Progress
from . import mixed
from .biascorrect import BiasCorrector
from .ortquant import BATCH, CalibrationReader, float_nodes, quiet_root_logger, search_scorer, session
from .run_images import calibration_for, eval_images_for, fp32_source, search_images_for

#: Candidate formats: name -> (QuantFormat, activation type, weight type).
QUANT_FORMATS = {
    "qdq-u8s8": ("QDQ", "QUInt8", "QInt8"),
    "qop-u8s8": ("QOperator", "QUInt8", "QInt8"),
    "qdq-s8s8": ("QDQ", "QInt8", "QInt8"),
    "qop-u8u8": ("QOperator", "QUInt8", "QUInt8"),
}
DEFAULT_FORMATS = ("qdq-u8s8", "qop-u8s8", "qdq-s8s8")
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
#: Alternating FP32/INT8 timing blocks per speed-up measurement (:func:`paired_latency_ms`). With
#: :attr:`QuantizeConfig.latency_runs` calls a side, eight estimates in a row spread about as little as
#: with a measurement five times longer (``benchmarks/int8/int8.md``, the gate's own spread).
ROUNDS = 4



@dataclass
class QuantizeConfig:
    """Options of ``build-engine --target cpu --precision int8``.

    Attributes:
        calib: Calibration set folder (None: a seeded stratified draw of 64 images from the
            run's training split).
        formats: Candidate formats (keys of :data:`QUANT_FORMATS`), all measured.
        eval_data: Labelled folder for the accuracy check (None: the run's validation + test
            split), minus the calibration images.
        accuracy_budget: Largest allowed accuracy drop vs FP32, as a fraction (0.01 = 1 point).
        per_channel: Per-channel weight scales (needed by depthwise convolutions).
        calibrate_method: ``minmax``, ``entropy`` or ``percentile``.
        moving_average: MinMax ranges as a moving average over calibration batches instead of
            the absolute extremes (measured on the bundled deck sample: the plain min/max ranges
            cost 1.2 accuracy points vs FP32, the moving average +0.3).
        min_agreement: Smallest accepted top-1 agreement with FP32 on the held-out images.
        min_speedup: Smallest accepted speed-up over FP32 at ``select_batch`` (an INT8 model
            that is not faster is not a win).
        reduce_range: 7-bit weights: ``auto`` (on x86 without VNNI), ``on`` or ``off``.
        threads: onnxruntime intra-op threads for the measurements (None: all cores).
        latency_runs: Timed runs per batch size (median reported).
        select_batch: Batch size whose latency decides the winner (1: camera loop, 8: batch jobs).
        max_float_units: When every format is fast enough but disagrees with FP32, the most
            backbone units the mixed-precision search may keep float in the fastest (0: off).
        bias_correction: Shift the convolutions' biases of the QDQ formats so each channel's mean
            on the calibration images matches FP32 (:mod:`edgecrack.export.biascorrect`).
    """

    calib: str | None = None
    formats: tuple[str, ...] = DEFAULT_FORMATS
    eval_data: str | None = None
    accuracy_budget: float = 0.01
    min_agreement: float = 0.99
    min_speedup: float = 1.2
    reduce_range: str = "auto"
    per_channel: bool = True
    calibrate_method: str = "minmax"
    moving_average: bool = True
    threads: int | None = None
    latency_runs: int = 20
    select_batch: int = 1
    max_float_units: int = 8
    bias_correction: bool = True


@dataclass
class Candidate:
    """Measured result of one model (FP32 reference or an INT8 format)."""

    name: str
    accuracy: float
    latency_ms: dict[str, float]
    accuracy_delta_points: float = 0.0
    top1_agreement: float = 1.0
    decision_agreement: float = 1.0
    max_abs_diff: float = 0.0
    mean_abs_diff: float = 0.0
    quantize_seconds: float = 0.0
    size_bytes: int = 0
    within_budget: bool = True
    verdict: str = ""
    fp32_latency_ms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def measured(cls, name: str, vs_fp32: Agreement, latency_ms: dict[str, float], **kw) -> "Candidate":
        """A candidate from its agreement with FP32 on the labelled held-out images (:mod:`edgecrack.compare`)."""
        return cls(name, vs_fp32.accuracy, latency_ms, accuracy_delta_points=vs_fp32.accuracy_delta_points,
                   top1_agreement=vs_fp32.top1_agreement, decision_agreement=vs_fp32.decision_agreement,
                   max_abs_diff=vs_fp32.max_abs_diff, mean_abs_diff=vs_fp32.mean_abs_diff, **kw)

    def speedup(self, ref: "Candidate", batch: int) -> float:
        """FP32 latency over this candidate's, both timed in the same alternating blocks where
        measured so (``fp32_latency_ms``), else against ``ref``'s own measurement."""
        b = str(batch)
        return self.fp32_latency_ms.get(b, ref.latency_ms[b]) / self.latency_ms[b]


@dataclass
class QuantizeResult:
    path: Path
    manifest: Manifest
    chosen: Candidate
    fp32: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    eval_images: int = 0
    calibration: str = ""


def default_int8_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` (:func:`edgecrack.artifacts.cpu_int8_path`)."""
    from ..artifacts import cpu_int8_path

    return cpu_int8_path(onnx_path)


def _validate(cfg: QuantizeConfig) -> None:
    bad = [f for f in cfg.formats if f not in QUANT_FORMATS]
    if bad or not cfg.formats:
        raise ConfigError(f"unknown INT8 format(s) {bad or '(none given)'}", f"choose from: {', '.join(QUANT_FORMATS)}")
    if cfg.calibrate_method not in CALIBRATE_METHODS:
        raise ConfigError(f"unknown calibration method {cfg.calibrate_method!r}", f"choose from: {', '.join(CALIBRATE_METHODS)}")
    if not 0 <= cfg.accuracy_budget < 1:
        raise ConfigError(f"--accuracy-budget must be a fraction in [0, 1), got {cfg.accuracy_budget}",
                          "e.g. 0.01 for one accuracy point")
    if cfg.reduce_range not in ("auto", "on", "off"):
        raise ConfigError(f"--reduce-range must be auto, on or off, got {cfg.reduce_range!r}")
    if not 0 < cfg.min_agreement <= 1 or cfg.min_speedup <= 0:
        raise ConfigError("--min-agreement must be in (0, 1] and --min-speedup positive")
    if cfg.select_batch not in (1, 8):
        raise ConfigError(f"--select-batch must be 1 or 8, got {cfg.select_batch}")


def _runs(batch: int, runs: int) -> int:
    return max(3, runs if batch == 1 else runs // 4)


def _latency_ms(sess, x: np.ndarray, input_name: str, batch: int, runs: int) -> float:
    """Median wall time of one ``sess`` call on the first ``batch`` images, after 3 warm-up calls."""
    from ..bench.timing import LoopBudget, timed_loop

    feeds = {input_name: np.ascontiguousarray(x[:batch])}
    samples, _, _ = timed_loop(lambda _k: sess.run(None, feeds), LoopBudget(warmup=3, iterations=_runs(batch, runs)))
    return float(np.median(samples))


def paired_latency_ms(ref, sess, x: np.ndarray, input_name: str, batch: int, runs: int,
                      rounds: int = ROUNDS) -> tuple[float, float]:
    """Median latency of ``ref`` (FP32) and ``sess`` at ``batch``, timed in ``rounds`` alternating
    blocks each (:func:`edgecrack.bench.timing.interleaved`). On a shared or throttling host the load
    drifts between one measurement and the next by more than INT8 and FP32 differ; blocks that
    alternate see the same machine."""
    from ..bench.timing import LoopBudget, interleaved

    feeds = {input_name: np.ascontiguousarray(x[:batch])}
    n = _runs(batch, runs)
    stats, _ = interleaved({"fp32": lambda: ref.run(None, feeds), "other": lambda: sess.run(None, feeds)},
                           LoopBudget(warmup=3, iterations=n), block=max(1, n // rounds))
    return stats["fp32"].p50_ms, stats["other"].p50_ms


def _measure(sess, x: np.ndarray, input_name: str, runs: int, ref=None) -> tuple[np.ndarray, dict, dict]:
    """Probabilities on ``x`` and batch-1 and batch-8 latency; with ``ref`` (the FP32 session), both
    sides timed in alternating blocks (:func:`paired_latency_ms`), whose FP32 times come third."""
    probs = probs_on(sess, x, BATCH, input_name)
    lat, ref_lat = {}, {}
    for b in (1, 8):
        if ref is None:
            lat[str(b)] = _latency_ms(sess, x, input_name, b, runs)
        else:
            ref_lat[str(b)], lat[str(b)] = paired_latency_ms(ref, sess, x, input_name, b, runs)
    return probs, lat, ref_lat


def int8_from_onnx(onnx_path: str | Path, out_path: str | Path | None = None, config: QuantizeConfig | None = None,
                   progress: Progress | None = None) -> QuantizeResult:
    """Quantize an FP32 edgecrack ONNX model to onnxruntime static INT8, choosing the format by measurement.

    Args:
        onnx_path: FP32 ``model.onnx`` with its manifest.
        out_path: Destination (default ``model.int8.onnx`` next to the input).
        config: Formats, calibration set, evaluation data, accuracy budget.
        progress: ``(phase, done, total)`` callback.

    Returns:
        The written model, its manifest (kind ``onnx-int8``) and every candidate's measurements.

    Raises:
        ConfigError: Invalid options, or not an FP32 edgecrack ONNX model.
        DatasetError: Calibration or evaluation images missing.
        ArtifactError: No format stays within the accuracy budget (nothing is written).
        BackendUnavailable: The ``onnx`` package (quant extra) is missing.
    """
    cfg = config or QuantizeConfig()
    _validate(cfg)
    onnx_path = Path(onnx_path)
    manifest = fp32_source(onnx_path)
    try:
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationMethod
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise BackendUnavailable(f"onnxruntime INT8 needs the onnx package ({e.name} is missing)",
                                 "pip install 'edgecrack[quant]'") from None
    from ..platform import cpu_name, int8_isa

    say = progress or (lambda *_: None)
    isa = int8_isa()
    reduce_range = isa.reduce_range if cfg.reduce_range == "auto" else cfg.reduce_range == "on"
    calib = calibration_for(onnx_path, cfg.calib)
    root, x_eval, y_eval = eval_images_for(onnx_path, cfg.eval_data, manifest, calib)
    fp32_bytes = onnx_path.read_bytes()
    fp32_sha = hashlib.sha256(fp32_bytes).hexdigest()

    say("measuring FP32", 0, 1)
    sess0 = session(fp32_bytes, cfg.threads)
    p0, lat0, _ = _measure(sess0, x_eval, manifest.input_name, cfg.latency_runs)

    def vs_fp32(p: np.ndarray) -> Agreement:
        return compare_probs(p, p0, y_eval, manifest.positive_index, manifest.threshold)

    acc0 = vs_fp32(p0).accuracy
    fp32 = Candidate("fp32", acc0, lat0, size_bytes=len(fp32_bytes))
    say("measuring FP32", 1, 1)

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.calibrate_method]
    extra_options = {"CalibMovingAverage": True} if cfg.moving_average and cfg.calibrate_method == "minmax" else {}
    results: list[Candidate] = []
    blobs: dict[str, bytes] = {}
    mixed_records: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edgecrack-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        say("shape inference and graph optimisation", 0, 1)
        # Symbolic shape inference + ORT graph optimisation fold the exporter's dynamic Pad
        # arithmetic into constants, which the quantizer needs to see plain Conv chains.
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=False)
        base = onnx.load(str(pre))
        # Drop the FP32 manifest (the INT8 one is attached at the end) but keep the
        # quantizer's own "pre-processed" marker.
        keep = [(p.key, p.value) for p in base.metadata_props if not p.key.startswith("edgecrack.")]
        del base.metadata_props[:]
        for k, v in keep:
            prop = base.metadata_props.add()
            prop.key, prop.value = k, v
        onnx.save(base, str(pre))
        excluded = float_nodes(base)
        fix = BiasCorrector(pre.read_bytes(), calib, manifest, cfg.threads) if cfg.bias_correction else None
        for k, name in enumerate(cfg.formats):
            say(f"quantizing {name}", k, len(cfg.formats))
            fmt, act, wt = QUANT_FORMATS[name]
            out_tmp = Path(tmp) / f"{name}.onnx"
            t0 = time.perf_counter()
            blob = _quantize_static(pre, out_tmp, name, calib, manifest, cfg, reduce_range, method, extra_options,
                                    excluded)
            if fix is not None and fmt == "QDQ":
                say(f"{name}: bias correction", k, len(cfg.formats))
                blob = fix(blob)
            qs = time.perf_counter() - t0
            try:
                sess = session(blob, cfg.threads)
            except Exception as e:  # noqa: BLE001 - some formats have no kernels on some CPUs
                say(f"{name}: onnxruntime cannot run it ({str(e).splitlines()[0][:120]})", k + 1, len(cfg.formats))
                continue
            p, lat, lat0 = _measure(sess, x_eval, manifest.input_name, cfg.latency_runs, sess0)
            c = Candidate.measured(name, vs_fp32(p), lat, quantize_seconds=round(qs, 2), size_bytes=len(blob),
                                   fp32_latency_ms=lat0)
            c.verdict = _verdict(c, fp32, cfg)
            c.within_budget = c.verdict == "ok"
            results.append(c)
            blobs[name] = blob
            say(f"quantizing {name}", k + 1, len(cfg.formats))
        mixed_run = _mixed_candidate(results, fp32, cfg, onnx_path, pre, excluded, calib, manifest, x_eval, vs_fp32,
                                     method, extra_options, reduce_range, say, fix, sess0)
        if mixed_run is not None:
            c, blob, record = mixed_run
            results.append(c)
            blobs[c.name] = blob
            mixed_records[c.name] = record
    ok = [c for c in results if c.within_budget]
    key = str(cfg.select_batch)
    if not ok:
        table = "; ".join(f"{c.name}: accuracy {c.accuracy:.3f} ({c.accuracy_delta_points:+.1f} pts), agreement "
                          f"{c.top1_agreement * 100:.1f} %, x{c.speedup(fp32, cfg.select_batch):.2f} at batch {key} "
                          f"({c.verdict})" for c in results)
        raise QuantizeRefused(
            f"no INT8 format is a win on this CPU ({_settings_note(isa, reduce_range, cfg)}); FP32 {acc0:.3f} at {fp32.latency_ms[key]:.1f} ms "
            f"(batch {key}) on {root}: {table or 'none could run'}. Needed: within "
            f"{cfg.accuracy_budget * 100:.1f} points, top-1 agreement >= {cfg.min_agreement * 100:.0f} %, "
            f">= x{cfg.min_speedup:.2f}. Nothing was written",
            "keep the FP32 model.onnx on this CPU; on a GPU use the TensorRT Q/DQ model (edgecrack export RUN "
            "--precision int8)", fp32=fp32, candidates=results, mixed_precision=mixed_records)
    chosen = max(ok, key=lambda c: c.speedup(fp32, cfg.select_batch))
    fmt, act, wt = QUANT_FORMATS[chosen.name.split("+")[0]]
    extra = {
        "precision": "int8",
        "format": chosen.name,
        "quant_format": fmt,
        "activation_type": act,
        "weight_type": wt,
        "per_channel": cfg.per_channel,
        "reduce_range": reduce_range,
        "cpu_isa": isa.summary,
        "min_agreement": cfg.min_agreement,
        "min_speedup": cfg.min_speedup,
        "calibrate_method": cfg.calibrate_method,
        "calibration_moving_average": bool(extra_options),
        "calibration_hash": calib.hash,
        "calibration_images": len(calib),
        "calibration_set": str(calib.meta.get("source") or calib.root),
        "excluded_nodes": excluded,
        "mixed_precision": mixed_records.get(chosen.name),
        "bias_correction": fix.record_of(blobs[chosen.name]) if fix else None,
        "onnx_sha256": fp32_sha,
        "eval": {"data": root, "images": int(len(y_eval)), "threshold": manifest.threshold},
        "fp32": asdict(fp32),
        "int8": asdict(chosen),
        "deltas_vs_fp32": {
            "accuracy_points": chosen.accuracy_delta_points,
            "top1_agreement": chosen.top1_agreement,
            "speedup_batch1": round(chosen.speedup(fp32, 1), 3),
            "speedup_batch8": round(chosen.speedup(fp32, 8), 3),
        },
        "candidates": [asdict(c) for c in results],
        "selected_by": f"highest batch-{key} speed-up over FP32 (timed in alternating blocks) within "
                       f"{cfg.accuracy_budget * 100:.1f} accuracy points of FP32, "
                       f"top-1 agreement >= {cfg.min_agreement * 100:.0f} %, speed-up >= x{cfg.min_speedup:.2f}",
        "cpu": cpu_name(),
        "threads": cfg.threads,
    }
    versions = dict(manifest.versions, onnxruntime=ort.__version__, onnx=onnx.__version__)
    im = manifest.with_kind("onnx-int8", extra=extra, versions=versions, parent=fp32_sha)
    from .onnx import attach_manifest

    final = attach_manifest(blobs[chosen.name], im)
    out = Path(out_path) if out_path else default_int8_path(onnx_path)
    atomic_write_bytes(out, final)
    write_manifest(out, im)
    return QuantizeResult(out, im, chosen, fp32, results, int(len(y_eval)), calib.describe())


def mixed_base(results: list[Candidate], fp32: Candidate, cfg: QuantizeConfig) -> Candidate | None:
    """The format the mixed-precision retry starts from: of those fast enough but refused, the one
    that agrees best with FP32 (ties: the faster). The closest start needs the fewest float units,
    and float units cost more speed than formats differ by: on the deck default qop-u8s8 and
    qdq-u8s8 trade places in latency from run to run on a shared CPU, while qop-u8s8 (no bias
    correction) agreed on 91.7 % against 96.7 % (``benchmarks/int8/int8.md``)."""
    fast = [c for c in results if c.verdict != "ok" and c.speedup(fp32, cfg.select_batch) >= cfg.min_speedup]
    if not fast:
        return None
    return max(fast, key=lambda c: (round(c.top1_agreement, 6), c.speedup(fp32, cfg.select_batch)))


def _mixed_candidate(results, fp32, cfg, onnx_path, pre, excluded, calib, manifest, x_eval, vs_fp32, method,
                     extra_options, reduce_range, say, fix, sess0):
    """When formats are fast enough but disagree with FP32, keep backbone units of one of them
    (:func:`mixed_base`) float (:mod:`edgecrack.export.mixed`: a float prefix first, then the most
    sensitive units; candidates slower than the speed-up gate are passed over) and measure that model too.

    Returns:
        (candidate ``<format>+mixed``, model bytes, search record), or None when nothing to try.
    """
    import onnx

    if cfg.max_float_units <= 0:
        return None
    base = mixed_base(results, fp32, cfg)
    if base is None:
        return None
    model = onnx.load(str(pre))
    ops = ["Conv", "Add", "Clip", "MatMul", "Mul", "Relu"]
    quantizable = [n.name for n in model.graph.node if n.op_type in ops and n.name not in set(excluded)]
    x = search_images_for(onnx_path, calib, manifest)
    ps = probs_on(session(pre.read_bytes(), cfg.threads), x, BATCH, manifest.input_name)
    cache, out = pre.with_name("ranges.json"), pre.with_name(f"{base.name}+mixed.onnx")

    def quantize(extra_float: set[str]) -> bytes:
        return _quantize_static(pre, out, base.name, calib, manifest, cfg, reduce_range, method, extra_options,
                                excluded + sorted(extra_float), cache)

    qdq = QUANT_FORMATS[base.name][0] == "QDQ"
    b = cfg.select_batch

    def fast_enough(blob: bytes) -> bool:
        ref_ms, ms = paired_latency_ms(sess0, session(blob, cfg.threads), x_eval, manifest.input_name, b,
                                       cfg.latency_runs)
        return ref_ms / ms >= cfg.min_speedup

    found = mixed.search(mixed.backbone_units(model, quantizable), quantize,
                         search_scorer(x, ps, manifest, cfg.threads), cfg.min_agreement, cfg.max_float_units, say,
                         fix if qdq else None, fast_enough)
    if not found.float_units:
        return None
    p, lat, lat0 = _measure(session(found.blob, cfg.threads), x_eval, manifest.input_name, cfg.latency_runs, sess0)
    c = Candidate.measured(f"{base.name}+mixed", vs_fp32(p), lat, size_bytes=len(found.blob), fp32_latency_ms=lat0)
    c.verdict = _verdict(c, fp32, cfg)
    c.within_budget = c.verdict == "ok"
    return c, found.blob, dict(found.record(), search_images=int(len(x)))


def _quantize_static(pre: Path, out: Path, name: str, calib, manifest: Manifest, cfg: QuantizeConfig,
                     reduce_range: bool, method, extra_options: dict, nodes_to_exclude: list[str],
                     cache: Path | None = None) -> bytes:
    """onnxruntime static quantization of ``pre`` in format ``name``; returns the model's bytes.

    With ``cache``, the first call calibrates and stores the ranges there and later calls reuse them.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    fmt, act, wt = QUANT_FORMATS[name]
    reader = None if cache is not None and cache.is_file() else CalibrationReader(calib, manifest)
    with quiet_root_logger():
        quantize_static(str(pre), str(out), reader, quant_format=getattr(QuantFormat, fmt),
                        activation_type=getattr(QuantType, act), weight_type=getattr(QuantType, wt),
                        per_channel=cfg.per_channel, reduce_range=reduce_range, nodes_to_exclude=nodes_to_exclude,
                        calibrate_method=method, extra_options=extra_options,
                        calibration_cache_path=None if cache is None else str(cache))
    return out.read_bytes()


def _settings_note(isa, reduce_range: bool, cfg: QuantizeConfig) -> str:
    """The CPU's INT8 class, and the weight width this run used where ``--reduce-range`` overrode it."""
    if reduce_range == isa.reduce_range:
        return isa.summary
    return f"{isa.summary}; this run: {'7' if reduce_range else '8'}-bit weights (--reduce-range {cfg.reduce_range})"


def _verdict(c: Candidate, fp32: Candidate, cfg: QuantizeConfig) -> str:
    why = []
    if fp32.accuracy - c.accuracy > cfg.accuracy_budget + 1e-9:
        why.append(f"{-c.accuracy_delta_points:.1f} pts over budget")
    if c.top1_agreement < cfg.min_agreement - 1e-9:
        why.append(f"agreement {c.top1_agreement * 100:.1f} % < {cfg.min_agreement * 100:.0f} %")
    if c.speedup(fp32, cfg.select_batch) < cfg.min_speedup:
        why.append(f"x{c.speedup(fp32, cfg.select_batch):.2f} < x{cfg.min_speedup:.2f}")
    return "; ".join(why) or "ok"


class QuantizeRefused(ArtifactError):
    """No INT8 candidate is a win; carries the measurements for reports and tests."""

    def __init__(self, message: str, hint: str, fp32: Candidate, candidates: list[Candidate],
                 mixed_precision: dict[str, dict] | None = None):
        super().__init__(message, hint)
        self.fp32 = fp32
        self.candidates = candidates
        #: The mixed-precision search behind each ``<format>+mixed`` candidate, by candidate name.
        self.mixed_precision = mixed_precision or {}

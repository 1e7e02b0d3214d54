"""TensorRT engines from edgecrack ONNX models: FP32, FP16, INT8.

Which way a precision is built depends on the TensorRT version (:func:`build_mode`):

| TensorRT | FP16 | INT8 |
|---|---|---|
| 11.x (pip today) | strongly typed network from ``model.fp16.onnx`` | strongly typed from ``model.qdq.onnx`` |
| 10.x (JetPack 6: 10.3) | strongly typed from ``model.fp16.onnx`` (``BuilderFlag.FP16`` on FP32 only when no FP16 ONNX exists) | strongly typed from ``model.qdq.onnx`` |
| 8.5/8.6 (JetPack 5) | ``BuilderFlag.FP16`` on the FP32 ONNX | ``model.qdq.onnx`` with ``BuilderFlag.INT8`` (explicit Q/DQ), else the entropy calibrator on the FP32 ONNX |

The FP16/Q/DQ ONNX files are made and measured on a CPU by ``edgecrack export RUN --precision``
(:mod:`edgecrack.export.precision`); the builder looks for them next to ``model.onnx``.
Other API differences followed here:

- explicit batch: 8.x needs ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``; 10.x is always
  explicit batch and the flag is deprecated, so the network is created with flags ``0`` there;
- ``build_serialized_network`` (8.0+) instead of the ``build_engine`` removed in 10.0;
- ``set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)`` (8.4+) instead of
  ``max_workspace_size`` (removed in 10.0);
- ``IInt8EntropyCalibrator2`` + ``set_calibration_profile`` for dynamic-batch INT8 (deprecated
  in 10.1 in favour of explicit Q/DQ, still working through 10.x; removed in 11, which is
  refused here with a clear message);
- ``IProgressMonitor`` (10.0+) for build progress; 8.x builds report start and end only.

The plan is written unmodified (a header in front of it breaks trtexec and DeepStream); its
manifest lives in the sidecar ``<engine>.json``. Calibration never uses random data: INT8 needs a
calibration set (:mod:`edgecrack.calibration`), read through the inference preprocessing.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..artifacts import engine_path, fp32_sibling, precision_of, precision_onnx_path
from ..calibration import CalibrationSource, load_calibration
from ..errors import ArtifactError, BackendUnavailable, ConfigError
from ..io import atomic_write_bytes
from ..manifest import Manifest, read_manifest, write_manifest
from ..progress import Progress

PRECISIONS = ("fp32", "fp16", "int8")


def default_tensorrt_cache_dir() -> Path:
    """Calibration and timing caches: ``$EDGECRACK_CACHE/tensorrt`` (default ``~/.cache/edgecrack/tensorrt``)."""
    import os

    env = os.environ.get("EDGECRACK_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgecrack"
    return base / "tensorrt"


def int8_unsupported_reason(major: int, minor: int, name: str, platform_has_fast_int8: bool | None = None) -> str | None:
    """Why a GPU cannot run INT8 fast (None when it can).

    Fast INT8 (DP4A / tensor cores) needs compute capability 6.1 or 7.0+. Jetson Nano (sm 5.3),
    Maxwell cards (sm 5.x), Tesla P100 (sm 6.0) and Jetson TX2 (sm 6.2) lack it: TensorRT would
    either fall back to slower kernels or refuse, so edgecrack refuses up front. TensorRT's own
    ``platform_has_fast_int8`` is honoured when it is available.
    """
    cc = (major, minor)
    if cc < (6, 1) or cc == (6, 2) or platform_has_fast_int8 is False:
        board = {(5, 3): " (Jetson Nano)", (6, 2): " (Jetson TX2)"}.get(cc, "")
        return f"{name} (sm {major}.{minor}{board}) has no fast INT8 support"
    return None


def calibration_cache_key(onnx_sha256: str, calib_hash: str, trt_version: str, gpu_name: str, cc: str,
                          batch: int, dla_core: int | None) -> str:
    """Key of a reusable TensorRT calibration cache: model, calibration images, TensorRT, device."""
    parts = [onnx_sha256, calib_hash, trt_version, gpu_name, cc, str(batch), f"dla{dla_core}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


@dataclass
class EngineConfig:
    """Options of ``edgecrack build-engine`` (GPU target); written into the engine manifest.

    Attributes:
        precision: ``fp32``, ``fp16`` or ``int8`` (INT8 also enables FP16 for layers that stay float).
        calib: Calibration set folder (required for INT8).
        workspace_mb: Builder workspace memory pool.
        min_batch / opt_batch / max_batch: Optimisation profile of the dynamic batch axis.
        calib_batch: Images per calibration batch.
        dla_core: DLA core (Xavier/Orin); layers DLA cannot run fall back to the GPU. DLA
            engines are built with a static batch of ``opt_batch``.
        timing_cache: Timing cache file (default: per TensorRT version and GPU in the cache dir).
        calib_cache: Calibration cache file (default: keyed file in the cache dir).
        device_index: CUDA device.
        parity_images: Images used for the post-build parity check against onnxruntime FP32.
    """

    precision: str = "fp16"
    calib: str | None = None
    workspace_mb: int = 1024
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    calib_batch: int = 8
    dla_core: int | None = None
    timing_cache: str | None = None
    calib_cache: str | None = None
    device_index: int = 0
    parity_images: int = 32
    extra: dict = field(default_factory=dict)


def build_mode(trt_major: int, requested: str, source_precision: str, have: dict[str, bool]) -> dict:
    """How to build ``requested`` precision on TensorRT ``trt_major``.

    Args:
        trt_major: TensorRT major version.
        requested: ``fp32``, ``fp16`` or ``int8``.
        source_precision: Precision of the ONNX given (``fp32``, ``fp16``, ``int8`` for Q/DQ).
        have: Which sibling ONNX files exist: ``{"fp16": bool, "int8": bool}``.

    Returns:
        ``{"onnx": "fp32"|"fp16"|"int8", "strongly_typed": bool, "flags": [...], "calibrator": bool}``

    Raises:
        BackendUnavailable: The requested precision has no way on this TensorRT with these files.
    """
    if source_precision != "fp32":
        requested = source_precision  # the artifact carries its precision
    if requested == "fp32":
        return {"onnx": "fp32", "strongly_typed": trt_major >= 10, "flags": [], "calibrator": False}
    explicit = requested if (source_precision == requested or have.get(requested)) else None
    if trt_major >= 10:
        if explicit:
            return {"onnx": explicit, "strongly_typed": True, "flags": [], "calibrator": False}
        if trt_major == 10 and requested == "fp16":  # deprecated in 10.x, removed in 11
            return {"onnx": "fp32", "strongly_typed": False, "flags": ["FP16"], "calibrator": False}
        made = "model.fp16.onnx" if requested == "fp16" else "model.qdq.onnx"
        raise BackendUnavailable(
            f"TensorRT {trt_major}.x builds {requested.upper()} only from an explicit-precision ONNX ({made}); "
            "implicit INT8 calibration is deprecated since 10.1 and FP16/INT8 builder flags are gone in 11",
            f"make it first: edgecrack export RUN --precision {requested}")
    if requested == "fp16":
        return {"onnx": explicit or "fp32", "strongly_typed": False, "flags": ["FP16"], "calibrator": False}
    if explicit:
        return {"onnx": "int8", "strongly_typed": False, "flags": ["FP16", "INT8"], "calibrator": False}
    return {"onnx": "fp32", "strongly_typed": False, "flags": ["FP16", "INT8"], "calibrator": True}


def _validate(cfg: EngineConfig) -> None:
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {cfg.precision!r}", f"choose one of: {', '.join(PRECISIONS)}")
    if not 1 <= cfg.min_batch <= cfg.opt_batch <= cfg.max_batch:
        raise ConfigError(f"batch profile must satisfy 1 <= min ({cfg.min_batch}) <= opt ({cfg.opt_batch}) <= max "
                          f"({cfg.max_batch})", "e.g. --max-batch 32 --opt-batch 8")
    if cfg.workspace_mb < 16:
        raise ConfigError(f"--workspace-mb {cfg.workspace_mb} is too small", "use at least 256")
    if cfg.dla_core is not None and cfg.precision == "fp32":
        raise ConfigError("DLA runs FP16 or INT8 only", "use --precision fp16 (or int8) with --dla-core")


def tensorrt_unavailable_reason(device_index: int = 0) -> str | None:
    """None when TensorRT and a CUDA GPU are usable for building here, else why not."""
    from ..runtime.tensorrt_backend import TensorRTBackend

    return TensorRTBackend.probe(device_index)


def _make_logger(trt):
    class _Logger(trt.ILogger):
        """Keeps errors for the user-facing message instead of printing them."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(str(msg))

    return _Logger()


def _make_calibrator(trt, api, source: CalibrationSource, manifest: Manifest, batch: int, cache_path: Path,
                     progress: Progress | None):
    c = manifest.input

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds preprocessed calibration batches; reads/writes a keyed calibration cache."""

        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = source.batches(c, batch, drop_last=True)
            self._dev = api.malloc(batch * c.height * c.width * 3)
            self.total = len(source) // batch
            self.done = 0
            self.cache_hit = False

        def get_batch_size(self):
            return batch

        def get_batch(self, names, *_):
            try:
                b = next(self._batches)
            except StopIteration:
                return None
            api.htod(self._dev, np.ascontiguousarray(b))
            self.done += 1
            if progress:
                progress("calibrating", self.done, self.total)
            return [api.ptr(self._dev)]

        def read_calibration_cache(self, *_):
            if cache_path.is_file() and cache_path.stat().st_size:
                self.cache_hit = True
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            atomic_write_bytes(cache_path, bytes(cache))

        def free(self):
            api.free(self._dev)

    return EntropyCalibrator()


def _make_progress_monitor(trt, progress: Progress):
    class _Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                with self._lock:
                    progress(str(phase_name), 0, int(num_steps))

        def step_complete(self, phase_name, step):
            with self._lock:
                progress(str(phase_name), int(step) + 1, 0)
            return True

        def phase_finish(self, phase_name):
            pass

    return _Monitor()


def engine_from_onnx(onnx_path: str | Path, out_path: str | Path | None = None, precision: str = "fp16",
                     calib: str | Path | CalibrationSource | None = None, workspace_mb: int = 1024,
                     max_batch: int = 32, opt_batch: int = 8, dla_core: int | None = None,
                     timing_cache: str | Path | None = None, progress: Progress | None = None,
                     config: EngineConfig | None = None) -> tuple[Path, Manifest]:
    """Build a TensorRT engine from an edgecrack ONNX model on this machine's GPU.

    Args:
        onnx_path: FP32 ``model.onnx`` (with its manifest).
        out_path: Engine file (default ``<stem>.<precision>.engine`` next to the ONNX).
        precision: ``fp32``, ``fp16`` or ``int8``.
        calib: Calibration set (folder or :class:`~edgecrack.calibration.CalibrationSource`); INT8 only.
        workspace_mb: Builder workspace.
        max_batch: Largest batch of the optimisation profile.
        opt_batch: Batch size TensorRT tunes kernels for.
        dla_core: DLA core on Xavier/Orin (GPU fallback enabled).
        timing_cache: Timing cache file, created or reused.
        progress: ``(phase, done, total)`` callback.
        config: Full options; overrides the keyword arguments above.

    Returns:
        (engine path, engine manifest with TensorRT version, GPU, compute capability,
        precision, ONNX sha256, calibration hash, build time, parity vs onnxruntime).

    Raises:
        BackendUnavailable: No TensorRT or no GPU here (use ``--target cpu``), INT8 on a GPU
            without fast INT8, FP16/INT8 on TensorRT 11+, or a missing DLA core.
        ConfigError: Invalid options (e.g. INT8 without a calibration set).
        ArtifactError: The ONNX cannot be parsed or the build fails.
    """
    cfg = config or EngineConfig(precision=precision, calib=str(calib) if isinstance(calib, (str, Path)) else None,
                                 workspace_mb=workspace_mb, max_batch=max_batch, opt_batch=min(opt_batch, max_batch),
                                 dla_core=dla_core, timing_cache=str(timing_cache) if timing_cache else None)
    if isinstance(calib, CalibrationSource):
        cfg.calib = str(calib.root)
    _validate(cfg)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ArtifactError(f"ONNX model not found: {onnx_path}", "export it first: edgecrack export <run folder>")
    manifest = read_manifest(onnx_path)
    if manifest.kind != "onnx":
        raise ConfigError(f"{onnx_path} is a {manifest.kind!r} artifact (onnxruntime CPU INT8); TensorRT engines are "
                          "built from model.onnx, model.fp16.onnx or model.qdq.onnx",
                          "pass the run's model.onnx (with --precision), or make model.qdq.onnx: edgecrack export RUN "
                          "--precision int8")
    why = tensorrt_unavailable_reason(cfg.device_index)
    if why:
        raise BackendUnavailable(f"cannot build a TensorRT engine here: {why}",
                                 "for a CPU INT8 model use: edgecrack build-engine MODEL.onnx --precision int8 --target cpu")
    import tensorrt as trt

    from ..runtime._cuda import gpu_or_reason

    trt_version = str(trt.__version__)
    major = int(trt_version.split(".")[0])
    fp32_onnx = onnx_path
    src_precision = precision_of(manifest)
    if src_precision != "fp32" and fp32_sibling(onnx_path).is_file():
        fp32_onnx = fp32_sibling(onnx_path)
    siblings = {p: precision_onnx_path(fp32_onnx, p) for p in ("fp16", "int8")}
    mode = build_mode(major, cfg.precision, src_precision, {p: f.is_file() for p, f in siblings.items()})
    cfg.precision = src_precision if src_precision != "fp32" else cfg.precision
    if mode["onnx"] != src_precision:
        onnx_path = fp32_onnx if mode["onnx"] == "fp32" else siblings[mode["onnx"]]
        manifest = read_manifest(onnx_path)
    if mode["calibrator"] and not cfg.calib:
        raise ConfigError("implicit INT8 (TensorRT 8.x without model.qdq.onnx) needs a calibration set; edgecrack never "
                          "calibrates on random data", "make model.qdq.onnx (edgecrack export RUN --precision int8), or "
                          "pass --calib FOLDER")
    source = calib if isinstance(calib, CalibrationSource) else (
        load_calibration(cfg.calib) if cfg.calib and mode["calibrator"] else None)
    api, gpu, _ = gpu_or_reason(cfg.device_index)
    api.set_device(cfg.device_index)
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    if cfg.precision == "int8":
        fast = getattr(builder, "platform_has_fast_int8", None)  # deprecated in 10.x, gone in 11
        reason = int8_unsupported_reason(gpu.major, gpu.minor, gpu.name, fast)
        if reason:
            raise BackendUnavailable(f"INT8 refused: {reason}",
                                     "build FP16 instead: edgecrack build-engine MODEL.onnx --precision fp16")
    if cfg.dla_core is not None:
        n_dla = int(getattr(builder, "num_DLA_cores", 0))
        if cfg.dla_core >= n_dla:
            raise BackendUnavailable(f"--dla-core {cfg.dla_core} asked for, but {gpu.name} has {n_dla} DLA cores",
                                     "drop --dla-core (GPU only), or use a Xavier/Orin module")

    if mode["strongly_typed"]:
        # TensorRT 10/11: the ONNX's own types (FP16 tensors, Q/DQ nodes) decide every layer's precision.
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    else:
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    blob = onnx_path.read_bytes()
    if not parser.parse(blob):
        errs = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise ArtifactError(f"TensorRT {trt_version} cannot parse {onnx_path}: {'; '.join(errs)[:500] or 'unknown error'}",
                            "re-export with a lower opset for older TensorRT (edgecrack export RUN --opset 13), or check "
                            "the file is not truncated")
    onnx_sha = hashlib.sha256(blob).hexdigest()

    bconf = builder.create_builder_config()
    bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_mb) << 20)
    c = manifest.input
    shape = lambda b: (b, c.height, c.width, 3)  # noqa: E731
    lo, opt, hi = (cfg.opt_batch,) * 3 if cfg.dla_core is not None else (cfg.min_batch, cfg.opt_batch, cfg.max_batch)
    profile = builder.create_optimization_profile()
    profile.set_shape(manifest.input_name, shape(lo), shape(opt), shape(hi))
    bconf.add_optimization_profile(profile)
    for flag in mode["flags"]:
        bconf.set_flag(getattr(trt.BuilderFlag, flag))

    cache_dir = default_tensorrt_cache_dir()
    calibrator = None
    calib_cache_path = None
    calib_batch = None
    if mode["calibrator"]:
        calib_batch = min(cfg.calib_batch, len(source))
        if len(source) < 8:
            raise ConfigError(f"calibration set {source.root} has only {len(source)} images",
                              "use at least 32 (edgecrack calibration build --n 64)")
        key = calibration_cache_key(onnx_sha, source.hash, trt_version, gpu.name, gpu.compute_capability,
                                    calib_batch, cfg.dla_core)
        calib_cache_path = Path(cfg.calib_cache) if cfg.calib_cache else cache_dir / f"calib-{key}.cache"
        calibrator = _make_calibrator(trt, api, source, manifest, calib_batch, calib_cache_path, progress)
        bconf.int8_calibrator = calibrator
        cprof = builder.create_optimization_profile()
        # TensorRT calibrates at one shape: the calibration profile's, fixed to the calibrator batch.
        cprof.set_shape(manifest.input_name, shape(calib_batch), shape(calib_batch), shape(calib_batch))
        bconf.set_calibration_profile(cprof)
    if cfg.dla_core is not None:
        bconf.default_device_type = trt.DeviceType.DLA
        bconf.DLA_core = int(cfg.dla_core)
        bconf.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    tc_path = Path(cfg.timing_cache) if cfg.timing_cache else (
        cache_dir / f"timing-{trt_version}-{_slug(gpu.name)}-sm{gpu.major}{gpu.minor}.cache")
    tc_blob = tc_path.read_bytes() if tc_path.is_file() else b""
    timing = bconf.create_timing_cache(tc_blob)
    bconf.set_timing_cache(timing, ignore_mismatch=False)

    monitor = None
    if progress is not None:
        progress(f"building on {gpu.name}: TensorRT builds take one to several minutes"
                 f"{' (INT8 calibrates first)' if cfg.precision == 'int8' else ''}", 0, 0)
    if progress is not None and hasattr(trt, "IProgressMonitor"):
        monitor = _make_progress_monitor(trt, progress)
        bconf.progress_monitor = monitor
    elif progress is not None:
        progress(f"building (TensorRT {trt_version} reports no progress; this can take minutes)", 0, 0)

    t0 = time.perf_counter()
    try:
        plan = builder.build_serialized_network(network, bconf)
    finally:
        if calibrator is not None:
            calibrator.free()
    build_s = time.perf_counter() - t0
    if plan is None:
        raise ArtifactError(f"TensorRT {trt_version} failed to build {cfg.precision} engine from {onnx_path}: "
                            f"{'; '.join(logger.errors)[:600] or 'no error reported'}",
                            "try a larger --workspace-mb, a smaller --max-batch, or another precision")
    plan_bytes = bytes(plan)
    atomic_write_bytes(tc_path, bytes(bconf.get_timing_cache().serialize()))

    out = Path(out_path) if out_path else engine_path(onnx_path, cfg.precision)
    extra = {
        "precision": cfg.precision,
        "build_mode": mode,
        "tensorrt_version": trt_version,
        "gpu_name": gpu.name,
        "compute_capability": gpu.compute_capability,
        "integrated_gpu": gpu.integrated,
        "onnx_sha256": onnx_sha,
        "onnx_file": onnx_path.name,
        "calibration_hash": source.hash if source is not None else manifest.extra.get("calibration_hash"),
        "calibration_images": len(source) if source is not None else manifest.extra.get("calibration_images"),
        "calibration_cache": str(calib_cache_path) if calib_cache_path else None,
        "calibration_cache_reused": bool(calibrator.cache_hit) if calibrator is not None else None,
        "timing_cache": str(tc_path),
        "build_seconds": round(build_s, 2),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "batch_profile": {"min": lo, "opt": opt, "max": hi},
        "workspace_mb": cfg.workspace_mb,
        "dla_core": cfg.dla_core,
        "cuda_binding": api.library,
        "plan_bytes": len(plan_bytes),
        "plan_sha256": hashlib.sha256(plan_bytes).hexdigest(),
        "warnings": logger.warnings[-5:],
    }
    versions = dict(manifest.versions, tensorrt=trt_version)
    em = manifest.with_kind("tensorrt", extra=extra, versions=versions, parent=onnx_sha)
    # Plan first, sidecar second: a sidecar never describes a plan that is not there.
    atomic_write_bytes(out, plan_bytes)
    write_manifest(out, em)
    if cfg.parity_images:
        em.extra["parity_vs_onnxruntime"] = _parity_vs_onnx(out, em, onnx_path, manifest, source, cfg.parity_images)
        write_manifest(out, em)
    return out, em


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s).strip("-").lower()


def _parity_vs_onnx(engine: Path, em: Manifest, onnx_path: Path, om: Manifest, source: CalibrationSource | None,
                    n: int) -> dict:
    """Engine vs onnxruntime FP32 on real images: max |dp|, top-1 agreement (:mod:`edgecrack.compare`)."""
    from ..compare import compare_runners
    from ..data import DEFAULT_DATASET, list_images
    from ..preprocess import preprocess_files
    from ..runtime.onnxruntime_backend import OnnxRuntimeBackend
    from ..runtime.tensorrt_backend import TensorRTBackend

    paths = list(source.paths) if source is not None else list_images(DEFAULT_DATASET)
    paths = paths[::max(1, len(paths) // n)][:n]
    batch = preprocess_files(paths, om.input)
    with OnnxRuntimeBackend(onnx_path, om) as ref, TensorRTBackend(engine, em) as eng:
        _, (_, agree) = compare_runners([ref, eng], batch)
    return {"n": agree.n, "max_abs_diff": agree.max_abs_diff, "top1_agreement": agree.top1_agreement}

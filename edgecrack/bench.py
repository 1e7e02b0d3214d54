"""Latency, throughput, memory and accuracy of every artifact of a run on every backend here.

Torch-free at import: a Jetson with only onnxruntime/TensorRT + OpenCV + numpy can benchmark.
Every number in a report traces to a backend's :meth:`~edgecrack.runtime.base.Backend.info`
and to the environment captured with it. Backends that cannot run here are reported with
the reason, never silently dropped.

What is measured, per artifact x backend x batch size:

- *compute*: :meth:`Backend.infer` on a prepared ``uint8 [N,H,W,3]`` tensor made from real
  images (what the model costs);
- *end to end*: decode the image files + :func:`edgecrack.preprocess.preprocess` + infer +
  postprocess (threshold to labels), per call (what a user of the loop sees);
- model size on disk, load time, resident memory after load and the peak resident memory
  while loading and running (Linux ``VmHWM`` after a reset through ``/proc/self/clear_refs``);
- accuracy on a labelled folder (the bundled data by default), and agreement with the FP32
  reference, so speed never hides an accuracy loss.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import __version__
from .data import DEFAULT_DATASET, discover, list_images
from .errors import ArtifactError, BackendUnavailable, ConfigError, DatasetError, EdgecrackError
from .io import atomic_path, atomic_write_json, atomic_write_text
from .manifest import Manifest, read_manifest
from .loop.postprocess import predict_labels
from .metrics import classification_report
from .preprocess import decode_image, preprocess

SCHEMA = "edgecrack.bench/1"
SCHEMA_MAJOR = 1
TRAIN_SCHEMA = "edgecrack.bench.train/1"

#: Backend names a report can hold, in the order they are tried for each artifact family.
BACKENDS = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "torch-cuda", "torch-cpu")
_FAMILY_BACKENDS = {
    "checkpoint": ("torch-cuda", "torch-cpu"),
    "onnx": ("onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"),
    "engine": ("tensorrt",),
}
_ALIASES = {"torch": "torch-cpu", "onnxruntime": "onnxruntime-cpu", "ort": "onnxruntime-cpu",
            "ort-cpu": "onnxruntime-cpu", "ort-cuda": "onnxruntime-cuda", "trt": "tensorrt"}

#: The performance goals the issue states, as ratios measured in one run.
OVERHEAD_GOAL = 1.15
TORCH_SPEEDUP_GOAL = 3.0

_MAX_SAMPLES = 2000  # raw latencies kept per measurement in the JSON (for plots and re-analysis)


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------
def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile by linear interpolation between closest ranks.

    The definition is numpy's default (Hyndman & Fan type 7): with the samples sorted,
    rank ``r = q/100 * (n - 1)``, and the value interpolates between ``sorted[floor(r)]`` and
    ``sorted[ceil(r)]``. So the p50 of ``1..10`` is 5.5 and its p90 is 9.1.

    Args:
        samples: The values (any order).
        q: Percentile in ``[0, 100]``.

    Raises:
        ValueError: No samples, or ``q`` outside ``[0, 100]``.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    s = sorted(float(v) for v in samples)
    if not s:
        raise ValueError("percentile of no samples")
    r = q / 100.0 * (len(s) - 1)
    lo, hi = math.floor(r), math.ceil(r)
    return s[lo] + (s[hi] - s[lo]) * (r - lo)


@dataclass
class LatencyStats:
    """Latency distribution of one timed loop, and the throughput it implies.

    Attributes:
        n: Timed calls.
        batch: Images per call.
        mean_ms, std_ms, min_ms, p50_ms, p90_ms, p99_ms, max_ms: Per-call latency.
        wall_s: Wall time of the timed loop.
        images_per_s: ``batch * n / wall_s``.
        samples_ms: Raw per-call latencies (evenly thinned to at most 2000).
    """

    n: int
    batch: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wall_s: float
    images_per_s: float
    samples_ms: list[float] = field(default_factory=list)

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], batch: int = 1, wall_s: float | None = None) -> "LatencyStats":
        """Statistics of per-call latencies.

        Args:
            samples_ms: Per-call latencies in milliseconds (at least one).
            batch: Images per call.
            wall_s: Wall time of the loop; the sum of the samples when not given.
        """
        s = [float(v) for v in samples_ms]
        if not s:
            raise ValueError("no latency samples")
        a = np.asarray(s)
        wall = float(wall_s) if wall_s is not None else float(a.sum()) / 1e3
        keep = s if len(s) <= _MAX_SAMPLES else [s[int(i)] for i in np.linspace(0, len(s) - 1, _MAX_SAMPLES)]
        return cls(n=len(s), batch=batch, mean_ms=float(a.mean()), std_ms=float(a.std()), min_ms=float(a.min()),
                   p50_ms=percentile(s, 50), p90_ms=percentile(s, 90), p99_ms=percentile(s, 99), max_ms=float(a.max()),
                   wall_s=wall, images_per_s=batch * len(s) / wall if wall > 0 else 0.0,
                   samples_ms=[round(v, 4) for v in keep])

    @property
    def per_image_ms(self) -> float:
        return self.p50_ms / self.batch


# --------------------------------------------------------------------------------------
# report data model (schema edgecrack.bench/1)
# --------------------------------------------------------------------------------------
@dataclass
class BatchResult:
    """One batch size of one artifact x backend.

    Attributes:
        batch: Images per call.
        compute: ``Backend.infer`` on a prepared tensor.
        e2e: Decode + preprocess + infer + postprocess on real image files.
        stages_ms: Mean milliseconds per call of each end-to-end stage.
    """

    batch: int
    compute: LatencyStats
    e2e: LatencyStats | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class AccuracyResult:
    """Accuracy on a labelled folder, and agreement with the reference artifact.

    Attributes:
        n: Images scored.
        accuracy: At the manifest's threshold.
        roc_auc: Of the positive class (binary models).
        f1_positive: F1 of the positive (cracked) class.
        threshold: The manifest threshold used.
        agreement: Share of images with the same predicted label as the reference.
        max_abs_prob_diff: Largest difference in any class probability from the reference.
        skipped: Images that could not be decoded.
        seconds: Wall time of the evaluation.
    """

    n: int
    accuracy: float
    roc_auc: float | None
    f1_positive: float | None
    threshold: float | None
    agreement: float | None = None
    max_abs_prob_diff: float | None = None
    skipped: int = 0
    seconds: float = 0.0


@dataclass
class CellResult:
    """One artifact on one backend.

    Attributes:
        artifact: Artifact file name (``checkpoint.safetensors``, ``model.onnx``, ...).
        path: Its path.
        kind: Manifest kind (``checkpoint``, ``onnx``, ``onnx-int8``, ``tensorrt``).
        precision: ``fp32``, ``fp16`` or ``int8``.
        size_bytes: Size on disk.
        backend: Backend name (see :data:`BACKENDS`).
        status: ``ok``, ``unavailable`` (cannot run here; ``reason`` says why) or ``error``
            (the artifact failed to load; ``reason`` says why).
        reason: Why it was not measured.
        info: The backend's ``info()``: library, device, precision, providers, threads.
        load_ms: Time to load (session creation, engine deserialisation, checkpoint read).
        memory: Resident memory figures and how they were measured.
        batches: One entry per batch size.
        accuracy: Accuracy on the labelled set (None when not measured).
    """

    artifact: str
    path: str
    kind: str
    precision: str
    size_bytes: int
    backend: str
    status: str
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    load_ms: float | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    batches: list[BatchResult] = field(default_factory=list)
    accuracy: AccuracyResult | None = None

    @property
    def label(self) -> str:
        return f"{self.artifact} / {self.backend}"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def batch(self, b: int) -> BatchResult | None:
        return next((r for r in self.batches if r.batch == b), None)


@dataclass
class Goal:
    """A performance goal as a ratio measured in this run.

    Attributes:
        name: ``overhead_vs_bare_onnxruntime`` or ``speedup_vs_eager_torch``.
        value: The measured ratio (None when it could not be measured; ``detail`` says why).
        goal: The target.
        direction: ``max`` (value must stay <= goal) or ``min`` (value must reach >= goal).
        met: Whether the goal is met (None when not measured).
        definition: What was divided by what.
        detail: The numbers behind the ratio.
    """

    name: str
    value: float | None
    goal: float
    direction: str
    met: bool | None
    definition: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchReport:
    """A complete benchmark report (JSON schema ``edgecrack.bench/1``).

    Attributes:
        schema: ``edgecrack.bench/<major>``; readers refuse a newer major.
        edgecrack_version: Release that wrote it.
        created: UTC time, ISO 8601.
        run: The benchmarked run folder or artifact.
        config: The resolved :class:`BenchConfig`.
        environment: Machine, accelerator and library versions (see :func:`environment`).
        results: One entry per artifact x backend.
        baseline: Interleaved side-by-side measurements behind the goals: ``bare_onnxruntime``
            (a bare session vs edgecrack's path) and ``eager_torch`` (PyTorch vs the fastest
            CPU artifact).
        goals: The ratios the project reports against.
        summary: The five-second answer: fastest within the accuracy budget, and by how much.
        training: Training benchmark section (see :func:`training_section`), when folded in.
        notes: What a reader must know to interpret the numbers.
    """

    schema: str
    edgecrack_version: str
    created: str
    run: str
    config: dict[str, Any]
    environment: dict[str, Any]
    results: list[CellResult]
    baseline: dict[str, Any] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<report>") -> "BenchReport":
        """Rebuild a report; unknown keys (later minor additions) are ignored.

        Raises:
            ConfigError: Not a bench report, or malformed.
            ArtifactError: Written by an edgecrack with a newer schema major.
        """
        if not isinstance(d, dict) or not str(d.get("schema", "")).startswith("edgecrack.bench/"):
            raise ConfigError(f"{source} is not an edgecrack bench report (schema {d.get('schema') if isinstance(d, dict) else None!r})",
                              "pass a bench.json written by `edgecrack bench`")
        try:
            major = int(str(d["schema"]).split("/", 1)[1].split(".")[0])
        except ValueError:
            raise ConfigError(f"{source}: unreadable schema {d['schema']!r}") from None
        if major > SCHEMA_MAJOR:
            raise ArtifactError(f"{source} was written by a newer edgecrack ({d.get('edgecrack_version', '?')}, "
                                f"schema {d['schema']}); this is {__version__} ({SCHEMA})", "upgrade edgecrack to read it")
        try:
            results = [_cell_from_dict(c) for c in d["results"]]
            goals = [Goal(**_known(Goal, g)) for g in d.get("goals", [])]
            return cls(**{**_known(cls, d), "results": results, "goals": goals})
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{source}: malformed bench report ({type(e).__name__}: {e})",
                              "regenerate it with `edgecrack bench`") from None

    def cell(self, artifact: str, backend: str) -> CellResult | None:
        return next((c for c in self.results if c.artifact == artifact and c.backend == backend), None)


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _stats_from_dict(d: dict[str, Any] | None) -> LatencyStats | None:
    return None if d is None else LatencyStats(**_known(LatencyStats, d))


def _cell_from_dict(d: dict[str, Any]) -> CellResult:
    batches = [BatchResult(batch=b["batch"], compute=_stats_from_dict(b["compute"]), e2e=_stats_from_dict(b.get("e2e")),
                           stages_ms=b.get("stages_ms", {})) for b in d.get("batches", [])]
    acc = d.get("accuracy")
    return CellResult(**{**_known(CellResult, d), "batches": batches,
                         "accuracy": None if acc is None else AccuracyResult(**_known(AccuracyResult, acc))})


def read_report(path: str | Path) -> BenchReport:
    """Load a ``bench.json``.

    Raises:
        ConfigError: Missing file, invalid JSON or not a bench report.
        ArtifactError: Written by a newer edgecrack.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"bench report not found: {p}", "pass the bench.json an earlier `edgecrack bench` wrote")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is not valid JSON ({e})", "pass a bench.json written by `edgecrack bench`") from None
    return BenchReport.from_dict(d, str(p))


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    """Everything ``edgecrack bench`` does; written into every report.

    Attributes:
        run: Run folder (every artifact in it) or one artifact file.
        batches: Batch sizes to measure.
        duration_s: Seconds per timed loop (used when ``iterations`` is None).
        iterations: Fixed number of timed calls per loop (overrides ``duration_s``).
        min_iterations: Calls a duration-bound loop makes at least (so a p50 is never of two samples).
        warmup: Untimed calls before each timed loop.
        threads: CPU threads for every backend (None: the cores this process may use), the
            same for onnxruntime, the bare session and PyTorch so ratios compare like with like.
        backends: Backend names to try (None: all of :data:`BACKENDS`).
        artifacts: Artifact file names to include (None: all found in the run).
        data: Labelled folder for accuracy and the real images of the end-to-end loop
            (None: the bundled SDNET2018 deck sample).
        e2e_images: How many real image files the end-to-end loop cycles through.
        accuracy: Measure accuracy on ``data``.
        accuracy_budget: Largest accuracy drop (absolute) from the reference that still
            counts as "within budget" (also the accuracy tolerance of ``--compare``).
        baseline: Measure the goals' side-by-side baselines (bare onnxruntime session; eager
            PyTorch against the fastest CPU artifact).
        train_json: A training benchmark (``edgecrack.bench.train/1``) to fold into the report.
        notes: Free-text notes stored with the report (how the machine was set up, ...).
    """

    run: str
    batches: tuple[int, ...] = (1, 8, 32)
    duration_s: float = 3.0
    iterations: int | None = None
    min_iterations: int = 10
    warmup: int = 5
    threads: int | None = None
    backends: tuple[str, ...] | None = None
    artifacts: tuple[str, ...] | None = None
    data: str | None = None
    e2e_images: int = 64
    accuracy: bool = True
    accuracy_budget: float = 0.01
    baseline: bool = True
    train_json: str | None = None
    notes: tuple[str, ...] = ()

    def validate(self) -> "BenchConfig":
        """Check values and normalise backend names.

        Raises:
            ConfigError: A value out of range or an unknown backend name.
        """
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be positive integers, got {list(self.batches)}", "e.g. --batch 1,8,32")
        self.batches = tuple(sorted({int(b) for b in self.batches}))
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"--iterations must be at least 1, got {self.iterations}")
        if self.iterations is None and not self.duration_s > 0:
            raise ConfigError(f"--duration must be positive, got {self.duration_s}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup cannot be negative, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.e2e_images < 1:
            raise ConfigError(f"e2e images must be at least 1, got {self.e2e_images}")
        if not 0 <= self.accuracy_budget < 1:
            raise ConfigError(f"accuracy budget is an absolute accuracy drop in [0, 1), got {self.accuracy_budget}")
        if self.backends is not None:
            names = []
            for b in self.backends:
                n = _ALIASES.get(b.strip(), b.strip())
                if n not in BACKENDS:
                    raise ConfigError(f"unknown backend {b!r}", f"choose from: {', '.join(BACKENDS)}")
                names.append(n)
            self.backends = tuple(dict.fromkeys(names))
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["batches"] = list(self.batches)
        d["notes"] = list(self.notes)
        for k in ("backends", "artifacts"):
            d[k] = None if d[k] is None else list(d[k])
        return d


# --------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def _cmd(argv: list[str], timeout: float = 10.0) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _dist_version(*names: str) -> str | None:
    from importlib import metadata

    for n in names:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str:
    from .cpu import cpu_name

    return cpu_name()


def _physical_cores() -> int | None:
    info = _read("/proc/cpuinfo")
    if not info:
        return None
    cores = set()
    for block in info.split("\n\n"):
        pid = re.search(r"^physical id\s*:\s*(\d+)", block, re.M)
        cid = re.search(r"^core id\s*:\s*(\d+)", block, re.M)
        if pid and cid:
            cores.add((pid.group(1), cid.group(1)))
    return len(cores) or None


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def environment() -> dict[str, Any]:
    """Machine, accelerator and library versions: what every number in a report depends on.

    Nothing is installed or imported heavily: library versions come from package metadata
    (torch is not imported), the GPU from ``nvidia-smi`` when present, the Jetson power mode
    from ``nvpmodel -q`` when present.

    Returns:
        ``cpu`` (model, logical/physical/usable cores, governor), ``memory_gb``, ``os``,
        ``python``, ``gpu`` (list, empty without NVIDIA GPU), ``jetson`` (model, L4T release,
        power mode) or None, ``versions`` (edgecrack, numpy, OpenCV, onnxruntime and its
        providers, torch, TensorRT, pycuda), ``loadavg``.
    """
    import cv2

    mem = re.search(r"MemTotal:\s*(\d+)", _read("/proc/meminfo") or "")
    env: dict[str, Any] = {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": {"model": _cpu_model(), "logical_cores": os.cpu_count(), "physical_cores": _physical_cores(),
                "usable_cores": usable_cores(),
                "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")},
        "memory_gb": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    gpus = []
    smi = _cmd(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"])
    for line in (smi or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2],
                         "compute_capability": parts[3] if len(parts) > 3 else None})
    env["gpu"] = gpus
    jetson_model = _read("/proc/device-tree/model")
    tegra = _read("/etc/nv_tegra_release")
    if tegra or (jetson_model and "jetson" in jetson_model.lower()):
        # nvpmodel -q prints "NV Power Mode: MAXN" then the mode number; clocks change numbers 2-3x.
        env["jetson"] = {"model": jetson_model, "l4t": tegra.splitlines()[0] if tegra else None,
                         "power_mode": _cmd(["nvpmodel", "-q"]), "jetson_clocks": _cmd(["jetson_clocks", "--show"])}
    else:
        env["jetson"] = None
    versions: dict[str, Any] = {"edgecrack": __version__, "numpy": np.__version__, "opencv": cv2.__version__}
    try:
        import onnxruntime as ort

        versions["onnxruntime"] = ort.__version__
        versions["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        versions["onnxruntime"] = None
    versions["torch"] = _dist_version("torch")
    versions["tensorrt"] = _dist_version("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt_libs")
    if versions["tensorrt"] is None:
        # JetPack installs TensorRT's Python bindings as a Debian package without dist-info.
        from importlib.util import find_spec

        if find_spec("tensorrt") is not None:
            try:
                import tensorrt

                versions["tensorrt"] = tensorrt.__version__
            except Exception:  # noqa: BLE001 - a broken TensorRT install must not stop the report
                versions["tensorrt"] = "present but fails to import"
    versions["pycuda"] = _dist_version("pycuda")
    env["versions"] = versions
    return env


# --------------------------------------------------------------------------------------
# artifacts and backends
# --------------------------------------------------------------------------------------
@dataclass
class ArtifactRef:
    """An artifact found in a run: its file, family (checkpoint / onnx / engine) and manifest."""

    name: str
    path: Path
    family: str
    manifest: Manifest | None
    error: str | None = None

    @property
    def kind(self) -> str:
        return self.manifest.kind if self.manifest else self.family

    @property
    def precision(self) -> str:
        m = self.manifest
        if m is None:
            return "?"
        if m.extra.get("precision"):
            return str(m.extra["precision"])
        return "int8" if m.kind == "onnx-int8" else "fp32"

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


def machine_summary() -> dict[str, Any]:
    """The few machine facts the benchmark scripts print in their report headers.

    Derived from :func:`environment`, so every report names the machine the same way.
    """
    env = environment()
    v = env["versions"]
    return {"cpu": env["cpu"]["model"], "cores": env["cpu"]["logical_cores"], "python": platform.python_version(),
            "platform": platform.platform(), "torch": v.get("torch"), "onnxruntime": v.get("onnxruntime"),
            "opencv": v.get("opencv")}


def _ref(path: Path, family: str, manifest_of: Path) -> ArtifactRef:
    try:
        return ArtifactRef(path.name, path, family, read_manifest(manifest_of))
    except ArtifactError as e:
        return ArtifactRef(path.name, path, family, None, e.message)


def artifacts_of_run(run: str | Path) -> list[ArtifactRef]:
    """The artifacts of a run folder (or the one artifact a file path names).

    A run folder yields its PyTorch checkpoint, every ``*.onnx`` (``model.onnx`` first, then
    ``model.int8.onnx`` and others) and every ``*.engine``. An artifact whose manifest cannot
    be read is returned with ``error`` set (reported, not dropped).

    Raises:
        ArtifactError: Nothing benchmarkable at ``run``.
    """
    p = Path(run)
    if p.is_file():
        if p.suffix == ".safetensors":
            return [_ref(p, "checkpoint", p.parent)]
        if p.suffix == ".onnx":
            return [_ref(p, "onnx", p)]
        if p.suffix in (".engine", ".plan", ".trt"):
            return [_ref(p, "engine", p)]
        raise ArtifactError(f"{p} is not a benchmarkable artifact", "pass a run folder, a .onnx, a .engine or checkpoint.safetensors")
    if not p.is_dir():
        raise ArtifactError(f"run folder not found: {p}", "train one first (edgecrack train --out runs/deck)")
    out: list[ArtifactRef] = []
    ckpt = p / "checkpoint.safetensors"
    if ckpt.is_file():
        out.append(_ref(ckpt, "checkpoint", p))

    def onnx_order(q: Path) -> tuple[int, str]:
        return ({"model.onnx": 0, "model.int8.onnx": 1}.get(q.name, 2), q.name)

    # Temporary files of atomic writes start with a dot; they are not artifacts.
    out += [_ref(q, "onnx", q) for q in sorted(p.glob("*.onnx"), key=onnx_order) if not q.name.startswith(".")]
    out += [_ref(q, "engine", q) for q in sorted(p.glob("*.engine")) if not q.name.startswith(".")]
    if not out:
        raise ArtifactError(f"{p} holds no checkpoint, ONNX model or engine",
                            f"train into it (edgecrack train --out {p}) or pass an artifact file")
    return out


def backends_for(family: str) -> tuple[str, ...]:
    """Backend names that can run an artifact family (``checkpoint``, ``onnx``, ``engine``)."""
    return _FAMILY_BACKENDS[family]


def probe_backend(backend: str) -> str | None:
    """None when the named backend can run on this machine, else why not.

    Probing imports the backend's library, so a later memory baseline excludes the import.
    """
    if backend.startswith("onnxruntime-"):
        from .runtime import OnnxRuntimeBackend

        return OnnxRuntimeBackend.probe(backend.split("-", 1)[1])
    if backend.startswith("torch-"):
        from .runtime.torch_backend import TorchBackend

        return TorchBackend.probe(backend.split("-", 1)[1])
    if backend == "tensorrt":
        from .runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend.probe()
    raise ConfigError(f"unknown backend {backend!r}")


def open_cell_backend(art: ArtifactRef, backend: str, threads: int | None):
    """Load ``art`` on the named backend.

    Returns:
        A loaded :class:`~edgecrack.runtime.base.Backend`.

    Raises:
        BackendUnavailable: The backend cannot run here (the message says why).
        ArtifactError: The artifact cannot be loaded.
    """
    from .runtime import OnnxRuntimeBackend, open_backend

    if art.manifest is None:
        raise ArtifactError(art.error or f"no manifest for {art.path}")
    if backend.startswith("onnxruntime-"):
        dev = backend.split("-", 1)[1]
        why = OnnxRuntimeBackend.probe(dev)
        if why:
            raise BackendUnavailable(why)
        return OnnxRuntimeBackend(art.path, art.manifest, device=dev, threads=threads).load()
    if backend.startswith("torch-"):
        from .runtime.torch_backend import TorchBackend

        dev = backend.split("-", 1)[1]
        why = TorchBackend.probe(dev)
        if why:
            raise BackendUnavailable(why)
        return TorchBackend(art.path.parent, art.manifest, device=dev, threads=threads).load()
    if backend == "tensorrt":
        from .runtime import tensorrt_backend as trt_rt

        why = trt_rt.TensorRTBackend.probe()
        if why:
            raise BackendUnavailable(why)
        # An engine built for another GPU or TensorRT version cannot run here; that is not a
        # broken artifact, so it is reported as unavailable with the sidecar's reason.
        why = trt_rt.engine_matches_machine(art.manifest)
        if why:
            raise BackendUnavailable(why)
        return open_backend(art.path, prefer="tensorrt", strict=True, threads=threads).backend
    raise ConfigError(f"unknown backend {backend!r}")


# --------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------
def _status_kb(key: str) -> int | None:
    m = re.search(rf"^{key}:\s*(\d+)\s*kB", _read("/proc/self/status") or "", re.M)
    return int(m.group(1)) if m else None


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0): per-backend peaks in one process.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_memory() -> None:
    gc.collect()
    try:
        import ctypes

        # glibc keeps freed arenas mapped; trimming makes the next backend's baseline honest.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _MemoryProbe:
    def __init__(self) -> None:
        _release_memory()
        self.resettable = _reset_peak_rss()
        self.rss0 = _status_kb("VmRSS")
        self.after_load: int | None = None

    def loaded(self) -> None:
        self.after_load = _status_kb("VmRSS")

    def result(self) -> dict[str, Any]:
        if self.rss0 is None:
            return {"method": "unavailable (no /proc/self/status on this OS)"}
        hwm = _status_kb("VmHWM")
        mb = 1024.0
        out = {"method": "process resident set (Linux VmRSS); peak = VmHWM after a reset via /proc/self/clear_refs, "
                         "minus the resident set before loading",
               "rss_before_mb": round(self.rss0 / mb, 1),
               "rss_after_load_delta_mb": None if self.after_load is None else round((self.after_load - self.rss0) / mb, 1)}
        if self.resettable and hwm is not None:
            out["peak_delta_mb"] = round((hwm - self.rss0) / mb, 1)
        else:
            out["peak_delta_mb"] = None
            out["method"] += " (peak unavailable: clear_refs not writable)"
        return out


# --------------------------------------------------------------------------------------
# timed loops
# --------------------------------------------------------------------------------------
def _timed_loop(fn: Callable[[int], Any], cfg: BenchConfig) -> tuple[list[float], float, list[Any]]:
    """Warm up, then time ``fn(k)`` for a fixed count or duration; returns (ms, wall s, fn results).

    A duration-bound loop runs at least ``min_iterations`` calls, unless that would take more
    than five times the duration (slow backend at a large batch): then it stops once it has
    three calls. Warm-up likewise stops after one duration once a call was made.
    """
    w0 = time.perf_counter()
    for k in range(cfg.warmup):
        fn(k)
        if cfg.iterations is None and time.perf_counter() - w0 >= cfg.duration_s:
            break
    samples: list[float] = []
    extra: list[Any] = []
    gc.collect()
    start = time.perf_counter()
    k = 0
    while True:
        t0 = time.perf_counter()
        r = fn(k)
        samples.append((time.perf_counter() - t0) * 1e3)
        extra.append(r)
        k += 1
        if cfg.iterations is not None:
            if k >= cfg.iterations:
                break
        else:
            el = time.perf_counter() - start
            if el >= cfg.duration_s and (k >= cfg.min_iterations or (el >= 5 * cfg.duration_s and k >= 3)):
                break
    return samples, time.perf_counter() - start, extra


def _tensor_from_images(paths: list[Path], batch: int, m: Manifest) -> np.ndarray:
    return preprocess([decode_image(paths[i % len(paths)]) for i in range(batch)], m.input)


def measure_compute(backend, paths: list[Path], batch: int, cfg: BenchConfig) -> LatencyStats:
    """Latency of ``backend.infer`` on a prepared tensor of ``batch`` real images."""
    m = backend.manifest
    feeds = {m.input_name: _tensor_from_images(paths, batch, m)}
    samples, wall, _ = _timed_loop(lambda k: backend.infer(feeds), cfg)
    return LatencyStats.from_samples(samples, batch, wall)


def measure_e2e(backend, paths: list[Path], batch: int, cfg: BenchConfig) -> tuple[LatencyStats, dict[str, float]]:
    """Latency of decode + preprocess + infer + postprocess on real image files.

    Each call takes the next ``batch`` files (cycling), decodes them from disk (page cache
    after the first pass), preprocesses them with THE preprocessing function, runs the
    backend and turns probabilities into labels at the manifest threshold.

    Returns:
        (latency statistics, mean milliseconds per call of each stage)
    """
    m = backend.manifest
    pos, thr, labels = m.positive_index, m.threshold, m.labels

    def once(k: int) -> tuple[float, float, float, float]:
        chosen = [paths[(k * batch + i) % len(paths)] for i in range(batch)]
        t0 = time.perf_counter()
        imgs = [decode_image(p) for p in chosen]
        t1 = time.perf_counter()
        x = preprocess(imgs, m.input)
        t2 = time.perf_counter()
        probs = backend.probs(x)
        t3 = time.perf_counter()
        idx = predict_labels(probs, pos, thr)
        _ = [(labels[i], float(probs[j, i])) for j, i in enumerate(idx)]
        t4 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3

    samples, wall, parts = _timed_loop(once, cfg)
    stages = np.asarray(parts, dtype=np.float64).mean(axis=0) * 1e3
    return (LatencyStats.from_samples(samples, batch, wall),
            {k: round(float(v), 4) for k, v in zip(("decode", "preprocess", "infer", "postprocess"), stages)})


def _interleaved(loops: dict[str, Callable[[], Any]], cfg: BenchConfig, block: int | None = None,
                 ) -> tuple[dict[str, LatencyStats], int]:
    """Time several batch-1 loops in alternating blocks, so drifting load hits them alike.

    Without ``block``, blocks last about half a second of the slowest loop (1 to 10 calls).
    The loop budget is three durations (or ``iterations`` calls per loop), with the same
    minimum-calls rule as :func:`_timed_loop`.

    Returns:
        (statistics per loop name, the block size used)
    """
    first: dict[str, float] = {}
    for name, fn in loops.items():
        w0 = time.perf_counter()
        for _ in range(max(cfg.warmup, 1)):
            t0 = time.perf_counter()
            fn()
            first[name] = time.perf_counter() - t0
            if cfg.iterations is None and time.perf_counter() - w0 >= cfg.duration_s:
                break
    if block is None:
        block = int(min(10, max(1, 0.5 / max(max(first.values()), 1e-6))))
    samples: dict[str, list[float]] = {k: [] for k in loops}
    budget = cfg.duration_s * 3
    start = time.perf_counter()
    while True:
        for name, fn in loops.items():
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
        n = len(samples[next(iter(loops))])
        el = time.perf_counter() - start
        if cfg.iterations is not None:
            if n >= cfg.iterations:
                break
        elif el >= budget and (n >= cfg.min_iterations or (el >= 5 * budget and n >= 3)):
            break
    return {k: LatencyStats.from_samples(v, 1) for k, v in samples.items()}, block


def measure_speedup(slow, fast, paths: list[Path], cfg: BenchConfig) -> dict[str, Any]:
    """Compute latency of two backends at batch 1 on the same tensor, interleaved.

    Used for eager PyTorch against the fastest CPU artifact: measured in alternating blocks
    rather than minutes apart, the ratio does not depend on what else the machine did.

    Returns:
        ``slow`` and ``fast`` statistics (as dicts), their names, and ``ratio_p50`` (slow / fast).
    """
    xs = {b: {b.manifest.input_name: _tensor_from_images(paths, 1, b.manifest)} for b in (slow, fast)}
    stats, block = _interleaved({"slow": lambda: slow.infer(xs[slow]), "fast": lambda: fast.infer(xs[fast])}, cfg)
    return {"slow": asdict(stats["slow"]), "fast": asdict(stats["fast"]), "block": block,
            "ratio_p50": stats["slow"].p50_ms / stats["fast"].p50_ms,
            "method": f"interleaved blocks of {block} calls, Backend.infer on the same preprocessed tensor, batch 1"}


def measure_overhead(backend, paths: list[Path], threads: int, cfg: BenchConfig) -> dict[str, Any]:
    """edgecrack's ORT CPU path against a bare onnxruntime session, interleaved, at batch 1.

    The bare session loads the same ONNX with the same intra-op thread count and otherwise
    onnxruntime's defaults, and runs the same preprocessed tensor. The three loops (bare,
    edgecrack compute, edgecrack end to end) alternate in short blocks so that load from
    other processes hits all three alike.

    Returns:
        ``bare``, ``compute``, ``e2e`` latency statistics (as dicts) and the ratios.
    """
    import onnxruntime as ort

    m = backend.manifest
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(backend.artifact), so, providers=["CPUExecutionProvider"])
    x = _tensor_from_images(paths, 1, m)
    feeds = {m.input_name: x}
    ours = {m.input_name: x}
    pos, thr = m.positive_index, m.threshold

    def bare() -> None:
        sess.run(None, feeds)

    def compute() -> None:
        backend.infer(ours)

    k_e2e = [0]

    def e2e() -> None:
        k = k_e2e[0] = k_e2e[0] + 1
        img = decode_image(paths[k % len(paths)])
        probs = backend.probs(preprocess(img, m.input))
        predict_labels(probs, pos, thr)

    stats, block = _interleaved({"bare": bare, "compute": compute, "e2e": e2e}, cfg, block=10)
    del sess
    return {
        "artifact": backend.artifact.name, "threads": threads, "batch": 1,
        "method": f"interleaved blocks of {block} calls: bare session.run, edgecrack Backend.infer, edgecrack end to end",
        "bare": asdict(stats["bare"]), "compute": asdict(stats["compute"]), "e2e": asdict(stats["e2e"]),
        "ratio_e2e_p50": stats["e2e"].p50_ms / stats["bare"].p50_ms,
        "ratio_compute_p50": stats["compute"].p50_ms / stats["bare"].p50_ms,
        "bare_library": f"onnxruntime {ort.__version__}",
    }


def _accuracy_probs(backend, data: Path, label_from: str = "folder") -> tuple[AccuracyResult, dict[str, np.ndarray]]:
    from .evaluate import predict_files
    from .runtime import Selection

    m = backend.manifest
    ds = discover(data, label_from, min_classes=1)
    unknown = sorted(set(ds.classes) - set(m.labels))
    if unknown:
        raise DatasetError(f"{data} has classes {unknown} the model does not know (it knows {m.labels})",
                           "benchmark accuracy on folders named after the model's labels (--data)")
    t0 = time.perf_counter()
    preds, skipped = predict_files(Selection(backend), [s.path for s in ds.samples], batch_size=16, label_from=label_from)
    truth = {str(s.path): s.label for s in ds.samples}
    y = np.array([m.labels.index(truth[p.image]) for p in preds], dtype=int)
    probs = np.array([[p.probs[lab] for lab in m.labels] for p in preds], dtype=np.float64).reshape(-1, len(m.labels))
    rep = classification_report(y, probs, m.labels, m.positive_index, m.threshold)
    f1 = rep["per_class"][m.positive_label]["f1"] if m.positive_label in rep["per_class"] else None
    res = AccuracyResult(n=rep["n"], accuracy=rep["accuracy"], roc_auc=rep.get("roc_auc"), f1_positive=f1,
                         threshold=m.threshold, skipped=len(skipped) + len(ds.skipped), seconds=time.perf_counter() - t0)
    return res, {p.image: probs[i] for i, p in enumerate(preds)}


# --------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------
class BenchReporter:
    """Progress hooks; the CLI renders them with rich, the library default is silent."""

    def start(self, total: int) -> None:
        """``total`` measurement steps are planned."""

    def step(self, description: str) -> None:
        """A step starts (``description`` says which)."""

    def advance(self, n: int = 1) -> None:
        """``n`` steps finished (or were skipped)."""

    def message(self, text: str) -> None:
        """A line worth showing (unavailable backend, goal result)."""

    def finish(self) -> None:
        """Measurements are done."""


# --------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------
def _e2e_paths(data: Path, k: int) -> list[Path]:
    imgs = list_images(data)
    if not imgs:
        raise DatasetError(f"no images in {data} for the end-to-end loop", "pass a folder of images with --data")
    if len(imgs) <= k:
        return imgs
    # Evenly spaced so both classes (sorted folders) are in the loop.
    return [imgs[int(i)] for i in np.linspace(0, len(imgs) - 1, k)]


def _steps_per_cell(cfg: BenchConfig) -> int:
    return 2 * len(cfg.batches) + (1 if cfg.accuracy else 0)


def bench(cfg: BenchConfig, reporter: BenchReporter | None = None) -> BenchReport:
    """Benchmark every artifact of a run on every backend this machine has.

    Args:
        cfg: What to measure (see :class:`BenchConfig`).
        reporter: Progress hooks (silent by default).

    Returns:
        The report; write it with :func:`write_report`.

    Raises:
        ArtifactError: No artifact in ``cfg.run``.
        DatasetError: ``cfg.data`` has no images, or labels the model does not know.
        ConfigError: Invalid settings.
    """
    cfg.validate()
    rep = reporter or BenchReporter()
    threads = cfg.threads or usable_cores()
    data = Path(cfg.data) if cfg.data else DEFAULT_DATASET
    arts = artifacts_of_run(cfg.run)
    if cfg.artifacts is not None:
        want = set(cfg.artifacts)
        missing = want - {a.name for a in arts}
        if missing:
            raise ConfigError(f"no artifact named {sorted(missing)} in {cfg.run}",
                              f"artifacts there: {', '.join(a.name for a in arts)}")
        arts = [a for a in arts if a.name in want]
    if cfg.accuracy:
        # Fail before minutes of measurement, not after them.
        classes = set(discover(data, "folder", min_classes=1).classes)
        for a in arts:
            if a.manifest is not None and classes - set(a.manifest.labels):
                raise DatasetError(f"{data} has classes {sorted(classes - set(a.manifest.labels))} that {a.name} does not "
                                   f"know (it knows {a.manifest.labels})",
                                   "benchmark accuracy on folders named after the model's labels (--data), or use --no-accuracy")
    paths = _e2e_paths(data, cfg.e2e_images)
    env = environment()
    plan = [(a, b) for a in arts for b in backends_for(a.family) if cfg.backends is None or b in cfg.backends]
    if not plan:
        raise ConfigError(f"none of the backends {list(cfg.backends or [])} runs the artifacts in {cfg.run}",
                          f"artifacts: {', '.join(a.name + ' (' + a.family + ')' for a in arts)}; backends: {', '.join(BACKENDS)}")
    rep.start(len(plan) * _steps_per_cell(cfg) + 2)
    results: list[CellResult] = []
    probs_of: dict[int, dict[str, np.ndarray]] = {}
    baseline: dict[str, Any] = {}
    notes: list[str] = []
    for art, bname in plan:
        cell = CellResult(art.name, str(art.path), art.kind, art.precision, art.size_bytes, bname, "ok")
        rep.step(f"{art.name} on {bname}: loading")
        why = probe_backend(bname)
        torch_threads = _torch_threads()
        mem = _MemoryProbe()
        t0 = time.perf_counter()
        try:
            if why:
                raise BackendUnavailable(why)
            backend = open_cell_backend(art, bname, threads)
        except BackendUnavailable as e:
            cell.status, cell.reason = "unavailable", e.message
        except ArtifactError as e:
            cell.status, cell.reason = "error", e.message
        if not cell.ok:
            results.append(cell)
            rep.message(f"{art.name} on {bname}: {cell.status}: {cell.reason}")
            rep.advance(_steps_per_cell(cfg))
            continue
        try:
            cell.load_ms = (time.perf_counter() - t0) * 1e3
            mem.loaded()
            cell.info = backend.info()
            for b in cfg.batches:
                rep.step(f"{art.name} on {bname}: batch {b} compute")
                comp = measure_compute(backend, paths, b, cfg)
                rep.advance()
                rep.step(f"{art.name} on {bname}: batch {b} end to end")
                e2e, stages = measure_e2e(backend, paths, b, cfg)
                rep.advance()
                cell.batches.append(BatchResult(b, comp, e2e, stages))
            if cfg.accuracy:
                rep.step(f"{art.name} on {bname}: accuracy on {data.name}")
                cell.accuracy, probs_of[len(results)] = _accuracy_probs(backend, data)
                rep.advance()
            cell.memory = mem.result()
            if (cfg.baseline and "bare_onnxruntime" not in baseline and bname == "onnxruntime-cpu"
                    and art.kind == "onnx" and art.precision == "fp32"):
                rep.step(f"{art.name}: edgecrack vs bare onnxruntime (batch 1, interleaved)")
                baseline["bare_onnxruntime"] = measure_overhead(backend, paths, threads, cfg)
        finally:
            backend.close()
            del backend
            _restore_torch_threads(torch_threads)
        results.append(cell)
    rep.advance()
    if cfg.baseline:
        baseline.update(_torch_baseline(results, {(a.name, b): a for a, b in plan}, paths, threads, cfg, rep))
    rep.advance()
    rep.finish()
    _agreement(results, probs_of)
    report = BenchReport(schema=SCHEMA, edgecrack_version=__version__,
                         created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                         run=str(cfg.run), config={**cfg.to_dict(), "threads_resolved": threads, "data_resolved": str(data),
                                                   "e2e_files": len(paths)},
                         environment=env, results=results, baseline=baseline, notes=notes)
    report.environment["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report.goals = goals_of(report)
    notes += _method_notes(report, data)
    if cfg.train_json:
        report.training = training_section(cfg.train_json)
    report.summary = summarize(report)
    return report


def _torch_threads() -> int | None:
    import sys

    t = sys.modules.get("torch")
    return t.get_num_threads() if t is not None else None


def _restore_torch_threads(n: int | None) -> None:
    # TorchBackend sets torch's process-wide thread count; a benchmark must not leave it changed.
    import sys

    t = sys.modules.get("torch")
    if n is not None and t is not None and t.get_num_threads() != n:
        t.set_num_threads(n)


def _torch_baseline(results: list[CellResult], arts: dict[tuple[str, str], ArtifactRef], paths: list[Path],
                    threads: int, cfg: BenchConfig, rep: BenchReporter) -> dict[str, Any]:
    torch_cell = next((c for c in results if c.ok and c.backend == "torch-cpu" and c.batch(1)), None)
    cpu = [c for c in results if c.ok and c.backend == "onnxruntime-cpu" and c.batch(1)]
    if torch_cell is None or not cpu:
        return {}
    fast = min(cpu, key=lambda c: c.batch(1).compute.p50_ms)
    rep.step(f"eager PyTorch vs {fast.label} (batch 1, interleaved)")
    prev = _torch_threads()
    tb = open_cell_backend(arts[(torch_cell.artifact, torch_cell.backend)], "torch-cpu", threads)
    fb = open_cell_backend(arts[(fast.artifact, fast.backend)], fast.backend, threads)
    try:
        out = measure_speedup(tb, fb, paths, cfg)
    finally:
        tb.close()
        fb.close()
        _restore_torch_threads(prev)
    return {"eager_torch": {"slow_cell": torch_cell.label, "fast_cell": fast.label, "threads": threads, **out}}


def _reference_index(results: list[CellResult]) -> int | None:
    """The FP32 reference: model.onnx on onnxruntime-cpu, else any FP32 ONNX, else the checkpoint."""
    order = [
        lambda c: c.backend == "onnxruntime-cpu" and c.kind == "onnx" and c.precision == "fp32",
        lambda c: c.kind == "onnx" and c.precision == "fp32",
        lambda c: c.kind == "checkpoint",
    ]
    for pred in order:
        for i, c in enumerate(results):
            if c.ok and c.accuracy is not None and pred(c):
                return i
    return None


def _agreement(results: list[CellResult], probs_of: dict[int, dict[str, np.ndarray]]) -> None:
    ref = _reference_index(results)
    if ref is None or ref not in probs_of:
        return
    rp = probs_of[ref]
    m_ref = results[ref]
    for i, c in enumerate(results):
        if i not in probs_of or c.accuracy is None:
            continue
        common = [k for k in probs_of[i] if k in rp]
        if not common:
            continue
        a = np.stack([probs_of[i][k] for k in common])
        b = np.stack([rp[k] for k in common])
        thr = c.accuracy.threshold
        pos = None
        # Labels are compared at each artifact's own threshold: that is what a user would get.
        man = _manifest_for(c)
        if man is not None:
            pos = man.positive_index
        la = predict_labels(a, pos, thr)
        lb = predict_labels(b, pos, m_ref.accuracy.threshold if m_ref.accuracy else thr)
        c.accuracy.agreement = float((la == lb).mean())
        c.accuracy.max_abs_prob_diff = float(np.abs(a - b).max())


def _manifest_for(c: CellResult) -> Manifest | None:
    p = Path(c.path)
    try:
        return read_manifest(p.parent if c.kind == "checkpoint" else p)
    except EdgecrackError:
        return None


# --------------------------------------------------------------------------------------
# goals and summary
# --------------------------------------------------------------------------------------
def _smallest_batch(report: BenchReport) -> int | None:
    bs = sorted({b.batch for c in report.results if c.ok for b in c.batches})
    return bs[0] if bs else None


def goals_of(report: BenchReport) -> list[Goal]:
    """The two ratio goals of the project, measured from one report.

    - ``overhead_vs_bare_onnxruntime``: edgecrack's end-to-end ORT CPU p50 at batch 1
      divided by a bare onnxruntime session's p50 on the same ONNX and the same preprocessed
      tensor (goal <= 1.15).
    - ``speedup_vs_eager_torch``: eager PyTorch's compute p50 at batch 1 divided by the
      fastest CPU artifact's (goal >= 3), same threads.
    """
    goals: list[Goal] = []
    bl = report.baseline.get("bare_onnxruntime")
    if bl:
        r = bl["ratio_e2e_p50"]
        goals.append(Goal("overhead_vs_bare_onnxruntime", r, OVERHEAD_GOAL, "max", r <= OVERHEAD_GOAL,
                          "edgecrack end-to-end p50 (decode + preprocess + Backend.infer + postprocess) / bare "
                          "onnxruntime session.run p50 on the same preprocessed tensor; ORT CPU, batch 1, same threads",
                          {"e2e_p50_ms": bl["e2e"]["p50_ms"], "bare_p50_ms": bl["bare"]["p50_ms"],
                           "compute_p50_ms": bl["compute"]["p50_ms"], "ratio_compute_p50": bl["ratio_compute_p50"],
                           "artifact": bl["artifact"], "threads": bl["threads"]}))
    else:
        goals.append(Goal("overhead_vs_bare_onnxruntime", None, OVERHEAD_GOAL, "max", None,
                          "needs model.onnx on onnxruntime-cpu with the baseline enabled", {"reason": "not measured"}))
    torch_cell = next((c for c in report.results if c.ok and c.backend == "torch-cpu" and c.batch(1)), None)
    cpu = [c for c in report.results if c.ok and c.backend in ("onnxruntime-cpu",) and c.batch(1)]
    et = report.baseline.get("eager_torch")
    if et:
        r = et["ratio_p50"]
        goals.append(Goal("speedup_vs_eager_torch", r, TORCH_SPEEDUP_GOAL, "min", r >= TORCH_SPEEDUP_GOAL,
                          "eager PyTorch compute p50 / fastest CPU artifact compute p50 (Backend.infer, same tensor), "
                          "batch 1, same threads, interleaved",
                          {"torch_p50_ms": et["slow"]["p50_ms"], "fastest": et["fast_cell"], "fastest_p50_ms": et["fast"]["p50_ms"],
                           "threads": et["threads"], "method": et["method"]}))
    elif torch_cell and cpu:
        # Without the interleaved baseline, fall back to the separate loops (minutes apart).
        best = min(cpu, key=lambda c: c.batch(1).compute.p50_ms)
        t, f = torch_cell.batch(1).compute.p50_ms, best.batch(1).compute.p50_ms
        goals.append(Goal("speedup_vs_eager_torch", t / f, TORCH_SPEEDUP_GOAL, "min", t / f >= TORCH_SPEEDUP_GOAL,
                          "eager PyTorch compute p50 / fastest CPU artifact compute p50, batch 1, same threads, "
                          "from the separate per-backend loops",
                          {"torch_p50_ms": t, "fastest": best.label, "fastest_p50_ms": f,
                           "threads": report.config.get("threads_resolved")}))
    else:
        why = "no torch-cpu measurement at batch 1" if not torch_cell else "no CPU artifact measured at batch 1"
        goals.append(Goal("speedup_vs_eager_torch", None, TORCH_SPEEDUP_GOAL, "min", None,
                          "eager PyTorch compute p50 / fastest CPU artifact compute p50, batch 1", {"reason": why}))
    return goals


def summarize(report: BenchReport) -> dict[str, Any]:
    """The five-second answer: the fastest backend within the accuracy budget, and by how much.

    "Fastest" is the lowest compute p50 per image at the smallest measured batch; a cell is
    within budget when its accuracy is at most ``accuracy_budget`` below the reference's
    (the FP32 ONNX on onnxruntime-cpu, else the checkpoint). Without accuracy measurements
    every measured cell qualifies and the summary says so.
    """
    budget = float(report.config.get("accuracy_budget", 0.01))
    ok = [c for c in report.results if c.ok and c.batches]
    lines: list[str] = []
    out: dict[str, Any] = {"lines": lines, "fastest": None, "runner_up": None, "best_throughput": None,
                           "over_budget": [], "unavailable": [c.label for c in report.results if not c.ok]}
    if not ok:
        lines.append("nothing could be measured here (every backend unavailable; see the table)")
        return out
    b0 = _smallest_batch(report)
    ref_i = _reference_index(report.results)
    ref = report.results[ref_i] if ref_i is not None else None
    if ref is not None:
        floor = ref.accuracy.accuracy - budget
        within = [c for c in ok if c.accuracy is not None and c.accuracy.accuracy >= floor - 1e-12]
        out["over_budget"] = [c.label for c in ok if c not in within]
        out["reference"] = {"cell": ref.label, "accuracy": ref.accuracy.accuracy, "budget": budget}
    else:
        within = ok
    cand = [c for c in within if c.batch(b0)]
    if not cand:
        lines.append(f"no measured backend is within the accuracy budget of {budget:.3f}")
        return out
    cand.sort(key=lambda c: c.batch(b0).compute.per_image_ms)
    best = cand[0]
    bb = best.batch(b0)
    out["fastest"] = {"cell": best.label, "batch": b0, "compute_p50_ms": bb.compute.p50_ms,
                      "e2e_p50_ms": bb.e2e.p50_ms if bb.e2e else None}
    acc = f", accuracy {best.accuracy.accuracy:.3f}" if best.accuracy else ""
    e2e = f", {bb.e2e.p50_ms:.2f} ms end to end" if bb.e2e else ""
    lines.append(f"fastest within the accuracy budget: {best.label} — {bb.compute.p50_ms:.2f} ms p50 at batch {b0}{e2e}{acc}")
    if len(cand) > 1:
        ru = cand[1]
        r = ru.batch(b0).compute.per_image_ms / bb.compute.per_image_ms
        out["runner_up"] = {"cell": ru.label, "ratio": r}
        lines.append(f"  {r:.2f}x faster than the runner-up {ru.label} ({ru.batch(b0).compute.p50_ms:.2f} ms)")
    slowest = max(ok, key=lambda c: c.batch(b0).compute.per_image_ms if c.batch(b0) else 0)
    if slowest is not best and slowest is not cand[min(1, len(cand) - 1)] and slowest.batch(b0):
        r = slowest.batch(b0).compute.per_image_ms / bb.compute.per_image_ms
        out["vs_slowest"] = {"cell": slowest.label, "ratio": r}
        lines.append(f"  {r:.2f}x faster than the slowest, {slowest.label}")
    thr = max(((c, b) for c in cand for b in c.batches), key=lambda cb: cb[1].compute.images_per_s)
    out["best_throughput"] = {"cell": thr[0].label, "batch": thr[1].batch, "images_per_s": thr[1].compute.images_per_s}
    lines.append(f"best throughput: {thr[0].label} at batch {thr[1].batch}: {thr[1].compute.images_per_s:.0f} images/s")
    if ref is None:
        lines.append("accuracy was not measured: speed alone ranks the backends")
    elif out["over_budget"]:
        lines.append(f"over the accuracy budget ({budget:.3f} below {ref.label}): {', '.join(out['over_budget'])}")
    for g in report.goals:
        if g.value is None:
            lines.append(f"goal {g.name}: not measured ({g.detail.get('reason', '')})")
        else:
            op = "<=" if g.direction == "max" else ">="
            lines.append(f"goal {g.name}: {g.value:.2f}x (goal {op} {g.goal:g}x): {'met' if g.met else 'NOT met'}")
    if out["unavailable"]:
        lines.append(f"{len(out['unavailable'])} backend(s) could not run here (reasons in the table)")
    return out


def _method_notes(report: BenchReport, data: Path) -> list[str]:
    cfg = report.config
    loop = (f"{cfg['iterations']} timed calls" if cfg.get("iterations") else
            f"at least {cfg['duration_s']:g} s and {cfg['min_iterations']} calls (3 when that takes over "
            f"{5 * cfg['duration_s']:g} s)")
    notes = [
        f"Each loop: up to {cfg['warmup']} warm-up calls (at most one loop duration), then {loop}; latency is per call (a whole batch), "
        "throughput is images per second of the timed loop.",
        "compute = Backend.infer on a prepared uint8 tensor of real images; end to end = decode the files "
        "(from the page cache after the first pass) + preprocess + infer + threshold to labels.",
        f"All backends run with {cfg['threads_resolved']} CPU thread(s) for intra-op work.",
        "Memory: see each row's memory.method; the peak includes the runtime's arena, activations and "
        "the decoded images, not the library's import.",
        f"Accuracy on {data} at each manifest's threshold; if the model was trained on these images it is "
        "not a held-out accuracy, but it still exposes any loss between artifacts.",
    ]
    la, lb = report.environment.get("loadavg"), report.environment.get("loadavg_end")
    cores = (report.environment.get("cpu") or {}).get("usable_cores") or 1
    if la and lb and max(la[0], lb[0]) > cores + 0.5:
        notes.append(f"The machine was busy (load average {la[0]:.1f} at start, {lb[0]:.1f} at end on {cores} cores): "
                     "absolute numbers are pessimistic; ratios measured side by side are more robust. Multi-threaded "
                     "runtimes suffer most from such oversubscription (a descheduled worker thread stalls every "
                     "parallel operator; PyTorch's OpenMP more than onnxruntime's spinning pool): compare with "
                     "--threads 1 or measure on an idle machine.")
    notes += [str(n) for n in cfg.get("notes") or []]
    return notes


# --------------------------------------------------------------------------------------
# training section (from benchmarks/bench_train.py)
# --------------------------------------------------------------------------------------
def training_section(train_json: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Fold a training benchmark (schema ``edgecrack.bench.train/1``) into the report format.

    Args:
        train_json: Path of ``train.json`` or its parsed content:
            ``{"schema": "edgecrack.bench.train/1", "machine": {...}, "cv": {"folds": 5,
            "accuracy_mean": x, "accuracy_folds": [...]}, "wall_time_s": {"cold": x, "warm": y},
            "bottleneck_images_per_s": z}``.

    Returns:
        The section stored under ``training`` in a bench report: the fields above plus
        ``accuracy_std``, ``accuracy_min``/``max`` and ``source``.

    Raises:
        ConfigError: Unreadable file, other schema or missing fields.
    """
    source = "<dict>"
    if not isinstance(train_json, dict):
        p = Path(train_json)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"training benchmark not found: {p}", "run `make bench` (benchmarks/bench_train.py) first")
        try:
            train_json = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p} is not valid JSON ({e})") from None
    d = train_json
    if not isinstance(d, dict) or d.get("schema") != TRAIN_SCHEMA:
        raise ConfigError(f"{source} is not a training benchmark (schema {d.get('schema') if isinstance(d, dict) else None!r}, "
                          f"expected {TRAIN_SCHEMA})", "pass the train.json benchmarks/bench_train.py writes")
    try:
        cv = dict(d["cv"])
        folds = [float(a) for a in cv.get("accuracy_folds", [])]
        wall = {k: float(v) for k, v in d["wall_time_s"].items()}
        sec = {"schema": TRAIN_SCHEMA, "source": source, "machine": d.get("machine", {}),
               "cv": {**cv, "folds": int(cv.get("folds", len(folds))), "accuracy_mean": float(cv["accuracy_mean"]),
                      "accuracy_folds": folds},
               "wall_time_s": wall, "bottleneck_images_per_s": float(d["bottleneck_images_per_s"])}
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{source}: malformed training benchmark ({type(e).__name__}: {e})",
                          "regenerate it with benchmarks/bench_train.py") from None
    if folds:
        sec["cv"]["accuracy_std"] = float(np.std(folds))
        sec["cv"]["accuracy_min"], sec["cv"]["accuracy_max"] = min(folds), max(folds)
    for k in d:
        if k not in sec:
            sec[k] = d[k]  # later additions travel along unchanged
    return sec


def training_markdown(section: dict[str, Any]) -> str:
    """The training section as Markdown (used inside :func:`report_markdown`)."""
    cv, wall = section["cv"], section["wall_time_s"]
    lines = ["## Training", "", f"Source: `{section.get('source', '?')}`", "", "| measure | value |", "|---|---|"]
    folds = ", ".join(f"{a:.3f}" for a in cv.get("accuracy_folds", []))
    std = f" ± {cv['accuracy_std']:.3f}" if "accuracy_std" in cv else ""
    lines.append(f"| {cv['folds']}-fold CV accuracy | {cv['accuracy_mean']:.3f}{std} ({folds}) |")
    for k, v in wall.items():
        lines.append(f"| wall time, {k} cache | {v:.1f} s |")
    lines.append(f"| bottleneck extraction | {section['bottleneck_images_per_s']:.1f} images/s |")
    mach = section.get("machine") or {}
    if mach:
        lines += ["", "Machine: " + ", ".join(f"{k}: {v}" for k, v in mach.items() if not isinstance(v, (dict, list)))]
    return "\n".join(lines) + "\n"


def fold_training(report_path: str | Path, train_json: str | Path, out_dir: str | Path | None = None) -> BenchReport:
    """Add a training benchmark to an existing report and rewrite its JSON/Markdown/PNG.

    Args:
        report_path: An existing ``bench.json``.
        train_json: The ``train.json`` of ``benchmarks/bench_train.py``.
        out_dir: Where to write (default: the report's folder).
    """
    report = read_report(report_path)
    report.training = training_section(train_json)
    report.summary = summarize(report)
    write_report(report, out_dir or Path(report_path).parent)
    return report


# --------------------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------------------
@dataclass
class ComparisonRow:
    """One metric of one artifact x backend (x batch) in two reports."""

    cell: str
    batch: int | None
    metric: str
    old: float | None
    new: float | None
    ratio: float | None
    regressed: bool
    note: str = ""


@dataclass
class Comparison:
    """A new report against an old one.

    Attributes:
        rows: Compared metrics.
        tolerance: Allowed relative slow-down of latency (and drop of throughput).
        accuracy_tolerance: Allowed absolute accuracy drop.
        notes: E.g. the reports come from different machines.
    """

    rows: list[ComparisonRow]
    tolerance: float
    accuracy_tolerance: float
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[ComparisonRow]:
        return [r for r in self.rows if r.regressed]

    @property
    def passed(self) -> bool:
        return not self.regressions

    def to_dict(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "accuracy_tolerance": self.accuracy_tolerance, "passed": self.passed,
                "notes": self.notes, "rows": [asdict(r) for r in self.rows]}


def compare_reports(old: BenchReport, new: BenchReport, tolerance: float = 0.15,
                    accuracy_tolerance: float = 0.01) -> Comparison:
    """Ratios of a new report against an old one, for CI-style regression checks.

    Latency (compute and end-to-end p50) regresses when ``new/old > 1 + tolerance``,
    throughput when ``new/old < 1 / (1 + tolerance)``, accuracy when it drops by more than
    ``accuracy_tolerance``. A cell measured in the old report that is missing or no longer
    runs in the new one is a regression too.

    Raises:
        ConfigError: Negative tolerance, or nothing in common to compare.
    """
    if tolerance < 0 or accuracy_tolerance < 0:
        raise ConfigError(f"tolerances must not be negative (got {tolerance}, {accuracy_tolerance})")
    rows: list[ComparisonRow] = []
    notes: list[str] = []
    oc, nc = old.environment.get("cpu", {}).get("model"), new.environment.get("cpu", {}).get("model")
    if oc != nc:
        notes.append(f"different CPUs: old {oc!r}, new {nc!r}; ratios compare machines, not code")
    og = [g.get("name") for g in old.environment.get("gpu", [])]
    ng = [g.get("name") for g in new.environment.get("gpu", [])]
    if og != ng:
        notes.append(f"different GPUs: old {og}, new {ng}")
    hi = 1.0 + tolerance
    for o in old.results:
        n = new.cell(o.artifact, o.backend)
        if not o.ok:
            continue
        if n is None or not n.ok:
            why = "not in the new report" if n is None else f"{n.status}: {n.reason}"
            rows.append(ComparisonRow(o.label, None, "status", None, None, None, True, why))
            continue
        for ob in o.batches:
            nb = n.batch(ob.batch)
            if nb is None:
                continue
            pairs = [("compute_p50_ms", ob.compute.p50_ms, nb.compute.p50_ms, "latency"),
                     ("images_per_s", ob.compute.images_per_s, nb.compute.images_per_s, "throughput")]
            if ob.e2e and nb.e2e:
                pairs.append(("e2e_p50_ms", ob.e2e.p50_ms, nb.e2e.p50_ms, "latency"))
            for metric, a, b, kind in pairs:
                ratio = b / a if a else None
                bad = ratio is not None and (ratio > hi if kind == "latency" else ratio < 1.0 / hi)
                rows.append(ComparisonRow(o.label, ob.batch, metric, a, b, ratio, bad))
        if o.accuracy and n.accuracy:
            d = n.accuracy.accuracy - o.accuracy.accuracy
            rows.append(ComparisonRow(o.label, None, "accuracy", o.accuracy.accuracy, n.accuracy.accuracy,
                                      n.accuracy.accuracy / o.accuracy.accuracy if o.accuracy.accuracy else None,
                                      d < -accuracy_tolerance - 1e-12, f"{d:+.3f}"))
    if not rows:
        raise ConfigError("the two reports have no measured artifact x backend in common",
                          "compare reports of the same run layout (same artifact names and backends)")
    return Comparison(rows, tolerance, accuracy_tolerance, notes)


# --------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------
def _f(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def report_markdown(report: BenchReport) -> str:
    """The report as Markdown: summary, goals, the main table, stages, environment, notes."""
    env = report.environment
    cpu = env.get("cpu") or {}
    v = env.get("versions") or {}
    cfg = report.config
    out = [f"# edgecrack bench: {Path(report.run).name}", "",
           f"{report.created} · edgecrack {report.edgecrack_version} · schema `{report.schema}`", "",
           "## Summary", ""]
    out += [f"- {line.strip()}" for line in report.summary.get("lines", [])]
    out += ["", "## Goals", "", "| goal | measured | target | met | definition |", "|---|---|---|---|---|"]
    for g in report.goals:
        op = "<=" if g.direction == "max" else ">="
        met = "-" if g.met is None else ("yes" if g.met else "**no**")
        val = f"{g.value:.2f}x" if g.value is not None else f"not measured ({g.detail.get('reason', '')})"
        out.append(f"| {g.name} | {val} | {op} {g.goal:g}x | {met} | {g.definition} |")
    bl = report.baseline.get("bare_onnxruntime")
    et = report.baseline.get("eager_torch")
    if et:
        out += ["", f"Speed-up detail ({et['threads']} threads, {et['method']}): {et['slow_cell']} p50 "
                    f"{et['slow']['p50_ms']:.2f} ms (n={et['slow']['n']}), {et['fast_cell']} p50 {et['fast']['p50_ms']:.2f} ms "
                    f"(n={et['fast']['n']}): {et['ratio_p50']:.2f}x."]
    if bl:
        out += ["", f"Overhead detail (batch 1, {bl['threads']} threads, {bl['method']}): bare onnxruntime "
                    f"p50 {bl['bare']['p50_ms']:.2f} ms, edgecrack Backend.infer p50 {bl['compute']['p50_ms']:.2f} ms "
                    f"({bl['ratio_compute_p50']:.3f}x), edgecrack end to end p50 {bl['e2e']['p50_ms']:.2f} ms "
                    f"({bl['ratio_e2e_p50']:.3f}x)."]
    out += ["", "## Results", "",
            "Latency is per call (one batch), in ms; throughput in images/s; memory in MiB.", "",
            "| artifact | backend | precision | size MiB | batch | compute p50 | p90 | p99 | max | images/s "
            "| e2e p50 | e2e p99 | e2e images/s | accuracy | agreement | load ms | peak mem |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in report.results:
        size = f"{c.size_bytes / 2**20:.1f}"
        if not c.ok:
            out.append(f"| {c.artifact} | {c.backend} | {c.precision} | {size} | | {c.status}: {_md(c.reason)} "
                       "| | | | | | | | | | | |")
            continue
        acc = _f(c.accuracy.accuracy, ".3f") if c.accuracy else "-"
        agr = _f(c.accuracy.agreement, ".3f") if c.accuracy else "-"
        peak = _f(c.memory.get("peak_delta_mb"), ".0f")
        for i, b in enumerate(c.batches):
            first = i == 0
            e = b.e2e
            out.append(
                f"| {c.artifact if first else ''} | {c.backend if first else ''} | {c.precision if first else ''} "
                f"| {size if first else ''} | {b.batch} | {b.compute.p50_ms:.2f} | {b.compute.p90_ms:.2f} "
                f"| {b.compute.p99_ms:.2f} | {b.compute.max_ms:.2f} | {b.compute.images_per_s:.1f} "
                f"| {_f(e.p50_ms if e else None)} | {_f(e.p99_ms if e else None)} | {_f(e.images_per_s if e else None, '.1f')} "
                f"| {acc if first else ''} | {agr if first else ''} | {_f(c.load_ms, '.0f') if first else ''} "
                f"| {peak if first else ''} |")
    measured = [c for c in report.results if c.ok and c.batches]
    if measured:
        out += ["", "### End-to-end stages (mean ms per call)", "",
                "| artifact | backend | batch | decode | preprocess | infer | postprocess | n |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for c in measured:
            for b in c.batches:
                s = b.stages_ms
                out.append(f"| {c.artifact} | {c.backend} | {b.batch} | {_f(s.get('decode'))} | {_f(s.get('preprocess'))} "
                           f"| {_f(s.get('infer'))} | {_f(s.get('postprocess'), '.3f')} | {b.e2e.n if b.e2e else '-'} |")
        out += ["", "### Accuracy", "", "| artifact | backend | n | accuracy | ROC-AUC | F1 (positive) | threshold "
                "| agreement with reference | max abs prob diff |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for c in measured:
            a = c.accuracy
            if a is None:
                continue
            out.append(f"| {c.artifact} | {c.backend} | {a.n} | {a.accuracy:.3f} | {_f(a.roc_auc, '.3f')} "
                       f"| {_f(a.f1_positive, '.3f')} | {_f(a.threshold, '.3f')} | {_f(a.agreement, '.3f')} "
                       f"| {_f(a.max_abs_prob_diff, '.2e')} |")
        out += ["", "### Backends", "", "| artifact | backend | library | device | precision | providers | threads |",
                "|---|---|---|---|---|---|---|"]
        for c in measured:
            i = c.info
            out.append(f"| {c.artifact} | {c.backend} | {i.get('library', '-')} | {i.get('device', '-')} "
                       f"| {i.get('precision', '-')} | {', '.join(i.get('providers') or []) or '-'} | {i.get('threads', '-')} |")
    if report.training:
        out += ["", training_markdown(report.training).rstrip()]
    gpus = "; ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory')})" for g in env.get("gpu") or []) or "none"
    jet = env.get("jetson")
    out += ["", "## Environment", "",
            f"- CPU: {cpu.get('model', '?')}, {cpu.get('physical_cores') or '?'} physical / {cpu.get('logical_cores', '?')} "
            f"logical cores, {cpu.get('usable_cores', '?')} usable" + (f", governor {cpu['governor']}" if cpu.get("governor") else ""),
            f"- Memory: {env.get('memory_gb', '?')} GiB; OS: {env.get('os', '?')}; Python {env.get('python', '?')}",
            f"- GPU: {gpus}"]
    if jet:
        out.append(f"- Jetson: {jet.get('model')}, {jet.get('l4t')}, power mode: {_md(jet.get('power_mode') or 'unknown')}")
    out.append("- Versions: " + ", ".join(f"{k} {v[k]}" for k in ("edgecrack", "numpy", "opencv", "onnxruntime", "torch",
                                                                   "tensorrt", "pycuda") if v.get(k)))
    if v.get("onnxruntime_providers"):
        out.append(f"- onnxruntime providers: {', '.join(v['onnxruntime_providers'])}")
    if env.get("loadavg"):
        out.append(f"- Load average at start: {', '.join(f'{x:.2f}' for x in env['loadavg'])}"
                   + (f"; at end: {', '.join(f'{x:.2f}' for x in env['loadavg_end'])}" if env.get("loadavg_end") else ""))
    out += ["", "## Configuration", "", "```json", json.dumps(cfg, indent=2), "```"]
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def _md(s: str | None) -> str:
    return (s or "").replace("|", "\\|").replace("\n", " ")


def write_plots(report: BenchReport, path: str | Path) -> str | None:
    """Latency distribution per backend (smallest batch) and throughput vs batch, as one PNG.

    matplotlib is imported here only; without it nothing is written.

    Returns:
        None when written, else the reason the plots were skipped.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "plots skipped: matplotlib is not installed (pip install matplotlib)"
    cells = [c for c in report.results if c.ok and c.batches]
    if not cells:
        return "plots skipped: nothing was measured"
    b0 = _smallest_batch(report)
    fig = Figure(figsize=(13, 0.9 * max(3, 2 * len(cells)) + 1.5))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    data, names = [], []
    for c in cells:
        b = c.batch(b0)
        if b is None:
            continue
        data.append(b.compute.samples_ms)
        names.append(f"{c.label}\ncompute")
        if b.e2e:
            data.append(b.e2e.samples_ms)
            names.append(f"{c.label}\nend to end")
    import matplotlib

    # matplotlib 3.10 replaced vert=False by orientation="horizontal" (vert is deprecated there).
    horiz = ({"orientation": "horizontal"} if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10)
             else {"vert": False})
    ax1.boxplot(data, whis=(1, 99), showmeans=False, flierprops={"markersize": 2, "alpha": 0.4}, **horiz)
    ax1.set_yticks(range(1, len(names) + 1), names, fontsize=7)
    ax1.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax1.xaxis.set_major_formatter(plain)
    ax1.xaxis.set_minor_formatter(plain)
    ax1.tick_params(axis="x", which="both", labelsize=7)
    ax1.set_xlabel(f"latency per call at batch {b0} (ms, log scale); box p25-p75, whiskers p1-p99")
    ax1.set_title("Latency distribution")
    ax1.invert_yaxis()
    for c in cells:
        bs = [b.batch for b in c.batches]
        ax2.plot(bs, [b.compute.images_per_s for b in c.batches], marker="o", label=f"{c.label} (compute)")
        if all(b.e2e for b in c.batches):
            ax2.plot(bs, [b.e2e.images_per_s for b in c.batches], marker="x", linestyle="--", label=f"{c.label} (e2e)")
    ax2.set_xscale("log", base=2)
    ticks = sorted({b.batch for c in cells for b in c.batches})
    ax2.set_xticks(ticks, [str(t) for t in ticks])
    ax2.minorticks_off()
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("images / s")
    ax2.set_title("Throughput vs batch")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    cpu = report.environment.get("cpu") or {}
    fig.suptitle(f"edgecrack bench · {cpu.get('model', '?')} · {report.config.get('threads_resolved')} threads", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return None


def write_report(report: BenchReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and ``bench.png`` (atomically) into ``out_dir``.

    Returns:
        The paths written, by kind (``json``, ``markdown``, ``png`` when plotted).
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    why = write_plots(report, d / "bench.png")
    if why:
        report.notes = [n for n in report.notes if not n.startswith("plots skipped")] + [why]
    else:
        paths["png"] = d / "bench.png"
    paths["json"] = atomic_write_json(d / "bench.json", report.to_dict())
    paths["markdown"] = atomic_write_text(d / "bench.md", report_markdown(report))
    return paths

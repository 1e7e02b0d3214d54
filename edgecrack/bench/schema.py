"""The report data model, JSON schema ``edgecrack.bench/1``, and reading it back.

Fields are only added within a major version; readers ignore unknown fields and refuse a
report with a newer major, naming the version that wrote it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ArtifactError, ConfigError
from .timing import LatencyStats
from ..io import read_json

SCHEMA = "edgecrack.bench/1"
SCHEMA_MAJOR = 1
TRAIN_SCHEMA = "edgecrack.bench.train/1"


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
        backend: Backend name (:mod:`edgecrack.runtime.registry`).
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
        config: The resolved :class:`~edgecrack.bench.config.BenchConfig`.
        environment: Machine, accelerator and library versions (:func:`edgecrack.platform.environment`).
        results: One entry per artifact x backend.
        baseline: Interleaved side-by-side measurements behind the goals: ``bare_onnxruntime``
            (a bare session vs edgecrack's path) and ``eager_torch`` (PyTorch vs the fastest
            CPU artifact).
        goals: The ratios the project reports against.
        summary: The five-second answer: fastest within the accuracy budget, and by how much.
        training: Training benchmark section (:func:`~edgecrack.bench.training.training_section`), when folded in.
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
    return BenchReport.from_dict(read_json(p, "pass a bench.json written by `edgecrack bench`"), str(p))

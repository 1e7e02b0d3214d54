"""A run's artifacts, typed: what is in a run folder, where each variant lives, what an engine was built for.

One home for the file layout every command shares::

    runs/deck/
      checkpoint.safetensors + manifest.json     PyTorch (training side)
      model.onnx (+ .json)                       FP32, the reference
      model.fp16.onnx, model.qdq.onnx            explicit precision for TensorRT (edgecrack export --precision)
      model.int8.onnx                            onnxruntime CPU INT8 (build-engine --target cpu)
      model.fp16.engine (+ .json)                TensorRT plans with their sidecar (also .plan / .trt)

and for what an engine's manifest records about the machine it was built for
(:class:`EngineFacts`), so no module reads that from an untyped dict by key.
Torch-free; reads manifests, never loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .io import sha256_file
from .manifest import Manifest, read_manifest

CHECKPOINT = "checkpoint.safetensors"
FP32_ONNX = "model.onnx"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: Artifact families: which runtime library can run the file.
FAMILIES = ("checkpoint", "onnx", "engine")
#: When several engines sit next to an ONNX model, ``auto`` tries them in this order.
ENGINE_PRECISION_ORDER = ("fp16", "int8", "fp32")
#: The file name infix of each explicit-precision ONNX variant.
_PRECISION_INFIX = {"fp16": "fp16", "int8": "qdq"}


def is_engine(path: str | Path) -> bool:
    """A TensorRT plan by its suffix (``.engine``, ``.plan``, ``.trt``)."""
    return Path(path).suffix.lower() in ENGINE_SUFFIXES


def family_of(path: str | Path) -> str | None:
    """``checkpoint``, ``onnx`` or ``engine`` by file name; None for anything else."""
    p = Path(path)
    if p.suffix == ".safetensors":
        return "checkpoint"
    if p.suffix.lower() == ".onnx":
        return "onnx"
    return "engine" if is_engine(p) else None


def precision_of(manifest: Manifest) -> str:
    """``fp32``, ``fp16`` or ``int8``: the manifest's recorded precision, else by its kind."""
    p = manifest.extra.get("precision")
    if p:
        return str(p)
    return "int8" if manifest.kind == "onnx-int8" else "fp32"


@dataclass(frozen=True)
class EngineFacts:
    """What a TensorRT engine's sidecar records about how and where it was built.

    Attributes:
        precision: ``fp32``, ``fp16`` or ``int8``.
        tensorrt_version: TensorRT release that built the plan.
        gpu_name: CUDA device name it was built on.
        compute_capability: ``major.minor`` of that device.
        onnx_sha256: sha256 of the ONNX it was built from (the manifest's ``parent`` for older sidecars).
        onnx_file: Name of that ONNX file.
        plan_bytes: Size of the plan when written.
        plan_sha256: sha256 of the plan when written.
        calibration_hash: Calibration set identity (INT8).
        build_seconds: How long the build took.
    """

    precision: str | None = None
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    onnx_sha256: str | None = None
    onnx_file: str | None = None
    plan_bytes: int | None = None
    plan_sha256: str | None = None
    calibration_hash: str | None = None
    build_seconds: float | None = None

    @classmethod
    def from_manifest(cls, m: Manifest) -> "EngineFacts":
        """The facts of an engine manifest (fields it lacks are None)."""
        ex: dict[str, Any] = m.extra
        cc = ex.get("compute_capability")
        nb = ex.get("plan_bytes")
        return cls(precision=ex.get("precision"), tensorrt_version=_str(ex.get("tensorrt_version")),
                   gpu_name=_str(ex.get("gpu_name")), compute_capability=None if cc is None else str(cc),
                   onnx_sha256=ex.get("onnx_sha256") or m.parent, onnx_file=ex.get("onnx_file"),
                   plan_bytes=None if nb is None else int(nb), plan_sha256=ex.get("plan_sha256"),
                   calibration_hash=ex.get("calibration_hash"), build_seconds=ex.get("build_seconds"))

    def built_for(self) -> str:
        """``TensorRT 10.3.0 on Orin (sm 8.7)``."""
        return f"TensorRT {self.tensorrt_version or '?'} on {self.gpu_name or '?'} (sm {self.compute_capability or '?'})"


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


@dataclass
class Artifact:
    """One artifact file of a run and its manifest.

    Attributes:
        path: The file (the checkpoint's manifest is the run folder's ``manifest.json``).
        family: ``checkpoint``, ``onnx`` or ``engine``.
        manifest: Its manifest, None when unreadable (``error`` says why).
        error: Why the manifest could not be read.
    """

    path: Path
    family: str
    manifest: Manifest | None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        """Manifest kind (``checkpoint``, ``onnx``, ``onnx-int8``, ``tensorrt``), else the family."""
        return self.manifest.kind if self.manifest else self.family

    @property
    def precision(self) -> str:
        return precision_of(self.manifest) if self.manifest else "?"

    @property
    def engine(self) -> EngineFacts | None:
        """Build facts of an engine (None for other families or without a manifest)."""
        return EngineFacts.from_manifest(self.manifest) if self.manifest and self.family == "engine" else None

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


def artifact_at(path: str | Path) -> Artifact:
    """The artifact a file path names, with its manifest (or the reason it has none).

    Raises:
        ArtifactError: Not a checkpoint, ONNX model or engine.
    """
    p = Path(path)
    fam = family_of(p)
    if fam is None:
        raise ArtifactError(f"{p} is not an edgecrack artifact", "pass a run folder, a .onnx, a .engine or "
                            "checkpoint.safetensors")
    try:
        return Artifact(p, fam, read_manifest(p.parent if fam == "checkpoint" else p))
    except ArtifactError as e:
        return Artifact(p, fam, None, e.message)


def run_artifacts(run: str | Path, checkpoint: bool = True) -> list[Artifact]:
    """The artifacts of a run folder, or the one artifact a file path names.

    Order: the checkpoint, ``model.onnx``, ``model.int8.onnx``, the other ONNX models by name,
    then engines by name. Temporary files of atomic writes (dot files) are not artifacts. An
    artifact whose manifest cannot be read is returned with ``error`` set (reported, not dropped).

    Args:
        run: Run folder or artifact file.
        checkpoint: Include the PyTorch checkpoint.

    Raises:
        ArtifactError: Nothing to list at ``run``.
    """
    p = Path(run)
    if p.is_file():
        return [artifact_at(p)]
    if not p.is_dir():
        raise ArtifactError(f"run folder not found: {p}", "train one first (edgecrack train --out runs/deck)")
    out: list[Artifact] = []
    if checkpoint and (p / CHECKPOINT).is_file():
        out.append(artifact_at(p / CHECKPOINT))

    def onnx_order(q: Path) -> tuple[int, str]:
        return ({FP32_ONNX: 0, "model.int8.onnx": 1}.get(q.name, 2), q.name)

    files = [q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")]
    out += [artifact_at(q) for q in sorted((q for q in files if family_of(q) == "onnx"), key=onnx_order)]
    out += [artifact_at(q) for q in sorted(q for q in files if family_of(q) == "engine")]
    if not out:
        what = "checkpoint, ONNX model or engine" if checkpoint else "ONNX model or engine"
        raise ArtifactError(f"{p} holds no {what}", f"train into it (edgecrack train --out {p}) or export it "
                            f"(edgecrack export {p})")
    return out


def resolve_artifact(path: str | Path) -> Path:
    """A run folder resolves to its ``model.onnx``; a file to itself.

    Raises:
        ArtifactError: Nothing usable at ``path``.
    """
    p = Path(path)
    if p.is_dir():
        cand = p / FP32_ONNX
        if cand.is_file():
            return cand
        raise ArtifactError(f"{p} holds no model.onnx", f"train into it (edgecrack train --out {p}) or export it "
                            f"(edgecrack export {p})")
    if not p.exists():
        raise ArtifactError(f"artifact not found: {p}", "pass a run folder, a .onnx model or a .engine file")
    if p.is_file() and p.stat().st_size == 0:
        raise ArtifactError(f"{p} is empty (0 bytes): an interrupted copy or export",
                            "export or build it again (edgecrack export / edgecrack build-engine)")
    return p


# -- where each variant lives ------------------------------------------------------------------


def fp32_sibling(onnx_path: str | Path) -> Path:
    """The FP32 model a precision variant sits next to: ``model.qdq.onnx`` -> ``model.onnx``."""
    p = Path(onnx_path)
    return p.with_name(p.name.split(".")[0] + ".onnx")


def cpu_int8_path(onnx_path: str | Path) -> Path:
    """The onnxruntime CPU INT8 model next to an FP32 one: ``model.onnx`` -> ``model.int8.onnx``."""
    p = fp32_sibling(onnx_path)
    return p.with_name(f"{p.stem}.int8.onnx")


def precision_onnx_path(onnx_path: str | Path, precision: str) -> Path:
    """``model.onnx`` -> ``model.fp16.onnx`` (fp16) / ``model.qdq.onnx`` (int8), from any sibling."""
    p = fp32_sibling(onnx_path)
    return p.with_name(f"{p.stem}.{_PRECISION_INFIX.get(precision, 'qdq')}.onnx")


def engine_path(onnx_path: str | Path, precision: str) -> Path:
    """``runs/deck/model.onnx`` + ``fp16`` -> ``runs/deck/model.fp16.engine``."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.{precision}{ENGINE_SUFFIXES[0]}")


def engines_for_onnx(onnx_path: str | Path) -> list[tuple[Path, Manifest | None, str | None]]:
    """Engines built from this exact ONNX file, found next to it.

    Returns:
        ``(engine, manifest or None, why unusable or None)`` in :data:`ENGINE_PRECISION_ORDER`.
        An engine built from another export of the model (different ONNX sha256), or without a
        readable sidecar, is listed with the reason.
    """
    onnx_path = Path(onnx_path)
    found = sorted(p for p in onnx_path.parent.glob(f"{onnx_path.stem}.*") if is_engine(p) and p.is_file())
    if not found:
        return []
    digest = sha256_file(onnx_path)
    out: list[tuple[Path, Manifest | None, str | None]] = []
    for eng in found:
        try:
            m = read_manifest(eng)
        except ArtifactError as e:
            out.append((eng, None, e.message))
            continue
        # Only a recorded ONNX hash rules an engine out here (older sidecars record none).
        if m.extra.get("onnx_sha256") not in (None, digest):
            out.append((eng, m, f"built from another export of {onnx_path.name} (ONNX sha256 differs); rebuild it"))
            continue
        out.append((eng, m, None))
    rank = {p: i for i, p in enumerate(ENGINE_PRECISION_ORDER)}
    out.sort(key=lambda t: rank.get(EngineFacts.from_manifest(t[1]).precision if t[1] else None, len(rank)))
    return out


def onnx_for_engine(engine: str | Path, manifest: Manifest | None) -> Path | None:
    """The ONNX model an engine was built from, when it sits next to the engine."""
    engine = Path(engine)
    names = []
    if manifest is not None and EngineFacts.from_manifest(manifest).onnx_file:
        names.append(EngineFacts.from_manifest(manifest).onnx_file)
    names.append(FP32_ONNX)
    for n in names:
        cand = engine.parent / n
        if cand.is_file():
            return cand
    return None


def check_plan_file(path: Path, manifest: Manifest) -> None:
    """Size and sha256 of an engine plan against its sidecar (no TensorRT needed).

    Raises:
        ArtifactError: The plan is truncated or its bytes changed since it was built.
    """
    facts = EngineFacts.from_manifest(manifest)
    have_n = path.stat().st_size
    fix = "rebuild it: edgecrack build-engine <model.onnx> --precision " + (facts.precision or "fp16")
    if facts.plan_bytes is not None and have_n != facts.plan_bytes:
        raise ArtifactError(f"{path} is truncated or corrupt: {have_n} bytes, its sidecar says {facts.plan_bytes}", fix)
    if facts.plan_sha256 is not None and sha256_file(path) != facts.plan_sha256:
        raise ArtifactError(f"{path} is corrupt: its sha256 differs from the one recorded at build time", fix)

"""Runtime: backends behind one contract, and ``open_backend`` that picks the best one here.

Import rule: nothing here imports torch, TensorRT or pycuda at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArtifactError, BackendUnavailable, ConfigError, EdgecrackError
from ..io import sha256_file
from ..manifest import Manifest, read_manifest, sidecar_path
from .base import Backend
from .onnxruntime_backend import OnnxRuntimeBackend

__all__ = ["Backend", "OnnxRuntimeBackend", "Selection", "open_backend", "resolve_artifact", "PREFERENCES",
           "ENGINE_SUFFIXES", "engines_for_onnx", "onnx_for_engine"]

PREFERENCES = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "onnxruntime", "torch", "triton")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: When several engines sit next to an ONNX model, ``auto`` tries them in this order.
ENGINE_PRECISION_ORDER = ("fp16", "int8", "fp32")


@dataclass
class Selection:
    """What ``open_backend`` chose and why the others were skipped."""

    backend: Backend
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"backend: {self.backend.name} ({self.backend.artifact.name})"]
        lines += [f"  skipped {n}: {why}" for n, why in self.skipped]
        return "\n".join(lines)


def is_engine(path: str | Path) -> bool:
    return Path(path).suffix.lower() in ENGINE_SUFFIXES


def resolve_artifact(path: str | Path) -> Path:
    """A run folder resolves to its ``model.onnx``; a file to itself.

    Raises:
        ArtifactError: Nothing usable at ``path``.
    """
    p = Path(path)
    if p.is_dir():
        cand = p / "model.onnx"
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
    out = []
    for eng in found:
        try:
            m = read_manifest(eng)
        except ArtifactError as e:
            out.append((eng, None, e.message))
            continue
        if m.extra.get("onnx_sha256") not in (None, digest):
            out.append((eng, m, f"built from another export of {onnx_path.name} (ONNX sha256 differs); rebuild it"))
            continue
        out.append((eng, m, None))
    rank = {p: i for i, p in enumerate(ENGINE_PRECISION_ORDER)}
    out.sort(key=lambda t: rank.get((t[1].extra.get("precision") if t[1] else None), len(rank)))
    return out


def onnx_for_engine(engine: str | Path, manifest: Manifest | None) -> Path | None:
    """The ONNX model an engine was built from, when it sits next to the engine."""
    engine = Path(engine)
    names = []
    if manifest is not None and manifest.extra.get("onnx_file"):
        names.append(manifest.extra["onnx_file"])
    names.append("model.onnx")
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
    want_n = manifest.extra.get("plan_bytes")
    have_n = path.stat().st_size
    fix = "rebuild it: edgecrack build-engine <model.onnx> --precision " + str(manifest.extra.get("precision", "fp16"))
    if want_n is not None and have_n != want_n:
        raise ArtifactError(f"{path} is truncated or corrupt: {have_n} bytes, its sidecar says {want_n}", fix)
    want_h = manifest.extra.get("plan_sha256")
    if want_h is not None and sha256_file(path) != want_h:
        raise ArtifactError(f"{path} is corrupt: its sha256 differs from the one recorded at build time", fix)


def _open_engine(path: Path, manifest: Manifest) -> Backend:
    from .tensorrt_backend import TensorRTBackend

    check_plan_file(path, manifest)
    why = TensorRTBackend.probe()
    if why:
        raise BackendUnavailable(f"TensorRT cannot run {path.name} here: {why}",
                                 f"use the ONNX model with --backend onnxruntime-cpu, or run on the machine the engine "
                                 f"was built for ({manifest.extra.get('gpu_name', '?')})")
    return TensorRTBackend(path, manifest).load()


def _engine_manifest(path: Path) -> Manifest:
    if not sidecar_path(path).is_file():
        raise ArtifactError(f"{path} has no sidecar manifest ({sidecar_path(path).name}); edgecrack cannot tell which "
                            "GPU and TensorRT version it was built for", "build engines with edgecrack build-engine, "
                            "which writes the sidecar next to the plan")
    m = read_manifest(path)
    if m.kind != "tensorrt":
        raise ArtifactError(f"{sidecar_path(path)} describes a {m.kind!r} artifact, not a TensorRT engine",
                            "rebuild the engine with edgecrack build-engine")
    return m


def _open_onnx(path: Path, manifest: Manifest, order: list[str], skipped: list[tuple[str, str]],
               threads: int | None) -> Backend | None:
    for name in order:
        dev = name.split("-", 1)[1]
        why = OnnxRuntimeBackend.probe(dev)
        if why:
            skipped.append((name, why))
            continue
        b = OnnxRuntimeBackend(path, manifest, device=dev, threads=threads)
        try:
            b.load()
        except BackendUnavailable as e:
            skipped.append((name, e.message))
            continue
        return b
    return None


def open_backend(artifact: str | Path, prefer: str = "auto", strict: bool = False, threads: int | None = None,
                 url: str | None = None) -> Selection:
    """Open the best backend for an artifact on this machine.

    ``auto`` walks TensorRT (the given engine, or an engine built from this ONNX that sits next
    to it and whose sidecar matches this machine) -> onnxruntime CUDA -> onnxruntime CPU, and
    records why each candidate was skipped. An engine that cannot run here (TensorRT missing,
    built for another GPU or TensorRT version, corrupt) falls back to the ONNX model next to it.

    Args:
        artifact: Run folder, ``.onnx`` file (FP32 or INT8) or TensorRT engine (``.engine``).
        prefer: One of :data:`PREFERENCES`.
        strict: Raise instead of falling back past an engine (one that was given, or found next
            to the ONNX) that cannot run here. An explicit ``prefer`` never falls back.
        threads: CPU threads for onnxruntime.
        url: Server address for ``prefer="triton"``.

    Raises:
        ArtifactError: Missing, truncated or corrupt artifact; manifest from a newer edgecrack;
            an engine that does not match this machine (strict / ``prefer="tensorrt"``, or
            no ONNX next to it to fall back to).
        BackendUnavailable: Nothing can run it (or the preferred backend cannot).
        ConfigError: Unknown ``prefer``.
    """
    if prefer not in PREFERENCES:
        raise ConfigError(f"unknown backend {prefer!r}", f"choose one of: {', '.join(PREFERENCES)}")
    path = resolve_artifact(artifact)
    if prefer == "onnxruntime":
        prefer = "onnxruntime-cpu"
    skipped: list[tuple[str, str]] = []
    if prefer == "torch":
        from .torch_backend import TorchBackend

        why = TorchBackend.probe("cpu")
        if why:
            raise BackendUnavailable(f"torch backend cannot run here: {why}", "pip install 'edgecrack[train]'")
        run = Path(artifact) if Path(artifact).is_dir() else path.parent
        b = TorchBackend(run, read_manifest(run), threads=threads)
        b.load()
        return Selection(b, skipped)
    if prefer == "triton":
        from .triton_backend import TritonBackend  # noqa: PLC0415 - optional client library

        b = TritonBackend(path, read_manifest(path), url=url)
        b.load()
        return Selection(b, skipped)

    # -- engines ---------------------------------------------------------------------------
    if is_engine(path):
        manifest = _engine_manifest(path)
        fallback = onnx_for_engine(path, manifest)
        if prefer in ("auto", "tensorrt"):
            try:
                return Selection(_open_engine(path, manifest), skipped)
            except EdgecrackError as e:
                if strict or prefer == "tensorrt" or fallback is None:
                    if fallback is None and not (strict or prefer == "tensorrt"):
                        e.hint = (e.hint or "") + f"; no ONNX model next to {path.name} to fall back to"
                    raise
                skipped.append((f"tensorrt ({path.name})", e.message))
        elif fallback is None:
            raise ArtifactError(f"--backend {prefer} needs the ONNX model {path.name} was built from, and none is next "
                                "to it", "pass the run's model.onnx instead of the engine")
        path = fallback
    manifest = read_manifest(path)
    came_from_engine = bool(skipped)
    if prefer in ("auto", "tensorrt") and not came_from_engine:
        if manifest.kind != "onnx":
            if prefer == "tensorrt":
                raise BackendUnavailable(f"{path.name} is a {manifest.kind!r} model; TensorRT runs engines built from the "
                                         "FP32 model.onnx", "build one: edgecrack build-engine model.onnx --precision int8")
            skipped.append(("tensorrt", f"{manifest.kind} models run on onnxruntime only"))
        else:
            for eng, em, why in engines_for_onnx(path):
                if why is None:
                    try:
                        return Selection(_open_engine(eng, em), skipped)
                    except EdgecrackError as e:
                        why = e.message
                if strict or prefer == "tensorrt":
                    prec = (em.extra.get("precision") if em else None) or "fp16"
                    raise ArtifactError(f"{eng}: {why}", f"rebuild it here: edgecrack build-engine {path} --precision "
                                        f"{prec}; or drop --strict to fall back to onnxruntime")
                skipped.append((f"tensorrt ({eng.name})", why))
            if prefer == "tensorrt":
                raise BackendUnavailable(f"no TensorRT engine built from {path.name} next to it",
                                         f"build one: edgecrack build-engine {path} --precision fp16")
            if not skipped:
                skipped.append(("tensorrt", f"no engine next to {path.name} (build one: edgecrack build-engine {path})"))

    order = ["onnxruntime-cuda", "onnxruntime-cpu"] if prefer == "auto" else [prefer]
    b = _open_onnx(path, manifest, order, skipped, threads)
    if b is not None:
        return Selection(b, skipped)
    reasons = "; ".join(f"{n}: {w}" for n, w in skipped)
    if strict or prefer != "auto":
        raise BackendUnavailable(f"backend {prefer} cannot run {path} here ({reasons})",
                                 "use --backend auto, or --backend onnxruntime-cpu")
    raise BackendUnavailable(f"no backend can run {path} here ({reasons})", "pip install onnxruntime")

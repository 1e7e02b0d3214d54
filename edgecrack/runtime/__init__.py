"""Runtime: backends behind one contract, and ``open_backend`` that picks the best one here.

Import rule: nothing here imports torch, TensorRT or pycuda at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import (ENGINE_PRECISION_ORDER, ENGINE_SUFFIXES, EngineFacts, check_plan_file, cpu_int8_path,
                         engines_for_onnx, is_engine, onnx_for_engine, resolve_artifact)
from ..errors import ArtifactError, BackendUnavailable, EdgecrackError
from ..manifest import Manifest, read_manifest, sidecar_path
from .base import Backend
from .onnxruntime_backend import OnnxRuntimeBackend
from .registry import PREFERENCES, backend_spec, canonical_backend

__all__ = ["Backend", "OnnxRuntimeBackend", "Selection", "open_backend", "resolve_artifact", "PREFERENCES",
           "ENGINE_SUFFIXES", "ENGINE_PRECISION_ORDER", "engines_for_onnx", "onnx_for_engine", "is_engine",
           "check_plan_file"]


@dataclass
class Selection:
    """What ``open_backend`` chose and why the others were skipped."""

    backend: Backend
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Why this artifact of a run folder was taken over ``model.onnx`` (empty when it was not).
    note: str = ""

    def describe(self) -> str:
        lines = [f"backend: {self.backend.name} ({self.backend.artifact.name})"]
        lines += [f"  {self.note}"] if self.note else []
        lines += [f"  skipped {n}: {why}" for n, why in self.skipped]
        return "\n".join(lines)


def _open_engine(path: Path, manifest: Manifest) -> Backend:
    from .tensorrt_backend import TensorRTBackend

    check_plan_file(path, manifest)
    why = TensorRTBackend.probe()
    if why:
        raise BackendUnavailable(f"TensorRT cannot run {path.name} here: {why}",
                                 f"use the ONNX model with --backend onnxruntime-cpu, or run on the machine the engine "
                                 f"was built for ({EngineFacts.from_manifest(manifest).gpu_name or '?'})")
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


def cpu_int8_for_run(fp32: Path, skipped: list[tuple[str, str]]) -> tuple[Path, Manifest, str] | None:
    """The run's onnxruntime CPU INT8 model, when it is the better choice on this CPU: written by
    ``build-engine --target cpu`` (only when it was within budget and faster than FP32 there), on
    this CPU (same processor and INT8 instruction class), from this ``model.onnx`` (its hash). One
    measured elsewhere or from an earlier model is passed over, with the reason in ``skipped``.

    Returns:
        (path, manifest, why it was taken), or None.
    """
    from ..io import sha256_file
    from ..platform import cpu_name, int8_isa

    p = cpu_int8_path(fp32)
    if not p.is_file():
        return None
    name = f"onnxruntime-cpu ({p.name})"
    try:
        m = read_manifest(p)
    except EdgecrackError as e:
        skipped.append((name, e.message))
        return None
    x = m.extra
    if m.kind != "onnx-int8":
        skipped.append((name, f"its manifest describes a {m.kind!r} model, not an onnxruntime CPU INT8 one"))
        return None
    here, isa = cpu_name(), int8_isa().summary
    if x.get("cpu") != here or x.get("cpu_isa") != isa:
        skipped.append((name, f"measured on {x.get('cpu') or '?'} ({x.get('cpu_isa') or '?'}), not this CPU ({here}; "
                              f"{isa}): rebuild here: edgecrack build-engine {fp32.parent} --precision int8 --target cpu"))
        return None
    if x.get("onnx_sha256") != sha256_file(fp32):
        skipped.append((name, f"built from an earlier {fp32.name}: rebuild it: edgecrack build-engine {fp32.parent} "
                              "--precision int8 --target cpu"))
        return None
    d = x.get("deltas_vs_fp32") or {}
    why = (f"using {p.name}: measured on this CPU by build-engine at x{d.get('speedup_batch1', 0):.2f} (batch 1) "
           f"vs FP32, top-1 agreement {d.get('top1_agreement', 0) * 100:.1f} %; pass {fp32} to run FP32")
    return p, m, why


def _open_onnx(path: Path, manifest: Manifest, order: list[str], skipped: list[tuple[str, str]],
               threads: int | None, cpu: tuple[Path, Manifest, str] | None = None) -> Backend | None:
    for name in order:
        dev = name.split("-", 1)[1]
        why = OnnxRuntimeBackend.probe(dev)
        if why:
            skipped.append((name, why))
            continue
        p, m = (cpu[0], cpu[1]) if cpu is not None and dev == "cpu" else (path, manifest)
        b = OnnxRuntimeBackend(p, m, device=dev, threads=threads)
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
        prefer: ``auto`` or a backend name or alias of :mod:`edgecrack.runtime.registry`.
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
    prefer = canonical_backend(prefer, allow_auto=True)
    path = resolve_artifact(artifact)
    skipped: list[tuple[str, str]] = []
    if prefer.startswith("torch-"):
        from .torch_backend import TorchBackend

        dev = backend_spec(prefer).device
        why = TorchBackend.probe(dev)
        if why:
            raise BackendUnavailable(f"torch backend cannot run here: {why}", "pip install 'edgecrack[train]'")
        run = Path(artifact) if Path(artifact).is_dir() else path.parent
        b = TorchBackend(run, read_manifest(run), device=dev, threads=threads)
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
                    prec = (EngineFacts.from_manifest(em).precision if em else None) or "fp16"
                    raise ArtifactError(f"{eng}: {why}", f"rebuild it here: edgecrack build-engine {path} --precision "
                                        f"{prec}; or drop --strict to fall back to onnxruntime")
                skipped.append((f"tensorrt ({eng.name})", why))
            if prefer == "tensorrt":
                raise BackendUnavailable(f"no TensorRT engine built from {path.name} next to it",
                                         f"build one: edgecrack build-engine {path} --precision fp16")
            if not skipped:
                skipped.append(("tensorrt", f"no engine next to {path.name} (build one: edgecrack build-engine {path})"))

    order = ["onnxruntime-cuda", "onnxruntime-cpu"] if prefer == "auto" else [prefer]
    run_folder = Path(artifact).is_dir() and manifest.kind == "onnx" and "onnxruntime-cpu" in order
    cpu = cpu_int8_for_run(path, skipped) if run_folder else None
    b = _open_onnx(path, manifest, order, skipped, threads, cpu)
    if b is not None:
        note = cpu[2] if cpu is not None and b.artifact == cpu[0] else ""
        return Selection(b, skipped, note)
    reasons = "; ".join(f"{n}: {w}" for n, w in skipped)
    if strict or prefer != "auto":
        raise BackendUnavailable(f"backend {prefer} cannot run {path} here ({reasons})",
                                 "use --backend auto, or --backend onnxruntime-cpu")
    raise BackendUnavailable(f"no backend can run {path} here ({reasons})", "pip install onnxruntime")

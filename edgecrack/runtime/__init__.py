"""Runtime: backends behind one contract, and ``open_backend`` that picks the best one here.

Import rule: nothing here imports torch, TensorRT or pycuda at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArtifactError, BackendUnavailable, ConfigError
from ..manifest import Manifest, read_manifest
from .base import Backend
from .onnxruntime_backend import OnnxRuntimeBackend

__all__ = ["Backend", "OnnxRuntimeBackend", "Selection", "open_backend", "resolve_artifact", "PREFERENCES"]

PREFERENCES = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "onnxruntime", "torch", "triton")


@dataclass
class Selection:
    """What ``open_backend`` chose and why the others were skipped."""

    backend: Backend
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"backend: {self.backend.name} ({self.backend.artifact.name})"]
        lines += [f"  skipped {n}: {why}" for n, why in self.skipped]
        return "\n".join(lines)


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
    return p


def open_backend(artifact: str | Path, prefer: str = "auto", strict: bool = False, threads: int | None = None,
                 url: str | None = None) -> Selection:
    """Open the best backend for an artifact on this machine.

    ``auto`` walks onnxruntime CUDA -> onnxruntime CPU for ONNX artifacts and records why each
    candidate was skipped. ``strict`` raises instead of falling back.

    Args:
        artifact: Run folder, ``.onnx`` file (FP32 or INT8).
        prefer: One of :data:`PREFERENCES`.
        strict: Raise :class:`BackendUnavailable` when ``prefer`` cannot run.
        threads: CPU threads for onnxruntime.
        url: Server address for ``prefer="triton"``.

    Raises:
        ArtifactError: Missing or unreadable artifact / manifest.
        BackendUnavailable: Nothing can run it (or ``strict`` and the preferred one cannot).
    """
    if prefer not in PREFERENCES:
        raise ConfigError(f"unknown backend {prefer!r}", f"choose one of: {', '.join(PREFERENCES)}")
    path = resolve_artifact(artifact)
    manifest: Manifest = read_manifest(path)
    if prefer == "onnxruntime":
        prefer = "onnxruntime-cpu"
    order = ["onnxruntime-cuda", "onnxruntime-cpu"] if prefer == "auto" else [prefer]
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

        b = TritonBackend(path, manifest, url=url)
        b.load()
        return Selection(b, skipped)
    for name in order:
        if name == "tensorrt":
            skipped.append((name, "native TensorRT backend is not available in this build"))
            continue
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
        return Selection(b, skipped)
    reasons = "; ".join(f"{n}: {w}" for n, w in skipped)
    if strict or prefer != "auto":
        raise BackendUnavailable(f"backend {prefer} cannot run {path} here ({reasons})",
                                 "use --backend auto, or --backend onnxruntime-cpu")
    raise BackendUnavailable(f"no backend can run {path} here ({reasons})", "pip install onnxruntime")

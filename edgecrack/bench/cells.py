"""Which artifact runs on which backend, and opening one such cell without side effects.

The names and the artifact-family -> backends map come from :mod:`edgecrack.runtime.registry`;
the artifacts from :mod:`edgecrack.artifacts`. Opening goes through
:func:`edgecrack.runtime.open_backend` (strict, named backend), so a benchmark measures exactly
what a user of that backend gets.
"""

from __future__ import annotations

import sys

from ..artifacts import Artifact
from ..errors import ArtifactError, BackendUnavailable
from ..runtime.registry import backends_for, probe_backend


def plan(arts: list[Artifact], only: tuple[str, ...] | None) -> list[tuple[Artifact, str]]:
    """Every (artifact, backend name) to measure, in report order; ``only`` filters backend names."""
    return [(a, b) for a in arts for b in backends_for(a.family) if only is None or b in only]


def open_cell_backend(art: Artifact, backend: str, threads: int | None, spin: bool = True):
    """Load ``art`` on the named backend (``spin``: onnxruntime's idle threads spin-wait, its default).

    Returns:
        A loaded :class:`~edgecrack.runtime.base.Backend`.

    Raises:
        BackendUnavailable: The backend cannot run here (the message says why).
        ArtifactError: The artifact cannot be loaded.
    """
    from ..platform import engine_matches_machine
    from ..runtime import open_backend

    if art.manifest is None:
        raise ArtifactError(art.error or f"no manifest for {art.path}")
    why = probe_backend(backend)
    if why:
        raise BackendUnavailable(why)
    if backend == "tensorrt":
        # An engine built for another GPU or TensorRT version cannot run here; that is not a
        # broken artifact, so it is reported as unavailable with the reason.
        why = engine_matches_machine(art.manifest)
        if why:
            raise BackendUnavailable(why)
    if not spin and backend.startswith("onnxruntime-"):
        from ..runtime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(art.path, art.manifest, device=backend.split("-", 1)[1], threads=threads,
                                  spin=False).load()
    return open_backend(art.path, prefer=backend, strict=True, threads=threads).backend


def torch_threads() -> int | None:
    """PyTorch's process-wide thread count when torch is already imported (never imports it)."""
    t = sys.modules.get("torch")
    return t.get_num_threads() if t is not None else None


def restore_torch_threads(n: int | None) -> None:
    """Put PyTorch's thread count back: TorchBackend sets it, and a benchmark must not leave it changed."""
    t = sys.modules.get("torch")
    if n is not None and t is not None and t.get_num_threads() != n:
        t.set_num_threads(n)

"""The backends edgecrack knows, under one vocabulary.

A backend's name is what :attr:`Backend.name` reports, what ``--backend`` / ``--backends``
accept, what ``doctor`` lists and what a benchmark row carries: ``tensorrt``,
``onnxruntime-tensorrt``, ``onnxruntime-cuda``, ``onnxruntime-cpu``, ``torch-cuda``,
``torch-cpu``, ``triton``. Short aliases (``ort``, ``trt``, ``torch``, ``onnxruntime``) resolve
to one of them. Probing imports at most the backend's own module; torch is found, not imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class BackendSpec:
    """One backend.

    Attributes:
        name: Canonical name (equals the opened backend's ``Backend.name``).
        family: Artifact family it runs: ``engine``, ``onnx``, ``checkpoint``, or ``remote``
            (a Triton server runs what it serves).
        library: The runtime library.
        device: ``cpu``, ``cuda`` or ``tensorrt`` (onnxruntime's execution provider), None for
            native TensorRT and Triton.
    """

    name: str
    family: str
    library: str
    device: str | None = None

    def probe(self) -> str | None:
        """None when this backend can run here, else why not (nothing is installed or loaded)."""
        if self.library == "onnxruntime":
            from .onnxruntime_backend import OnnxRuntimeBackend

            return OnnxRuntimeBackend.probe(self.device)
        if self.library == "torch":
            from .torch_backend import TorchBackend

            return TorchBackend.probe(self.device)
        if self.library == "tensorrt":
            from .tensorrt_backend import TensorRTBackend

            return TensorRTBackend.probe()
        from .triton_backend import TritonBackend

        return TritonBackend.probe()


#: Every backend, in the order a benchmark tries them for each family.
SPECS: tuple[BackendSpec, ...] = (
    BackendSpec("tensorrt", "engine", "tensorrt"),
    BackendSpec("onnxruntime-tensorrt", "onnx", "onnxruntime", "tensorrt"),
    BackendSpec("onnxruntime-cuda", "onnx", "onnxruntime", "cuda"),
    BackendSpec("onnxruntime-cpu", "onnx", "onnxruntime", "cpu"),
    BackendSpec("torch-cuda", "checkpoint", "torch", "cuda"),
    BackendSpec("torch-cpu", "checkpoint", "torch", "cpu"),
    BackendSpec("triton", "remote", "tritonclient"),
)
_BY_NAME = {s.name: s for s in SPECS}
#: Short names people type.
ALIASES = {"torch": "torch-cpu", "onnxruntime": "onnxruntime-cpu", "ort": "onnxruntime-cpu",
           "ort-cpu": "onnxruntime-cpu", "ort-cuda": "onnxruntime-cuda", "ort-trt": "onnxruntime-tensorrt",
           "trt": "tensorrt"}
#: What ``open_backend(prefer=...)`` walks in ``auto``, best first.
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")
#: Backends a benchmark measures (a Triton server is benchmarked from its client, not here).
LOCAL = tuple(s.name for s in SPECS if s.family != "remote")
#: Everything ``--backend`` accepts.
PREFERENCES = ("auto", *(s.name for s in SPECS), *ALIASES)


def canonical_backend(name: str, allow_auto: bool = False) -> str:
    """The canonical name of a backend name or alias.

    Raises:
        ConfigError: Unknown name (the message lists the valid ones).
    """
    n = name.strip().lower()
    if allow_auto and n == "auto":
        return n
    n = ALIASES.get(n, n)
    if n not in _BY_NAME:
        valid = (["auto"] if allow_auto else []) + [s.name for s in SPECS]
        raise ConfigError(f"unknown backend {name!r}", f"choose from: {', '.join(valid)} (or an alias: "
                          f"{', '.join(ALIASES)})")
    return n


def backend_spec(name: str) -> BackendSpec:
    """The spec of a backend name or alias (see :func:`canonical_backend`)."""
    return _BY_NAME[canonical_backend(name)]


def backends_for(family: str) -> tuple[str, ...]:
    """Backend names that can run an artifact family (``checkpoint``, ``onnx``, ``engine``)."""
    return tuple(s.name for s in SPECS if s.family == family)


def probe_backend(name: str) -> str | None:
    """None when the named backend can run on this machine, else why not."""
    return backend_spec(name).probe()

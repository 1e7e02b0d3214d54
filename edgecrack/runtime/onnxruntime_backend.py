"""onnxruntime backend: CPU, and CUDA / TensorRT execution providers when present."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, BackendUnavailable
from ..manifest import QDQ_TENSORRT, Manifest, check_onnx_session
from .base import Backend

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def no_spin_wait(so) -> None:
    """Let a session's idle worker threads sleep instead of spin-waiting (onnxruntime's default).

    Needed wherever two sessions are timed in turn in one process: one session's spinning threads
    hold the cores through the other's calls. The one place this setting is spelled."""
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX artifact with onnxruntime.

    Args:
        artifact: ``.onnx`` file.
        manifest: Its manifest.
        device: ``cpu``, ``cuda`` or ``tensorrt`` (execution provider family).
        threads: Intra-op threads (None: onnxruntime's default, all physical cores).
    """

    def __init__(self, artifact: str | Path, manifest: Manifest, device: str = "cpu", threads: int | None = None,
                 spin: bool = True):
        super().__init__(artifact, manifest)
        #: Whether idle worker threads spin-wait for the next operator (onnxruntime's default). Two
        #: sessions timed against each other in one process need it off: one session's spinning
        #: threads hold the cores through the other's calls (:func:`edgecrack.bench.run`).
        self.spin = spin
        if device not in _PROVIDERS:
            raise ValueError(f"unknown onnxruntime device {device!r}")
        self.device = device
        self.threads = threads
        self.name = f"onnxruntime-{device}"
        # A TensorRT Q/DQ model on the CPU runs as written (dequantize, float op, quantize): the
        # arithmetic TensorRT computes and its export was checked in. onnxruntime's fused CPU INT8
        # kernels compute something else (on x86 without VNNI their int16 sums saturate), so a CPU
        # check of a TensorRT artifact through them would judge the wrong arithmetic.
        self.as_written = device == "cpu" and manifest.extra.get("format") == QDQ_TENSORRT
        self._sess = None

    @staticmethod
    def probe(device: str) -> str | None:
        """None when this device can run here, else the reason it cannot."""
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        have = ort.get_available_providers()
        need = _PROVIDERS[device][0]
        if need not in have:
            return f"onnxruntime {ort.__version__} has no {need} (available: {', '.join(have)})"
        return None

    def _load(self) -> None:
        import onnxruntime as ort

        why = self.probe(self.device)
        if why:
            raise BackendUnavailable(why)
        if not self.artifact.is_file():
            raise ArtifactError(f"ONNX model not found: {self.artifact}", "export it with edgecrack export")
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = self.threads
        if not self.spin:
            no_spin_wait(so)
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if self.as_written
                                       else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        try:
            self._sess = ort.InferenceSession(str(self.artifact), so, providers=_PROVIDERS[self.device])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad files
            raise ArtifactError(f"onnxruntime cannot load {self.artifact}: {str(e).splitlines()[0][:300]}",
                                "the file is corrupt or truncated: export it again (edgecrack export)") from None
        try:
            # The sidecar may have been edited or copied from another export: labels swapped
            # against the model's own metadata would flip every answer without an error.
            check_onnx_session(self._sess, self.manifest, str(self.artifact))
        except ArtifactError:
            self._sess = None
            raise
        if self.device != "cpu" and self._sess.get_providers()[0] != _PROVIDERS[self.device][0]:
            got = self._sess.get_providers()
            self._sess = None
            raise BackendUnavailable(f"onnxruntime could not start {_PROVIDERS[self.device][0]} (got {got})")

    def _close(self) -> None:
        self._sess = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._sess.run(None, feeds)
        return {o.name: v for o, v in zip(self._sess.get_outputs(), outs)}

    def _info(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            "library": f"onnxruntime {ort.__version__}",
            "device": self.device,
            "precision": self.manifest.extra.get("precision") or ("int8" if self.manifest.kind == "onnx-int8" else "fp32"),
            "providers": self._sess.get_providers() if self._sess else _PROVIDERS[self.device],
            "threads": self.threads or os.cpu_count(),
            "arithmetic": ("Q/DQ as written (TensorRT's arithmetic, no fused CPU INT8 kernels)" if self.as_written
                           else "onnxruntime kernels"),
        }

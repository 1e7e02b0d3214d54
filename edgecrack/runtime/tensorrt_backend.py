"""Native TensorRT backend (TensorRT 8.5+ and 10.x) with CUDA-event timing.

Uses only the name-based tensor API (``num_io_tensors``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``), which exists from TensorRT 8.5 (JetPack 5.1)
through 10.x (JetPack 6, desktops); the binding-index API removed in 10.0 is never touched.
TensorRT and the CUDA bindings (cuda-python or pycuda) are imported lazily.

An engine is only valid for the TensorRT version and GPU it was built on.
:func:`engine_matches_machine` compares the engine's sidecar manifest with this machine before
the plan is deserialised, so a mismatch is a clear message (and a fallback in ``auto``), never a
crash inside TensorRT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, BackendUnavailable
from ..manifest import Manifest
from ..platform import engine_matches_machine, tensorrt_version  # noqa: F401 - re-exported: one home in platform
from .base import Backend


class TensorRTBackend(Backend):
    """Runs a serialized TensorRT engine (``.engine`` / ``.plan``) with its sidecar manifest.

    Args:
        artifact: Engine plan file (as written by ``edgecrack build-engine``).
        manifest: Its sidecar manifest (``kind == "tensorrt"``).
        device_index: CUDA device.
    """

    name = "tensorrt"

    def __init__(self, artifact: str | Path, manifest: Manifest, device_index: int = 0):
        super().__init__(artifact, manifest)
        self.device_index = device_index
        self.last_gpu_ms: float | None = None
        self._cuda = None
        self._gpu = None
        self._engine = None
        self._ctx = None
        self._stream = None
        self._events = None
        self._bufs: dict[str, Any] = {}
        self._out_dtype = np.float32
        self._batch_range = (1, 1)

    @staticmethod
    def probe(device_index: int = 0) -> str | None:
        """None when TensorRT and a CUDA GPU are usable here, else the reason."""
        if tensorrt_version() is None:
            return "TensorRT is not installed (pip install 'edgecrack[trt]' or use JetPack's python3-libnvinfer)"
        from ._cuda import gpu_or_reason

        _, _, why = gpu_or_reason(device_index)
        return why

    def _load(self) -> None:
        why = self.probe(self.device_index)
        if why:
            raise BackendUnavailable(f"TensorRT cannot run here: {why}")
        why = engine_matches_machine(self.manifest, self.device_index)
        if why:
            raise ArtifactError(f"{self.artifact}: {why}",
                                f"rebuild the engine on this machine: edgecrack build-engine <model.onnx> "
                                f"--precision {self.manifest.extra.get('precision', 'fp16')}")
        import tensorrt as trt

        from ._cuda import gpu_or_reason

        if not self.artifact.is_file():
            raise ArtifactError(f"engine not found: {self.artifact}", "build it with edgecrack build-engine")
        blob = self.artifact.read_bytes()
        want = self.manifest.extra.get("plan_bytes")
        if not blob or (want is not None and len(blob) != want):
            raise ArtifactError(f"{self.artifact} is truncated ({len(blob)} bytes, the sidecar says {want})",
                                "rebuild the engine with edgecrack build-engine")
        api, gpu, _ = gpu_or_reason(self.device_index)
        api.set_device(self.device_index)
        logger = trt.Logger(trt.Logger.ERROR)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise ArtifactError(f"TensorRT {trt.__version__} cannot deserialize {self.artifact} (corrupt plan, or "
                                "built by another TensorRT version)", "rebuild the engine with edgecrack build-engine")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        m = self.manifest
        if inputs != [m.input_name] or m.output_name not in outputs:
            raise ArtifactError(f"{self.artifact}: engine tensors {inputs} -> {outputs} do not match the manifest "
                                f"({m.input_name} -> {m.output_name})", "rebuild the engine from the run's model.onnx")
        lo, _opt, hi = engine.get_tensor_profile_shape(m.input_name, 0)
        self._batch_range = (int(lo[0]), int(hi[0]))
        self._out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(m.output_name)))
        c = m.input
        hi_b = self._batch_range[1]
        self._bufs = {
            m.input_name: api.malloc(hi_b * c.height * c.width * 3),
            m.output_name: api.malloc(hi_b * len(m.labels) * self._out_dtype.itemsize),
        }
        self._ctx = engine.create_execution_context()
        self._engine = engine
        self._runtime = runtime
        self._cuda, self._gpu = api, gpu
        self._stream = api.stream()
        self._events = (api.event(), api.event())

    def _close(self) -> None:
        if self._cuda is not None:
            for b in self._bufs.values():
                try:
                    self._cuda.free(b)
                except Exception:  # noqa: BLE001 - freeing during interpreter shutdown may fail harmlessly
                    pass
            self._cuda.close()
        self._bufs = {}
        self._ctx = self._engine = self._stream = self._events = None

    def _run(self, x: np.ndarray) -> np.ndarray:
        m, api = self.manifest, self._cuda
        n = x.shape[0]
        lo, _ = self._batch_range
        if n < lo:
            # Static-batch engines (DLA) take exactly ``lo`` images: pad with black frames.
            x = np.concatenate([x, np.zeros((lo - n, *x.shape[1:]), x.dtype)])
        out = np.empty((x.shape[0], len(m.labels)), self._out_dtype)
        self._ctx.set_input_shape(m.input_name, tuple(x.shape))
        self._ctx.set_tensor_address(m.input_name, api.ptr(self._bufs[m.input_name]))
        self._ctx.set_tensor_address(m.output_name, api.ptr(self._bufs[m.output_name]))
        api.htod(self._bufs[m.input_name], np.ascontiguousarray(x), self._stream)
        start, end = self._events
        api.record(start, self._stream)
        if not self._ctx.execute_async_v3(api.stream_handle(self._stream)):
            raise ArtifactError(f"TensorRT failed to run {self.artifact} on a batch of {x.shape[0]}")
        api.record(end, self._stream)
        api.dtoh(out, self._bufs[m.output_name], self._stream)
        api.synchronize(self._stream)
        self.last_gpu_ms = (self.last_gpu_ms or 0.0) + api.elapsed_ms(start, end)
        return out[:n].astype(np.float32, copy=False)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds[self.manifest.input_name]
        hi = self._batch_range[1]
        self.last_gpu_ms = 0.0
        parts = [self._run(x[i:i + hi]) for i in range(0, x.shape[0], hi)]
        return {self.manifest.output_name: np.concatenate(parts)}

    def _info(self) -> dict[str, Any]:
        import tensorrt as trt

        ex = self.manifest.extra
        return {
            "library": f"tensorrt {trt.__version__}",
            "device": f"{self._gpu.name} (sm {self._gpu.compute_capability})" if self._gpu else "cuda",
            "precision": ex.get("precision", "?"),
            "providers": [self._cuda.library] if self._cuda else [],
            "threads": None,
            "batch_range": list(self._batch_range),
            "last_gpu_ms": self.last_gpu_ms,
            "timing": "CUDA events around execute_async_v3 (GPU time); last_latency_ms is host wall time incl. copies",
        }

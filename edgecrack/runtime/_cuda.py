"""Minimal CUDA runtime access for TensorRT: device query, buffers, streams, events.

Two bindings are supported, both imported lazily: NVIDIA's ``cuda-python`` (``cuda.bindings``,
preferred: it ships with recent JetPack and desktop wheels) and ``pycuda`` (common on JetPack 5
images). Nothing here is imported by ``edgecrack.runtime`` at module level.

TensorRT runs on the CUDA runtime's primary context; the pycuda path therefore retains the
primary context instead of creating its own (``pycuda.autoinit`` would make a second context
and TensorRT would then read pointers from the wrong one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device as TensorRT sees it."""

    index: int
    name: str
    major: int
    minor: int
    total_memory_mb: int
    integrated: bool

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"


class CudaError(RuntimeError):
    """A CUDA runtime call failed (message carries the CUDA error string)."""


class CudaApi:
    """The operations edgecrack needs, on top of one of the two bindings."""

    library = "none"

    def device_count(self) -> int: raise NotImplementedError
    def device(self, index: int = 0) -> GpuInfo: raise NotImplementedError
    def driver_version(self) -> str | None: raise NotImplementedError
    def set_device(self, index: int) -> None: raise NotImplementedError
    def malloc(self, nbytes: int) -> Any: raise NotImplementedError
    def free(self, buf: Any) -> None: raise NotImplementedError
    def ptr(self, buf: Any) -> int: return int(buf)
    def stream(self) -> Any: raise NotImplementedError
    def stream_handle(self, stream: Any) -> int: raise NotImplementedError
    def htod(self, dst: Any, src: np.ndarray, stream: Any | None = None) -> None: raise NotImplementedError
    def dtoh(self, dst: np.ndarray, src: Any, stream: Any | None = None) -> None: raise NotImplementedError
    def synchronize(self, stream: Any) -> None: raise NotImplementedError
    def event(self) -> Any: raise NotImplementedError
    def record(self, event: Any, stream: Any) -> None: raise NotImplementedError
    def elapsed_ms(self, start: Any, end: Any) -> float: raise NotImplementedError
    def close(self) -> None: pass


class _CudaPython(CudaApi):
    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 layout
        except ImportError:
            from cuda import cudart  # older cuda-python (JetPack 5 / 6.0 wheels)
        self.rt = cudart
        ver = _dist_version("cuda-python") or _dist_version("cuda-bindings")
        self.library = f"cuda-python {ver}".strip()

    def _call(self, res):
        err, *rest = res if isinstance(res, tuple) else (res,)
        if int(err) != 0:
            _, msg = self.rt.cudaGetErrorString(err)
            raise CudaError(msg.decode() if isinstance(msg, bytes) else str(msg))
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else tuple(rest)

    def device_count(self) -> int:
        return int(self._call(self.rt.cudaGetDeviceCount()))

    def device(self, index: int = 0) -> GpuInfo:
        p = self._call(self.rt.cudaGetDeviceProperties(index))
        name = p.name.decode(errors="replace") if isinstance(p.name, (bytes, bytearray)) else str(p.name)
        return GpuInfo(index, name.rstrip("\x00").strip(), int(p.major), int(p.minor),
                       int(p.totalGlobalMem) >> 20, bool(p.integrated))

    def driver_version(self) -> str | None:
        v = self._call(self.rt.cudaDriverGetVersion())
        return None if not v else f"{v // 1000}.{(v % 1000) // 10}"

    def set_device(self, index: int) -> None:
        self._call(self.rt.cudaSetDevice(index))

    def malloc(self, nbytes: int) -> Any:
        return self._call(self.rt.cudaMalloc(max(int(nbytes), 1)))

    def free(self, buf: Any) -> None:
        self._call(self.rt.cudaFree(buf))

    def stream(self) -> Any:
        return self._call(self.rt.cudaStreamCreate())

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def htod(self, dst: Any, src: np.ndarray, stream: Any | None = None) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        if stream is None:
            self._call(self.rt.cudaMemcpy(int(dst), src.ctypes.data, src.nbytes, kind))
        else:
            self._call(self.rt.cudaMemcpyAsync(int(dst), src.ctypes.data, src.nbytes, kind, stream))

    def dtoh(self, dst: np.ndarray, src: Any, stream: Any | None = None) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        if stream is None:
            self._call(self.rt.cudaMemcpy(dst.ctypes.data, int(src), dst.nbytes, kind))
        else:
            self._call(self.rt.cudaMemcpyAsync(dst.ctypes.data, int(src), dst.nbytes, kind, stream))

    def synchronize(self, stream: Any) -> None:
        self._call(self.rt.cudaStreamSynchronize(stream))

    def event(self) -> Any:
        return self._call(self.rt.cudaEventCreate())

    def record(self, event: Any, stream: Any) -> None:
        self._call(self.rt.cudaEventRecord(event, stream))

    def elapsed_ms(self, start: Any, end: Any) -> float:
        self._call(self.rt.cudaEventSynchronize(end))
        return float(self._call(self.rt.cudaEventElapsedTime(start, end)))


class _PyCuda(CudaApi):
    def __init__(self):
        import pycuda
        import pycuda.driver as drv

        drv.init()
        self.drv = drv
        self.library = f"pycuda {pycuda.VERSION_TEXT}"
        self._ctx = None

    def device_count(self) -> int:
        return int(self.drv.Device.count())

    def device(self, index: int = 0) -> GpuInfo:
        d = self.drv.Device(index)
        major, minor = d.compute_capability()
        integrated = bool(d.get_attribute(self.drv.device_attribute.INTEGRATED))
        return GpuInfo(index, d.name(), int(major), int(minor), int(d.total_memory()) >> 20, integrated)

    def driver_version(self) -> str | None:
        v = self.drv.get_driver_version()
        return None if not v else f"{v // 1000}.{(v % 1000) // 10}"

    def set_device(self, index: int) -> None:
        if self._ctx is None:
            self._ctx = self.drv.Device(index).retain_primary_context()
            self._ctx.push()

    def malloc(self, nbytes: int) -> Any:
        return self.drv.mem_alloc(max(int(nbytes), 1))

    def free(self, buf: Any) -> None:
        buf.free()

    def stream(self) -> Any:
        return self.drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def htod(self, dst: Any, src: np.ndarray, stream: Any | None = None) -> None:
        if stream is None:
            self.drv.memcpy_htod(dst, src)
        else:
            self.drv.memcpy_htod_async(dst, src, stream)

    def dtoh(self, dst: np.ndarray, src: Any, stream: Any | None = None) -> None:
        if stream is None:
            self.drv.memcpy_dtoh(dst, src)
        else:
            self.drv.memcpy_dtoh_async(dst, src, stream)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def event(self) -> Any:
        return self.drv.Event()

    def record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        end.synchronize()
        return float(end.time_since(start))

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.pop()
            self._ctx = None


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - metadata may be absent on system installs
        return ""


def cuda_api() -> tuple[CudaApi | None, str | None]:
    """The first usable CUDA binding, or (None, why none is usable)."""
    reasons = []
    for cls, pkg in ((_CudaPython, "cuda-python"), (_PyCuda, "pycuda")):
        try:
            api = cls()
            # A binding that imports but cannot talk to the driver (cuda-python without a driver,
            # a wheel built for another CUDA) must not hide the next one.
            api.device_count()
            return api, None
        except ImportError:
            reasons.append(f"{pkg} is not installed")
        except Exception as e:  # noqa: BLE001 - a binding without a driver raises its own types
            reasons.append(f"{pkg}: {str(e).splitlines()[0][:200]}")
    return None, "; ".join(reasons) + " (pip install cuda-python, or pycuda)"


def gpu_or_reason(index: int = 0) -> tuple[CudaApi | None, GpuInfo | None, str | None]:
    """(api, device info, None) when a CUDA GPU is usable here, else (api|None, None, reason)."""
    api, why = cuda_api()
    if api is None:
        return None, None, why
    try:
        n = api.device_count()
    except Exception as e:  # noqa: BLE001 - e.g. insufficient driver, no device node
        return api, None, f"no usable CUDA device ({e})"
    if n < 1:
        return api, None, "no CUDA device found"
    if index >= n:
        return api, None, f"CUDA device {index} does not exist (this machine has {n})"
    try:
        return api, api.device(index), None
    except Exception as e:  # noqa: BLE001
        return api, None, f"cannot query CUDA device {index} ({e})"

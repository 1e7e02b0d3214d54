"""``edgecrack doctor``: what this machine can run, and why not (torch-free, installs nothing).

Every check is a probe: it imports an optional library if present, asks it what it supports,
and reports the answer with the fix when something is missing. Nothing is downloaded.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any

from .platform import cpu_name, int8_isa, jetson_facts, opencv_video_io, tensorrt_version

__all__ = ["Check", "DoctorReport", "run_doctor", "opencv_video_io"]


@dataclass
class Check:
    """One line of the report.

    Attributes:
        name: What was checked (``onnxruntime``, ``TensorRT``, ...).
        ok: Usable here.
        detail: Version / what was found.
        fix: What to do when it is not usable (empty when ok).
        optional: Not needed for the core (CPU) workflow.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    optional: bool = True


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    backends: dict[str, str | None] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "backends": self.backends, "checks": [asdict(c) for c in self.checks]}


def _version(mod: str) -> str | None:
    try:
        m = __import__(mod)
    except Exception:  # noqa: BLE001 - broken optional installs raise more than ImportError
        return None
    return str(getattr(m, "__version__", "?"))


def _jetson() -> str | None:
    j = jetson_facts()
    if j is None:
        return None
    return (j["l4t"] or j["model"] or "Jetson")[:120]


def run_doctor() -> DoctorReport:
    """Probe this machine: Python libraries, GPU/CUDA, TensorRT, onnxruntime providers, OpenCV video I/O.

    Returns:
        A :class:`DoctorReport` with one :class:`Check` per item and, per backend name of
        :mod:`edgecrack.runtime.registry`, None (usable) or the reason it is not.
    """
    from . import __version__

    rep = DoctorReport()
    rep.machine = {"edgecrack": __version__, "python": platform.python_version(), "os": platform.platform(),
                   "cpu": cpu_name(), "cores": os.cpu_count(), "cpu_int8": int8_isa().summary, "jetson": _jetson()}
    add = rep.checks.append

    import numpy as np

    add(Check("numpy", True, np.__version__, optional=False))
    try:
        import cv2

        vio = opencv_video_io()
        add(Check("OpenCV", True, f"{cv2.__version__}", optional=False))
        gst = vio.get("GStreamer", "NO")
        add(Check("OpenCV GStreamer", gst.upper().startswith("YES"), gst,
                  "" if gst.upper().startswith("YES") else "CSI cameras / RTSP via GStreamer need an OpenCV built with "
                  "GStreamer (JetPack's python3-opencv; pip's opencv-python-headless has none)"))
        ff = vio.get("FFMPEG", "NO")
        add(Check("OpenCV FFmpeg", ff.upper().startswith("YES"), ff,
                  "" if ff.upper().startswith("YES") else "video files / RTSP need OpenCV with FFmpeg"))
        v4l = vio.get("V4L/V4L2", "NO")
        add(Check("OpenCV V4L2", v4l.upper().startswith("YES"), v4l,
                  "" if v4l.upper().startswith("YES") else "USB cameras need OpenCV with V4L2"))
    except ImportError:
        add(Check("OpenCV", False, "not installed", "pip install opencv-python-headless", optional=False))

    # onnxruntime
    try:
        import onnxruntime as ort

        provs = ort.get_available_providers()
        add(Check("onnxruntime", True, f"{ort.__version__}; providers: {', '.join(provs)}", optional=False))
    except ImportError:
        add(Check("onnxruntime", False, "not installed", "pip install onnxruntime (or onnxruntime-gpu)", optional=False))
    v = _version("onnx")
    add(Check("onnx", v is not None, v or "not installed",
              "" if v else "needed for export and CPU INT8: pip install 'edgecrack[quant]'"))

    # torch (training only)
    tv = _version("torch")
    if tv:
        import torch

        cuda = torch.cuda.is_available()
        add(Check("PyTorch", True, f"{tv}; CUDA {'yes: ' + torch.cuda.get_device_name(0) if cuda else 'no'}"))
    else:
        add(Check("PyTorch", False, "not installed (only training, export and the torch backend need it)",
                  "pip install 'edgecrack[train]'"))

    # CUDA / GPU
    from .runtime._cuda import gpu_or_reason

    api, gpu, why = gpu_or_reason(0)
    smi = shutil.which("nvidia-smi")
    if gpu is not None:
        drv = api.driver_version()
        add(Check("NVIDIA GPU", True, f"{gpu.name}, sm {gpu.compute_capability}, {gpu.total_memory_mb} MiB, "
                  f"driver CUDA {drv or '?'} ({api.library})"))
        from .export.tensorrt import int8_unsupported_reason

        r = int8_unsupported_reason(gpu.major, gpu.minor, gpu.name)
        add(Check("GPU INT8", r is None, "fast INT8 kernels" if r is None else r,
                  "" if r is None else "build FP16 engines (edgecrack build-engine MODEL --precision fp16)"))
    else:
        add(Check("NVIDIA GPU", False, why or "none", "GPU backends need an NVIDIA GPU, its driver, and cuda-python "
                  "or pycuda" + ("" if smi else "; nvidia-smi not found")))
    trt_v = tensorrt_version()
    if trt_v:
        major = int(trt_v.split(".")[0])
        note = "" if 8 <= major <= 10 else ("FP16/INT8 builds need TensorRT 8.5-10.x" if major >= 11 else
                                              "TensorRT 8.5+ is needed")
        add(Check("TensorRT", not note, trt_v + (f" ({note})" if note else ""), note))
    else:
        add(Check("TensorRT", False, "not installed",
                  "pip install 'edgecrack[trt]' on a machine with an NVIDIA GPU (JetPack ships it); "
                  "CPU INT8 instead: edgecrack build-engine MODEL --precision int8 --target cpu"))

    # backends, by the registry's names (the ones open_backend walks in auto, then eager PyTorch)
    from .runtime.registry import AUTO_ORDER, probe_backend

    rep.backends = {name: probe_backend(name) for name in (*AUTO_ORDER, "torch-cpu")}
    return rep

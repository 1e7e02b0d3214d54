"""Facts about this machine, in one place: CPU, GPU, TensorRT, Jetson, OpenCV, libraries.

``doctor``, ``bench``, the engine cache, the TensorRT backend and the CPU INT8 builder all ask
here, so every report names the machine the same way. Nothing is installed and nothing heavy
is imported: library versions come from package metadata (torch is never imported), the GPU
from the CUDA bindings or ``nvidia-smi``, the Jetson from its device tree and ``nvpmodel``.

The engine-machine match lives here too (:func:`engine_mismatch`): a TensorRT plan runs only
on the TensorRT release and GPU it was built with, and both the backend and the engine cache
ask the same question.

Why the CPU instruction set matters for INT8: onnxruntime's x86 INT8 kernels multiply uint8
activations by int8 weights. Without VNNI (AVX2, AVX-512 without VNNI) they use ``vpmaddubsw``,
which adds two u8 x s8 products into a *saturating* int16: 255 x 127 x 2 = 64770 > 32767, so
large products clip. On the default 224 px crack model that cost 14 accuracy points (82.5 %
top-1 agreement with FP32) where the same Q/DQ graph executed as written lost 5 (90.8 %;
``benchmarks/int8``). Quantizing weights to 7 bits (``reduce_range``) keeps every pair sum
inside int16; onnxruntime documents it as the remedy for non-VNNI machines. With VNNI
(``vpdpbusd``, 32-bit accumulation) or AMX there is no saturation and full 8-bit weights are used.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .artifacts import EngineFacts
    from .manifest import Manifest

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """Feature flags of the first CPU in ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    m = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", cpuinfo, re.M)
    return set(m.group(1).split()) if m else set()


def cpu_name(cpuinfo: str | None = None) -> str:
    """Marketing name of the processor (``model name`` on x86, ``Hardware``/``Processor`` on Arm)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo, re.M)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Int8Isa:
    """What this processor offers INT8 inference.

    Attributes:
        arch: ``x86_64``, ``aarch64``, ...
        dot_product: The integer dot-product extension in use (``amx_int8``, ``avx512_vnni``,
            ``avx_vnni``, ``asimddp``) or None.
        saturating_u8s8: x86 without VNNI/AMX: u8 x s8 pair sums saturate at int16.
        reduce_range: Quantize weights to 7 bits (the remedy for ``saturating_u8s8``).
        summary: One line for reports.
    """

    arch: str
    dot_product: str | None
    saturating_u8s8: bool
    reduce_range: bool
    summary: str


def int8_isa(flags: set[str] | None = None, arch: str | None = None) -> Int8Isa:
    """Classify this CPU for INT8 (or the given ``flags``/``arch``, for reports of other machines)."""
    flags = cpu_flags() if flags is None else flags
    arch = (arch or platform.machine()).lower()
    if arch in ("x86_64", "amd64", "i686", "x86"):
        dp = next((f for f in VNNI_FLAGS[::-1] if f in flags), None)
        if dp:
            return Int8Isa(arch, dp, False, False, f"x86 with {dp}: 8-bit weights, no saturation")
        simd = "avx512bw" if "avx512bw" in flags else "avx2" if "avx2" in flags else "sse4.1" if "sse4_1" in flags else "no SIMD"
        return Int8Isa(arch, None, True, True,
                       f"x86 {simd} without VNNI: u8s8 kernels saturate, weights quantized to 7 bits (reduce_range)")
    if arch in ("aarch64", "arm64"):
        dp = "asimddp" if "asimddp" in flags else None
        return Int8Isa(arch, dp, False, False,
                       f"arm64 {'with' if dp else 'without'} the dot-product extension (asimddp)")
    return Int8Isa(arch, None, False, False, f"{arch}: INT8 speed unknown; measured by build-engine --target cpu")


# -- files and commands ---------------------------------------------------------------------


def read_text(path: str | Path) -> str | None:
    """A small system file (``/proc``, ``/sys``, device tree) as text, NULs dropped; None when unreadable."""
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def command_output(argv: list[str], timeout: float = 10.0) -> str | None:
    """Stdout of a system tool (``nvidia-smi``, ``nvpmodel``) when it exists and succeeds, else None."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def dist_version(*names: str) -> str | None:
    """Installed version of the first distribution found among ``names`` (package metadata, no import)."""
    from importlib import metadata

    for n in names:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return None


# -- CPU --------------------------------------------------------------------------------------


def physical_cores(cpuinfo: str | None = None) -> int | None:
    """Distinct (package, core) pairs in ``/proc/cpuinfo``; None where it does not say."""
    info = read_text("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    if not info:
        return None
    cores = set()
    for block in info.split("\n\n"):
        pid = re.search(r"^physical id\s*:\s*(\d+)", block, re.M)
        cid = re.search(r"^core id\s*:\s*(\d+)", block, re.M)
        if pid and cid:
            cores.add((pid.group(1), cid.group(1)))
    return len(cores) or None


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_facts() -> dict[str, Any]:
    """``model``, ``logical_cores``, ``physical_cores``, ``usable_cores``, ``governor``."""
    return {"model": cpu_name(), "logical_cores": os.cpu_count(), "physical_cores": physical_cores(),
            "usable_cores": usable_cores(), "governor": read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")}


def memory_gb() -> float | None:
    """Total memory in GiB (Linux ``MemTotal``)."""
    mem = re.search(r"MemTotal:\s*(\d+)", read_text("/proc/meminfo") or "")
    return round(int(mem.group(1)) / 2**20, 1) if mem else None


# -- OpenCV -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def opencv_build_information() -> str:
    """``cv2.getBuildInformation()``, read once per process (it is a few KB of text)."""
    import cv2

    return cv2.getBuildInformation()


def opencv_build_flag(key: str, info: str | None = None) -> str | None:
    """The value of one ``Key: value`` line of OpenCV's build information (first match), e.g. ``GUI``."""
    text = opencv_build_information() if info is None else info
    m = re.search(rf"^\s*{re.escape(key)}:\s*(.*)$", text, re.M)
    return m.group(1).strip() if m else None


def opencv_video_io(info: str | None = None) -> dict[str, str]:
    """Video I/O backends of the installed OpenCV build (``GStreamer``, ``FFMPEG``, ``V4L/V4L2``, ``avcodec``)."""
    text = opencv_build_information() if info is None else info
    section = re.search(r"Video I/O:(.*?)(?:\n  [A-Z][^\n]*:\n|\Z)", text, re.S)
    part = section.group(1) if section else text
    out: dict[str, str] = {}
    for key in ("GStreamer", "FFMPEG", "V4L/V4L2", "avcodec"):
        v = opencv_build_flag(key, part)
        if v is not None:
            out[key] = v
    return out


def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV build can open GStreamer pipelines itself."""
    return (opencv_video_io().get("GStreamer") or "").upper().startswith("YES")


def opencv_has_gui() -> bool:
    """Whether this OpenCV build can show windows (``opencv-python-headless`` cannot)."""
    return "NONE" not in (opencv_build_flag("GUI") or "NONE").upper()


# -- Jetson -----------------------------------------------------------------------------------


def jetson_facts(tools: bool = False) -> dict[str, Any] | None:
    """The Jetson module this runs on, or None elsewhere.

    Args:
        tools: Also ask ``nvpmodel -q`` and ``jetson_clocks --show`` (subprocesses): the power
            mode and clocks change numbers 2-3x, so a benchmark records them.

    Returns:
        ``model`` (device tree), ``l4t`` (first line of ``/etc/nv_tegra_release``) and, with
        ``tools``, ``power_mode`` and ``jetson_clocks``.
    """
    model = read_text("/proc/device-tree/model")
    tegra = read_text("/etc/nv_tegra_release")
    if not tegra and not (model and ("jetson" in model.lower() or "nvidia" in model.lower())):
        return None
    out: dict[str, Any] = {"model": model, "l4t": tegra.splitlines()[0] if tegra else None}
    if tools:
        out["power_mode"] = command_output(["nvpmodel", "-q"])
        out["jetson_clocks"] = command_output(["jetson_clocks", "--show"])
    return out


# -- GPU and TensorRT -------------------------------------------------------------------------


def nvidia_smi_gpus() -> list[dict[str, Any]]:
    """GPUs as ``nvidia-smi`` lists them (name, driver, memory, compute capability); empty without it."""
    gpus = []
    smi = command_output(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"])
    for line in (smi or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2],
                         "compute_capability": parts[3] if len(parts) > 3 else None})
    return gpus


def tensorrt_version() -> str | None:
    """Installed TensorRT version, or None when the Python package is missing or broken."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    except Exception:  # noqa: BLE001 - a broken install (missing libnvinfer) raises OSError etc.
        return None
    return str(trt.__version__)


@dataclass(frozen=True)
class MachineFacts:
    """What makes a TensorRT plan valid on a machine.

    Attributes:
        tensorrt_version: Installed TensorRT release, e.g. ``10.3.0``.
        gpu_name: CUDA device name, e.g. ``Orin``.
        compute_capability: ``major.minor``, e.g. ``8.7``.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt_version} on {self.gpu_name} (sm {self.compute_capability})"


def probe_machine(device_index: int = 0) -> tuple[MachineFacts | None, str | None]:
    """This machine's TensorRT version and GPU, or (None, why TensorRT cannot run here)."""
    trt = tensorrt_version()
    if trt is None:
        return None, "TensorRT is not installed (JetPack's python3-libnvinfer, or pip install 'edgecrack[trt]')"
    from .runtime._cuda import gpu_or_reason

    _, gpu, why = gpu_or_reason(device_index)
    if gpu is None:
        return None, f"no usable NVIDIA GPU: {why}"
    return MachineFacts(trt, gpu.name, gpu.compute_capability), None


def same_tensorrt_release(a: str, b: str) -> bool:
    """Plans are tied to the TensorRT release (major.minor.patch); the 4th field (build) does not matter."""
    return str(a).split(".")[:3] == str(b).split(".")[:3]


def engine_mismatch(engine: EngineFacts, machine: MachineFacts) -> str | None:
    """Why an engine (by its typed facts) cannot run on ``machine``; None when it can."""
    built = engine.built_for()
    if not same_tensorrt_release(engine.tensorrt_version or "", machine.tensorrt_version):
        return f"built with {built}, this machine has {machine.describe()}"
    if str(engine.compute_capability) != machine.compute_capability or engine.gpu_name != machine.gpu_name:
        return f"built for {built}, this machine has {machine.describe()}"
    return None


def engine_matches_machine(manifest: Manifest, device_index: int = 0) -> str | None:
    """Whether an engine (by its sidecar manifest) can run on this machine's GPU ``device_index``.

    Returns:
        None when TensorRT release, GPU model and compute capability match; otherwise the
        reason, naming what the engine was built for and what this machine has.
    """
    from .artifacts import EngineFacts

    if manifest.kind != "tensorrt":
        return f"not a TensorRT engine manifest (kind {manifest.kind!r})"
    facts = EngineFacts.from_manifest(manifest)
    if tensorrt_version() is None:
        return f"TensorRT is not installed here (the engine needs TensorRT {facts.tensorrt_version or '?'})"
    machine, why = probe_machine(device_index)
    if machine is None:
        return why
    why = engine_mismatch(facts, machine)
    return None if why is None else f"engine was {why}"


# -- libraries and the whole picture ----------------------------------------------------------


def library_versions() -> dict[str, Any]:
    """edgecrack, numpy, OpenCV, onnxruntime (+ providers), torch, TensorRT, pycuda; torch is not imported."""
    import cv2
    import numpy as np

    from . import __version__

    versions: dict[str, Any] = {"edgecrack": __version__, "numpy": np.__version__, "opencv": cv2.__version__}
    try:
        import onnxruntime as ort

        versions["onnxruntime"] = ort.__version__
        versions["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        versions["onnxruntime"] = None
    versions["torch"] = dist_version("torch")
    versions["tensorrt"] = dist_version("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt_libs")
    if versions["tensorrt"] is None:
        # JetPack installs TensorRT's Python bindings as a Debian package without dist-info.
        from importlib.util import find_spec

        if find_spec("tensorrt") is not None:
            versions["tensorrt"] = tensorrt_version() or "present but fails to import"
    versions["pycuda"] = dist_version("pycuda")
    return versions


def environment() -> dict[str, Any]:
    """Machine, accelerator and library versions: what every benchmark number depends on.

    Returns:
        ``hostname``, ``os``, ``python``, ``machine``, ``cpu`` (see :func:`cpu_facts`),
        ``memory_gb``, ``loadavg``, ``gpu`` (``nvidia-smi`` list, empty without an NVIDIA
        GPU), ``jetson`` (with power mode and clocks) or None, ``versions``.
    """
    return {
        "hostname": platform.node(), "os": platform.platform(), "python": platform.python_version(),
        "machine": platform.machine(), "cpu": cpu_facts(), "memory_gb": memory_gb(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": nvidia_smi_gpus(), "jetson": jetson_facts(tools=True), "versions": library_versions(),
    }


def machine_summary() -> dict[str, Any]:
    """The few machine facts the benchmark scripts print in their report headers (cheap: no subprocess)."""
    v = library_versions()
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "torch": v.get("torch"), "onnxruntime": v.get("onnxruntime"),
            "opencv": v.get("opencv")}

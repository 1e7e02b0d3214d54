"""CPU facts that decide INT8: the processor's name and the integer dot-product instructions it has.

One home for what ``doctor``, the CPU INT8 builder and the benchmarks say about the processor.

Why the instruction set matters: onnxruntime's x86 INT8 kernels multiply uint8 activations by
int8 weights. Without VNNI (AVX2, AVX-512 without VNNI) they use ``vpmaddubsw``, which adds two
u8 x s8 products into a *saturating* int16: 255 x 127 x 2 = 64770 > 32767, so large products
clip. On the default 224 px crack model that cost 14 accuracy points (82.5 % top-1 agreement
with FP32) where the same Q/DQ graph executed as written lost 5 (90.8 %; ``benchmarks/int8``). Quantizing weights to 7 bits (``reduce_range``) keeps every pair
sum inside int16; onnxruntime documents it as the remedy for non-VNNI machines. With VNNI
(``vpdpbusd``, 32-bit accumulation) or AMX there is no saturation and full 8-bit weights are used.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

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

"""Resident memory of one backend: before loading, after loading, and the peak while it ran.

Linux only (``/proc/self/status``); elsewhere the figures say they are unavailable. The peak is
``VmHWM`` after a reset through ``/proc/self/clear_refs`` (Linux >= 4.0), so each backend of one
process gets its own peak. ``tracemalloc`` is not used: it sees Python allocations only, not
onnxruntime's, TensorRT's or PyTorch's native memory.
"""

from __future__ import annotations

import gc
import re
from typing import Any

from ..platform import read_text


def status_kb(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), None where there is none."""
    m = re.search(rf"^{key}:\s*(\d+)\s*kB", read_text("/proc/self/status") or "", re.M)
    return int(m.group(1)) if m else None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current resident set; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so the next baseline is honest."""
    gc.collect()
    try:
        import ctypes

        # glibc keeps freed arenas mapped; trimming makes the next backend's baseline honest.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryProbe:
    """Start before loading a backend; call :meth:`loaded` after loading, :meth:`result` at the end."""

    def __init__(self) -> None:
        release_memory()
        self.resettable = reset_peak_rss()
        self.rss0 = status_kb("VmRSS")
        self.after_load: int | None = None

    def loaded(self) -> None:
        self.after_load = status_kb("VmRSS")

    def result(self) -> dict[str, Any]:
        """``method``, ``rss_before_mb``, ``rss_after_load_delta_mb``, ``peak_delta_mb`` (MiB)."""
        if self.rss0 is None:
            return {"method": "unavailable (no /proc/self/status on this OS)"}
        hwm = status_kb("VmHWM")
        mb = 1024.0
        out = {"method": "process resident set (Linux VmRSS); peak = VmHWM after a reset via /proc/self/clear_refs, "
                         "minus the resident set before loading",
               "rss_before_mb": round(self.rss0 / mb, 1),
               "rss_after_load_delta_mb": None if self.after_load is None else round((self.after_load - self.rss0) / mb, 1)}
        if self.resettable and hwm is not None:
            out["peak_delta_mb"] = round((hwm - self.rss0) / mb, 1)
        else:
            out["peak_delta_mb"] = None
            out["method"] += " (peak unavailable: clear_refs not writable)"
        return out

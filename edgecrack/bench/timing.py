"""Timed loops and the latency statistics they produce.

A loop warms up, runs a garbage collection, then times each call with ``time.perf_counter``
for a fixed count or a time budget. Several loops can be interleaved in short blocks so that
load from other processes hits them alike (ratios measured side by side).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

MAX_SAMPLES = 2000  # raw latencies kept per measurement in the JSON (for plots and re-analysis)


@dataclass(frozen=True)
class LoopBudget:
    """How long each timed loop runs.

    Attributes:
        warmup: Untimed calls before timing (stops after one ``duration_s`` once a call was made).
        duration_s: Seconds per timed loop (used when ``iterations`` is None).
        iterations: Fixed number of timed calls (overrides ``duration_s``).
        min_iterations: Calls a duration-bound loop makes at least, unless that would take more
            than five times the duration (slow backend at a large batch): then three.
    """

    warmup: int = 3
    duration_s: float = 1.0
    iterations: int | None = None
    min_iterations: int = 5


@dataclass
class LatencyStats:
    """Latency distribution of one timed loop, and the throughput it implies.

    Percentiles are numpy's default (linear interpolation between closest ranks, Hyndman &
    Fan type 7): the p50 of ``1..10`` is 5.5 and its p90 is 9.1.

    Attributes:
        n: Timed calls.
        batch: Images per call.
        mean_ms, std_ms, min_ms, p50_ms, p90_ms, p99_ms, max_ms: Per-call latency.
        wall_s: Wall time of the timed loop.
        images_per_s: ``batch * n / wall_s``.
        samples_ms: Raw per-call latencies (evenly thinned to at most 2000).
    """

    n: int
    batch: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wall_s: float
    images_per_s: float
    samples_ms: list[float] = field(default_factory=list)

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], batch: int = 1, wall_s: float | None = None) -> "LatencyStats":
        """Statistics of per-call latencies.

        Args:
            samples_ms: Per-call latencies in milliseconds (at least one).
            batch: Images per call.
            wall_s: Wall time of the loop; the sum of the samples when not given.

        Raises:
            ValueError: No samples.
        """
        a = np.asarray([float(v) for v in samples_ms], dtype=np.float64)
        if not a.size:
            raise ValueError("no latency samples")
        wall = float(wall_s) if wall_s is not None else float(a.sum()) / 1e3
        keep = a if a.size <= MAX_SAMPLES else a[np.linspace(0, a.size - 1, MAX_SAMPLES).astype(int)]
        p50, p90, p99 = (float(v) for v in np.percentile(a, (50, 90, 99)))
        return cls(n=int(a.size), batch=batch, mean_ms=float(a.mean()), std_ms=float(a.std()), min_ms=float(a.min()),
                   p50_ms=p50, p90_ms=p90, p99_ms=p99, max_ms=float(a.max()), wall_s=wall,
                   images_per_s=batch * a.size / wall if wall > 0 else 0.0,
                   samples_ms=[round(float(v), 4) for v in keep])

    @property
    def per_image_ms(self) -> float:
        return self.p50_ms / self.batch


def _done(budget: LoopBudget, calls: int, elapsed: float, duration: float) -> bool:
    if budget.iterations is not None:
        return calls >= budget.iterations
    return elapsed >= duration and (calls >= budget.min_iterations or (elapsed >= 5 * duration and calls >= 3))


def timed_loop(fn: Callable[[int], Any], budget: LoopBudget) -> tuple[list[float], float, list[Any]]:
    """Warm up, then time ``fn(k)`` for ``k = 0, 1, ...`` within the budget.

    Returns:
        (per-call milliseconds, wall seconds of the timed part, what each call returned)
    """
    w0 = time.perf_counter()
    for k in range(budget.warmup):
        fn(k)
        if budget.iterations is None and time.perf_counter() - w0 >= budget.duration_s:
            break
    samples: list[float] = []
    results: list[Any] = []
    gc.collect()
    start = time.perf_counter()
    k = 0
    while True:
        t0 = time.perf_counter()
        r = fn(k)
        samples.append((time.perf_counter() - t0) * 1e3)
        results.append(r)
        k += 1
        if _done(budget, k, time.perf_counter() - start, budget.duration_s):
            break
    return samples, time.perf_counter() - start, results


def interleaved(loops: dict[str, Callable[[], Any]], budget: LoopBudget, block: int | None = None,
                ) -> tuple[dict[str, LatencyStats], int]:
    """Time several batch-1 loops in alternating blocks, so drifting load hits them alike.

    Without ``block``, blocks last about half a second of the slowest loop (1 to 10 calls).
    The loop budget is three durations (or ``iterations`` calls per loop), with the same
    minimum-calls rule as :func:`timed_loop`.

    Returns:
        (statistics per loop name, the block size used)
    """
    first: dict[str, float] = {}
    for name, fn in loops.items():
        w0 = time.perf_counter()
        for _ in range(max(budget.warmup, 1)):
            t0 = time.perf_counter()
            fn()
            first[name] = time.perf_counter() - t0
            if budget.iterations is None and time.perf_counter() - w0 >= budget.duration_s:
                break
    if block is None:
        block = int(min(10, max(1, 0.5 / max(max(first.values()), 1e-6))))
    samples: dict[str, list[float]] = {k: [] for k in loops}
    start = time.perf_counter()
    while True:
        for name, fn in loops.items():
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
        n = len(samples[next(iter(loops))])
        if _done(budget, n, time.perf_counter() - start, 3 * budget.duration_s):
            break
    return {k: LatencyStats.from_samples(v, 1) for k, v in samples.items()}, block

"""edgecrack.bench.timing: latency statistics and the timed loops' budgets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecrack.bench.timing import LatencyStats, LoopBudget, interleaved, timed_loop


def test_latency_stats_from_samples():
    s = LatencyStats.from_samples([10.0, 20.0, 30.0, 40.0], batch=2, wall_s=0.2)
    assert (s.n, s.batch) == (4, 2)
    assert s.mean_ms == 25.0 and s.min_ms == 10.0 and s.max_ms == 40.0
    assert s.p50_ms == pytest.approx(25.0)
    assert s.p90_ms == pytest.approx(37.0)  # r=2.7 -> 30 + 0.7*10
    assert s.p99_ms == pytest.approx(39.7)
    assert s.std_ms == pytest.approx(math.sqrt(125.0))
    assert s.images_per_s == pytest.approx(40.0)  # 2 images * 4 calls / 0.2 s
    assert s.per_image_ms == pytest.approx(12.5)
    # Without a wall time the loop time is the sum of the calls: 8 images / 0.1 s.
    assert LatencyStats.from_samples([10.0, 20.0, 30.0, 40.0], batch=2).images_per_s == pytest.approx(80.0)
    big = LatencyStats.from_samples(np.arange(5000, dtype=float), batch=1)
    assert big.n == 5000 and len(big.samples_ms) == 2000 and big.samples_ms[0] == 0 and big.samples_ms[-1] == 4999


def test_percentiles_are_numpys_linear_interpolation():
    # 1..10 shuffled: rank r = q/100 * (n-1); p50: 5 + 0.5; p90: 9 + 0.1; p99: 9 + 0.91
    s = LatencyStats.from_samples([7, 3, 1, 10, 2, 9, 4, 8, 6, 5])
    assert (s.p50_ms, s.p90_ms, s.p99_ms) == pytest.approx((5.5, 9.1, 9.91))
    assert LatencyStats.from_samples([42.0]).p99_ms == 42.0
    with pytest.raises(ValueError, match="no latency samples"):
        LatencyStats.from_samples([])


def test_timed_loop_counts_iterations_and_honours_the_minimum():
    calls = []
    samples, wall, results = timed_loop(lambda k: calls.append(k) or k * 2, LoopBudget(warmup=2, iterations=4))
    assert calls == [0, 1, 0, 1, 2, 3] and results == [0, 2, 4, 6] and len(samples) == 4 and wall > 0
    # A duration-bound loop of instant calls stops at min_iterations once the time is up.
    samples, wall, _ = timed_loop(lambda k: None, LoopBudget(warmup=0, duration_s=0.01, min_iterations=7))
    assert len(samples) >= 7 and wall >= 0.01


def test_interleaved_loops_alternate_blocks_of_equal_size():
    order = []
    stats, block = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                               LoopBudget(warmup=1, iterations=6), block=3)
    assert block == 3 and stats["a"].n == stats["b"].n == 6
    assert order[2:] == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3  # after one warm-up call each

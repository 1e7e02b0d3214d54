"""edgecrack.bench.goals: the goals, and a summary that agrees with itself."""

from __future__ import annotations

import pytest
from bench_reports import report_dict, stats

from edgecrack.bench import BenchReport, goals_of, summarize


def _with_side_by_side(onnx_p50: float, torch_p50: float, side_onnx: float, side_torch: float) -> BenchReport:
    # The committed 2-core report: separate loops 26.2 vs 130.25 ms (4.97x), side by side
    # 31.55 vs 122.9 ms (3.90x); its summary said "4.97x faster than the runner-up" and its goal 3.90x.
    rep = BenchReport.from_dict(report_dict(onnx_p50=onnx_p50, torch_p50=torch_p50))
    rep.baseline["eager_torch"] = {
        "slow_cell": "checkpoint.safetensors / torch-cpu", "fast_cell": "model.onnx / onnxruntime-cpu", "threads": 2,
        "method": "interleaved", "block": 4, "slow": stats(side_torch), "fast": stats(side_onnx),
        "ratio_p50": side_torch / side_onnx}
    rep.goals = goals_of(rep)
    rep.summary = summarize(rep)
    return rep


def test_runner_up_ratio_is_the_goals_ratio_for_the_same_pair():
    rep = _with_side_by_side(26.2, 130.25, 31.55, 122.9)
    goal = next(g for g in rep.goals if g.name == "speedup_vs_eager_torch")
    ru = rep.summary["runner_up"]
    assert ru["cell"] == "checkpoint.safetensors / torch-cpu" and ru["measured"] == "side by side"
    assert ru["ratio"] == pytest.approx(goal.value) == pytest.approx(122.9 / 31.55)
    lines = "\n".join(rep.summary["lines"])
    assert "3.90x faster than the runner-up checkpoint.safetensors / torch-cpu" in lines
    assert "speedup_vs_eager_torch: 3.90x" in lines and "4.97x" not in lines


def test_without_a_side_by_side_measurement_the_separate_loops_rank_and_measure():
    rep = BenchReport.from_dict(report_dict(onnx_p50=10.0, torch_p50=40.0))
    rep.goals = goals_of(rep)
    rep.summary = summarize(rep)
    assert rep.summary["runner_up"] == {"cell": "checkpoint.safetensors / torch-cpu", "ratio": pytest.approx(4.0),
                                        "measured": "separate loops"}
    goal = next(g for g in rep.goals if g.name == "speedup_vs_eager_torch")
    assert goal.value == pytest.approx(4.0) and "separate" in goal.definition


def test_side_by_side_contradicting_the_ranking_is_said_not_hidden():
    rep = _with_side_by_side(10.0, 11.0, 12.0, 10.0)  # side by side torch was faster
    line = next(x for x in rep.summary["lines"] if "runner-up" in x)
    assert "was 1.20x faster side by side" in line and rep.summary["runner_up"]["ratio"] == pytest.approx(10 / 12)


def test_overhead_goal_from_the_bare_session_baseline():
    rep = BenchReport.from_dict(report_dict())
    rep.baseline["bare_onnxruntime"] = {"artifact": "model.onnx", "threads": 2, "ratio_e2e_p50": 1.2,
                                        "ratio_compute_p50": 1.01, "e2e": stats(12.0), "bare": stats(10.0),
                                        "compute": stats(10.1)}
    ov = next(g for g in goals_of(rep) if g.name == "overhead_vs_bare_onnxruntime")
    assert ov.value == 1.2 and ov.met is False and ov.detail["bare_p50_ms"] == pytest.approx(10.0)

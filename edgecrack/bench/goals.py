"""The goals the project reports against, and the five-second summary of a report.

One rule keeps the summary consistent with itself: a pair of cells has one speed ratio. When
the pair was also measured side by side (the eager-PyTorch baseline), that measurement is the
ratio, in the summary line and in the goal alike; the separate per-backend loops (measured
minutes apart, under whatever else the machine did meanwhile) only rank the cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .schema import BenchReport, CellResult, Goal

#: The performance goals, as ratios measured in one run.
OVERHEAD_GOAL = 1.15
TORCH_SPEEDUP_GOAL = 3.0
#: Baseline entries that time two cells side by side (``slow_cell``, ``fast_cell``, ``ratio_p50``).
SIDE_BY_SIDE = ("eager_torch", "cpu_pair")


def reference_index(results: list[CellResult]) -> int | None:
    """The FP32 reference: model.onnx on onnxruntime-cpu, else any FP32 ONNX, else the checkpoint."""
    order = [
        lambda c: c.backend == "onnxruntime-cpu" and c.kind == "onnx" and c.precision == "fp32",
        lambda c: c.kind == "onnx" and c.precision == "fp32",
        lambda c: c.kind == "checkpoint",
    ]
    for pred in order:
        for i, c in enumerate(results):
            if c.ok and c.accuracy is not None and pred(c):
                return i
    return None


def smallest_batch(report: BenchReport) -> int | None:
    bs = sorted({b.batch for c in report.results if c.ok for b in c.batches})
    return bs[0] if bs else None


def pair_ratio(report: BenchReport, slow: CellResult, fast: CellResult, batch: int) -> tuple[float, str]:
    """How many times faster ``fast`` is than ``slow`` (compute p50 per image), and how that was measured.

    The side-by-side measurement of the pair (batch 1: the eager-PyTorch baseline, or the two
    fastest onnxruntime CPU cells) when there is one, else the two cells' separate loops at
    ``batch``. Goals and summary both call this, so a report never states two different ratios for
    one pair.

    Returns:
        (ratio, ``"side by side"`` or ``"separate loops"``)
    """
    for key in SIDE_BY_SIDE:
        et = report.baseline.get(key)
        if et and batch == 1 and {et.get("slow_cell"), et.get("fast_cell")} == {slow.label, fast.label}:
            r = float(et["ratio_p50"])
            return (r if et["slow_cell"] == slow.label else 1.0 / r), "side by side"
    return slow.batch(batch).compute.per_image_ms / fast.batch(batch).compute.per_image_ms, "separate loops"


def goals_of(report: BenchReport) -> list[Goal]:
    """The two ratio goals of the project, measured from one report.

    - ``overhead_vs_bare_onnxruntime``: edgecrack's end-to-end ORT CPU p50 at batch 1
      divided by a bare onnxruntime session's p50 on the same ONNX and the same preprocessed
      tensor (goal <= 1.15).
    - ``speedup_vs_eager_torch``: eager PyTorch's compute p50 at batch 1 divided by the
      fastest CPU artifact's (goal >= 3), same threads.
    """
    goals: list[Goal] = []
    bl = report.baseline.get("bare_onnxruntime")
    if bl:
        r = bl["ratio_e2e_p50"]
        goals.append(Goal("overhead_vs_bare_onnxruntime", r, OVERHEAD_GOAL, "max", r <= OVERHEAD_GOAL,
                          "edgecrack end-to-end p50 (decode + preprocess + Backend.infer + postprocess) / bare "
                          "onnxruntime session.run p50 on the same preprocessed tensor; ORT CPU, batch 1, same threads",
                          {"e2e_p50_ms": bl["e2e"]["p50_ms"], "bare_p50_ms": bl["bare"]["p50_ms"],
                           "compute_p50_ms": bl["compute"]["p50_ms"], "ratio_compute_p50": bl["ratio_compute_p50"],
                           "artifact": bl["artifact"], "threads": bl["threads"]}))
    else:
        goals.append(Goal("overhead_vs_bare_onnxruntime", None, OVERHEAD_GOAL, "max", None,
                          "needs model.onnx on onnxruntime-cpu with the baseline enabled", {"reason": "not measured"}))
    torch_cell = next((c for c in report.results if c.ok and c.backend == "torch-cpu" and c.batch(1)), None)
    cpu = [c for c in report.results if c.ok and c.backend in ("onnxruntime-cpu",) and c.batch(1)]
    et = report.baseline.get("eager_torch")
    if et:
        r = et["ratio_p50"]
        goals.append(Goal("speedup_vs_eager_torch", r, TORCH_SPEEDUP_GOAL, "min", r >= TORCH_SPEEDUP_GOAL,
                          "eager PyTorch compute p50 / fastest CPU artifact compute p50 (Backend.infer, same tensor), "
                          "batch 1, same threads, interleaved",
                          {"torch_p50_ms": et["slow"]["p50_ms"], "fastest": et["fast_cell"], "fastest_p50_ms": et["fast"]["p50_ms"],
                           "threads": et["threads"], "method": et["method"]}))
    elif torch_cell and cpu:
        # Without the interleaved baseline, fall back to the separate loops (minutes apart).
        best = min(cpu, key=lambda c: c.batch(1).compute.p50_ms)
        t, f = torch_cell.batch(1).compute.p50_ms, best.batch(1).compute.p50_ms
        r, _ = pair_ratio(report, torch_cell, best, 1)
        goals.append(Goal("speedup_vs_eager_torch", r, TORCH_SPEEDUP_GOAL, "min", r >= TORCH_SPEEDUP_GOAL,
                          "eager PyTorch compute p50 / fastest CPU artifact compute p50, batch 1, same threads, "
                          "from the separate per-backend loops",
                          {"torch_p50_ms": t, "fastest": best.label, "fastest_p50_ms": f,
                           "threads": report.config.get("threads_resolved")}))
    else:
        why = "no torch-cpu measurement at batch 1" if not torch_cell else "no CPU artifact measured at batch 1"
        goals.append(Goal("speedup_vs_eager_torch", None, TORCH_SPEEDUP_GOAL, "min", None,
                          "eager PyTorch compute p50 / fastest CPU artifact compute p50, batch 1", {"reason": why}))
    return goals


def summarize(report: BenchReport) -> dict[str, Any]:
    """The five-second answer: the fastest backend within the accuracy budget, and by how much.

    "Fastest" is the lowest compute p50 per image at the smallest measured batch; a cell is
    within budget when its accuracy is at most ``accuracy_budget`` below the reference's
    (the FP32 ONNX on onnxruntime-cpu, else the checkpoint). Without accuracy measurements
    every measured cell qualifies and the summary says so.
    """
    budget = float(report.config.get("accuracy_budget", 0.01))
    ok = [c for c in report.results if c.ok and c.batches]
    lines: list[str] = []
    out: dict[str, Any] = {"lines": lines, "fastest": None, "runner_up": None, "best_throughput": None,
                           "over_budget": [], "unavailable": [c.label for c in report.results if not c.ok]}
    if not ok:
        lines.append("nothing could be measured here (every backend unavailable; see the table)")
        return out
    b0 = smallest_batch(report)
    ref_i = reference_index(report.results)
    ref = report.results[ref_i] if ref_i is not None else None
    if ref is not None:
        floor = ref.accuracy.accuracy - budget
        within = [c for c in ok if c.accuracy is not None and c.accuracy.accuracy >= floor - 1e-12]
        out["over_budget"] = [c.label for c in ok if c not in within]
        out["reference"] = {"cell": ref.label, "accuracy": ref.accuracy.accuracy, "budget": budget}
    else:
        within = ok
    cand = [c for c in within if c.batch(b0)]
    if not cand:
        lines.append(f"no measured backend is within the accuracy budget of {budget:.3f}")
        return out
    cand.sort(key=lambda c: c.batch(b0).compute.per_image_ms)
    best = cand[0]
    bb = best.batch(b0)
    out["fastest"] = {"cell": best.label, "batch": b0, "compute_p50_ms": bb.compute.p50_ms,
                      "e2e_p50_ms": bb.e2e.p50_ms if bb.e2e else None}
    acc = f", accuracy {best.accuracy.accuracy:.3f}" if best.accuracy else ""
    e2e = f", {bb.e2e.p50_ms:.2f} ms end to end" if bb.e2e else ""
    lines.append(f"fastest within the accuracy budget: {best.label} — {bb.compute.p50_ms:.2f} ms p50 at batch {b0}{e2e}{acc}")
    if len(cand) > 1:
        ru = cand[1]
        r, how = pair_ratio(report, ru, best, b0)
        out["runner_up"] = {"cell": ru.label, "ratio": r, "measured": how}
        lines.append(_faster_line(r, how, f"the runner-up {ru.label}", f"{ru.batch(b0).compute.p50_ms:.2f} ms"))
    slowest = max(ok, key=lambda c: c.batch(b0).compute.per_image_ms if c.batch(b0) else 0)
    if slowest is not best and slowest is not cand[min(1, len(cand) - 1)] and slowest.batch(b0):
        r, how = pair_ratio(report, slowest, best, b0)
        out["vs_slowest"] = {"cell": slowest.label, "ratio": r, "measured": how}
        lines.append(_faster_line(r, how, f"the slowest, {slowest.label}", None))
    thr = max(((c, b) for c in cand for b in c.batches), key=lambda cb: cb[1].compute.images_per_s)
    out["best_throughput"] = {"cell": thr[0].label, "batch": thr[1].batch, "images_per_s": thr[1].compute.images_per_s}
    lines.append(f"best throughput: {thr[0].label} at batch {thr[1].batch}: {thr[1].compute.images_per_s:.0f} images/s")
    if ref is None:
        lines.append("accuracy was not measured: speed alone ranks the backends")
    elif out["over_budget"]:
        lines.append(f"over the accuracy budget ({budget:.3f} below {ref.label}): {', '.join(out['over_budget'])}")
    for g in report.goals:
        if g.value is None:
            lines.append(f"goal {g.name}: not measured ({g.detail.get('reason', '')})")
        else:
            op = "<=" if g.direction == "max" else ">="
            lines.append(f"goal {g.name}: {g.value:.2f}x (goal {op} {g.goal:g}x): {'met' if g.met else 'NOT met'}")
    if out["unavailable"]:
        lines.append(f"{len(out['unavailable'])} backend(s) could not run here (reasons in the table)")
    return out


def _faster_line(r: float, how: str, whom: str, detail: str | None) -> str:
    extra = [detail] if detail else []
    if how == "side by side":
        extra.append("timed side by side")
    tail = f" ({'; '.join(extra)})" if extra else ""
    if r >= 1:
        return f"  {r:.2f}x faster than {whom}{tail}"
    # The separate loops ranked the pair one way, the side-by-side measurement the other: say so.
    loop = f" ({detail} in its own loop)" if detail else ""
    return f"  {whom} was {1 / r:.2f}x faster side by side, although the separate loops ranked it second{loop}"


def method_notes(report: BenchReport, data: Path) -> list[str]:
    cfg = report.config
    loop = (f"{cfg['iterations']} timed calls" if cfg.get("iterations") else
            f"at least {cfg['duration_s']:g} s and {cfg['min_iterations']} calls (3 when that takes over "
            f"{5 * cfg['duration_s']:g} s)")
    notes = [
        f"Each loop: up to {cfg['warmup']} warm-up calls (at most one loop duration), then {loop}; latency is per call (a whole batch), "
        "throughput is images per second of the timed loop.",
        "compute = Backend.infer on a prepared uint8 tensor of real images; end to end = decode the files "
        "(from the page cache after the first pass) + preprocess + infer + threshold to labels.",
        f"All backends run with {cfg['threads_resolved']} CPU thread(s) for intra-op work.",
        "Memory: see each row's memory.method; the peak includes the runtime's arena, activations and "
        "the decoded images, not the library's import.",
        f"Accuracy on {data} at each manifest's threshold; if the model was trained on these images it is "
        "not a held-out accuracy, but it still exposes any loss between artifacts.",
    ]
    la, lb = report.environment.get("loadavg"), report.environment.get("loadavg_end")
    cores = (report.environment.get("cpu") or {}).get("usable_cores") or 1
    if la and lb and max(la[0], lb[0]) > cores + 0.5:
        notes.append(f"The machine was busy (load average {la[0]:.1f} at start, {lb[0]:.1f} at end on {cores} cores): "
                     "absolute numbers are pessimistic; ratios measured side by side are more robust. Multi-threaded "
                     "runtimes suffer most from such oversubscription (a descheduled worker thread stalls every "
                     "parallel operator; PyTorch's OpenMP more than onnxruntime's spinning pool): compare with "
                     "--threads 1 or measure on an idle machine.")
    notes += [str(n) for n in cfg.get("notes") or []]
    return notes

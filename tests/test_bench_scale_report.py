"""The committed scale benchmark report is what ``benchmarks/bench_scale.py`` renders from its JSON."""

from __future__ import annotations

import json
from pathlib import Path

from bench_reports import benchmark_module

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "scale"


def test_committed_scale_report_matches_its_json_and_compares_before_after():
    rep = json.loads((REPORT / "scale.json").read_text())
    md = benchmark_module("bench_scale").markdown(rep)
    assert md == (REPORT / "scale.md").read_text()  # no hand-edited number in the report
    # both pairs, both modes measured; the fine-tuned memory slope is within the 100 MB per 1,000
    assert {(s["mode"], tuple(s["pair"])) for s in rep["slopes"]} == {
        (m, p) for m in ("head-only", "fine-tuned") for p in ((200, 2000), (400, 4000))}
    for s in rep["slopes"]:
        assert s["peak_rss_mb_per_1000"] <= 100, s
    # the before/after table: one row per baseline run, with both peaks and both training times
    for r in rep["baseline"]["runs"]:
        assert f"| {r['images']} | {r['peak_rss_mb']:.0f} | " in md
    assert "| pair | peak RSS MB / 1,000 before | after |" in md

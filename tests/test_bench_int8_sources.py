"""The committed INT8 error-source report is what ``benchmarks/bench_int8_sources.py`` renders from its JSON,
and its findings are the ones the docs quote."""

from __future__ import annotations

import json
from pathlib import Path

from bench_reports import benchmark_module

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "int8"


def test_committed_sources_report_matches_its_json():
    rep = json.loads((REPORT / "sources.json").read_text())
    assert benchmark_module("bench_int8_sources").render(rep) == (REPORT / "sources.md").read_text()  # no hand-edited number


def test_sources_report_isolates_the_stem_output():
    rep = json.loads((REPORT / "sources.json").read_text())
    pts = {p["points"]: p for p in rep["points"]}
    stem, every = pts["stem output (ReLU6) alone"], pts["every activation"]
    # the one tensor carries most of the activations' logit change, and far more than the later ones
    assert stem["logit_shift"] >= 0.75 * every["logit_shift"]
    assert stem["logit_shift"] > 3 * pts["every projection output"]["logit_shift"]
    assert stem["logit_shift"] > 3 * pts["every residual sum"]["logit_shift"]
    # a narrower range clips and is worse, not better
    assert all(p["logit_shift"] > stem["logit_shift"] for n, p in pts.items() if n.startswith("stem output alone, range"))
    # keeping input and stem float recovers agreement that quantizing everything loses
    assert pts["everything but the input and the stem"]["agreement"] > pts["everything (input, weights, activations)"]["agreement"]
    # every head variant was measured against both INT8 trunks
    assert len(rep["heads"]) == 3 and all(0 < h["int8_agreement"] <= 1 and 0 < h["int8_agreement_stem_float"] <= 1
                                          for h in rep["heads"])


def test_docs_quote_the_sources_report():
    rep = json.loads((REPORT / "sources.json").read_text())
    docs = (ROOT / "docs" / "deploy-artifacts.md").read_text()
    pts = {p["points"]: p for p in rep["points"]}
    assert "benchmarks/int8/sources.md" in docs
    assert f"{pts['stem output (ReLU6) alone']['agreement'] * 100:.1f} %" in docs
    assert f"{pts['everything (input, weights, activations)']['agreement'] * 100:.1f} %" in docs

"""Regression check of one benchmark report against another (``edgecrack bench --compare``).

Not to be confused with :mod:`edgecrack.compare`, which compares two *models'* answers on the
same inputs; this compares two *reports'* numbers, cell by cell.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError
from .schema import BenchReport


@dataclass
class ComparisonRow:
    """One metric of one artifact x backend (x batch) in two reports."""

    cell: str
    batch: int | None
    metric: str
    old: float | None
    new: float | None
    ratio: float | None
    regressed: bool
    note: str = ""


@dataclass
class Comparison:
    """A new report against an old one.

    Attributes:
        rows: Compared metrics.
        tolerance: Allowed relative slow-down of latency (and drop of throughput).
        accuracy_tolerance: Allowed absolute accuracy drop.
        notes: E.g. the reports come from different machines.
    """

    rows: list[ComparisonRow]
    tolerance: float
    accuracy_tolerance: float
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[ComparisonRow]:
        return [r for r in self.rows if r.regressed]

    @property
    def passed(self) -> bool:
        return not self.regressions

    def to_dict(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "accuracy_tolerance": self.accuracy_tolerance, "passed": self.passed,
                "notes": self.notes, "rows": [asdict(r) for r in self.rows]}


def compare_reports(old: BenchReport, new: BenchReport, tolerance: float = 0.15,
                    accuracy_tolerance: float = 0.01) -> Comparison:
    """Ratios of a new report against an old one, for CI-style regression checks.

    Latency (compute and end-to-end p50) regresses when ``new/old > 1 + tolerance``,
    throughput when ``new/old < 1 / (1 + tolerance)``, accuracy when it drops by more than
    ``accuracy_tolerance``. A cell measured in the old report that is missing or no longer
    runs in the new one is a regression too.

    Raises:
        ConfigError: Negative tolerance, or nothing in common to compare.
    """
    if tolerance < 0 or accuracy_tolerance < 0:
        raise ConfigError(f"tolerances must not be negative (got {tolerance}, {accuracy_tolerance})")
    rows: list[ComparisonRow] = []
    notes: list[str] = []
    oc, nc = old.environment.get("cpu", {}).get("model"), new.environment.get("cpu", {}).get("model")
    if oc != nc:
        notes.append(f"different CPUs: old {oc!r}, new {nc!r}; ratios compare machines, not code")
    og = [g.get("name") for g in old.environment.get("gpu", [])]
    ng = [g.get("name") for g in new.environment.get("gpu", [])]
    if og != ng:
        notes.append(f"different GPUs: old {og}, new {ng}")
    hi = 1.0 + tolerance
    for o in old.results:
        n = new.cell(o.artifact, o.backend)
        if not o.ok:
            continue
        if n is None or not n.ok:
            why = "not in the new report" if n is None else f"{n.status}: {n.reason}"
            rows.append(ComparisonRow(o.label, None, "status", None, None, None, True, why))
            continue
        for ob in o.batches:
            nb = n.batch(ob.batch)
            if nb is None:
                continue
            pairs = [("compute_p50_ms", ob.compute.p50_ms, nb.compute.p50_ms, "latency"),
                     ("images_per_s", ob.compute.images_per_s, nb.compute.images_per_s, "throughput")]
            if ob.e2e and nb.e2e:
                pairs.append(("e2e_p50_ms", ob.e2e.p50_ms, nb.e2e.p50_ms, "latency"))
            for metric, a, b, kind in pairs:
                ratio = b / a if a else None
                bad = ratio is not None and (ratio > hi if kind == "latency" else ratio < 1.0 / hi)
                rows.append(ComparisonRow(o.label, ob.batch, metric, a, b, ratio, bad))
        if o.accuracy and n.accuracy:
            d = n.accuracy.accuracy - o.accuracy.accuracy
            rows.append(ComparisonRow(o.label, None, "accuracy", o.accuracy.accuracy, n.accuracy.accuracy,
                                      n.accuracy.accuracy / o.accuracy.accuracy if o.accuracy.accuracy else None,
                                      d < -accuracy_tolerance - 1e-12, f"{d:+.3f}"))
    if not rows:
        raise ConfigError("the two reports have no measured artifact x backend in common",
                          "compare reports of the same run layout (same artifact names and backends)")
    return Comparison(rows, tolerance, accuracy_tolerance, notes)

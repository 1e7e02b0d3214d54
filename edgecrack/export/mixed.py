"""Mixed precision: which backbone units stay float so an INT8 model decides as FP32 does.

An INT8 model's error is not spread evenly. On the 224 px deck default (13 Lite0 units;
TensorRT-style symmetric Q/DQ, 160 search images; ``benchmarks/int8/int8.json`` as of commit
ba2456d), quantizing one backbone unit alone moved the cracked logit by 0.03-0.12 on average for 9
of the 13 units, but by 0.84 for the stem and the first block each; the fully quantized,
bias-corrected model moved it by 0.29 and agreed with FP32 on 95.6 % of the images. Keeping a few
units float recovers the rest of the agreement at part of the INT8 speed: that is the trade this
module measures.

The search, per backbone unit (the stem, each MBConv block, the head convolution):

1. quantize everything; stop if the decisions already agree on the search images;
2. float prefixes: keep the first k units float for k = 1, 2, 3, 4, 6, 8, ... up to ``max_float``,
   stopping at the first that reaches the target. A prefix is the cheapest float region: one
   float-to-INT8 boundary, and the units it holds are where the error starts (the trunk amplifies
   the stem's output noise the most, ``benchmarks/int8/sources.md``) and, on x86 without VNNI,
   where INT8 kernels gain least (``benchmarks/int8/int8.md``);
3. only if no prefix reaches it: one-in sensitivity (quantize one unit alone, measure the mean
   |change| of the cracked-class logit on the search images, without ``finish``: one bias
   correction per unit would cost more than the whole search), then keep the k most sensitive
   units float for the same k until the target is reached.

A candidate reaches the target when its top-1 agreement with FP32 does, within one search image
(:meth:`Score.reaches`: the search screens, the held-out check decides), and, where the caller
passes ``fast_enough`` (the CPU path: its speed-up gate), it is fast enough: float islands in
the middle of the trunk cost a conversion on each side. If none reaches it, the best agreement
among the fast enough candidates is kept; ties, which a search set of 160 images makes common
(one image is 0.6 %), go to the earlier candidate: fewer float units, a prefix before an island.

The held-out check that decides whether the artifact is written happens afterwards, on other
images (:mod:`edgecrack.export.precision`, :mod:`edgecrack.export.quantize`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..compare import compare_probs
from ..progress import Progress

#: Float units tried, in order, until the agreement target is reached.
STEPS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24)
_UNIT = re.compile(r"^/trunk/trunk\.(\d+)/")

Quantize = Callable[[set[str]], bytes]
Scorer = Callable[[bytes], "Score"]


@dataclass
class Score:
    """A quantized model's decisions against FP32's on the search images (``images`` of them; 0: unknown)."""

    top1_agreement: float
    mean_logit_shift: float
    images: int = 0

    def reaches(self, target: float) -> bool:
        """Whether the agreement reaches ``target`` within one search image: at most one disagreement
        more than ``target`` allows (160 images at 99 %: 2 instead of 1). The search images screen,
        the held-out images decide; at 99 % on 160 images one binomial standard error is 1.3 images,
        so a one-image difference says nothing, and without the slack the search passed over the
        first 3 units float of the default (98.8 %) for an island of 6 (100.0 %) that then agreed on
        98.3 % of the held-out images at x1.12, where the 3 units agreed on 100.0 % at x1.38
        (``benchmarks/int8/int8.md`` as of commit 8c432b1)."""
        if self.images <= 0:
            return self.top1_agreement >= target - 1e-9
        allowed = int(np.floor((1 - target) * self.images + 1e-9)) + 1
        return int(round((1 - self.top1_agreement) * self.images)) <= allowed


@dataclass
class MixedResult:
    """The chosen model and how it was found."""

    blob: bytes
    float_units: list[str]
    score: Score
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    units: int = 0

    def record(self) -> dict:
        """Manifest entry: which units stay float and the measurements behind the choice."""
        return {"float_units": self.float_units, "units": self.units,
                "search_agreement": round(self.score.top1_agreement, 4),
                "search_logit_shift": round(self.score.mean_logit_shift, 4),
                "sensitivity": [[u, round(s, 4)] for u, s in self.sensitivity], "steps": self.steps}


def chosen_as(record: dict) -> str:
    """How a search record's float units were chosen, in words for a console line: ``"the first 3 units
    (a float prefix)"``, ``"the 2 most sensitive units"``; from the step that measured them."""
    units = record.get("float_units") or []
    step = next((s for s in record.get("steps", []) if s.get("units") == units), {})
    n = len(units)
    if step.get("set") == "prefix":
        return f"the first {n} units (a float prefix), {step['agreement'] * 100:.1f} % agreement on the search images"
    if step.get("set") == "most sensitive":
        return (f"the {n} most sensitive units (one-in sensitivity), {step['agreement'] * 100:.1f} % agreement "
                "on the search images")
    return f"{n} units"


def backbone_units(model, quantizable: list[str]) -> dict[str, list[str]]:
    """Quantizable node names grouped by backbone unit (``/trunk/trunk.N/...``), in graph order.

    Nodes outside a named unit form a unit of their own (each convolution with the activations
    that follow it), so graphs from other exporters still get a per-layer search.
    """
    wanted = set(quantizable)
    units: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.name not in wanted:
            continue
        m = _UNIT.match(n.name)
        key = f"trunk.{m.group(1)}" if m else n.name
        units.setdefault(key, []).append(n.name)
    return units


def logit_shift(p: np.ndarray, p0: np.ndarray, positive_index: int) -> float:
    """Mean |change| of the positive class's logit between two probability arrays."""
    def logit(q: np.ndarray) -> np.ndarray:
        q = np.clip(q[:, positive_index].astype(np.float64), 1e-6, 1 - 1e-6)
        return np.log(q / (1 - q))

    return float(np.mean(np.abs(logit(p) - logit(p0))))


def score(p: np.ndarray, p0: np.ndarray, positive_index: int) -> Score:
    """A model's probabilities ``p`` against FP32's ``p0`` on the search images: top-1 agreement
    (:func:`edgecrack.compare.compare_probs`) and the mean positive-logit shift."""
    return Score(compare_probs(p, p0).top1_agreement, logit_shift(p, p0, positive_index), len(p))


def search(units: dict[str, list[str]], quantize: Quantize, agreement: Scorer, target: float,
           max_float: int, progress: Progress | None = None,
           finish: Callable[[bytes], bytes] | None = None,
           fast_enough: Callable[[bytes], bool] | None = None) -> MixedResult:
    """Fewest float units (a float prefix first, then the most sensitive) whose model reaches ``target``.

    Args:
        units: ``unit -> node names`` in graph order (:func:`backbone_units`).
        quantize: Builds the INT8 model with the given node names left float.
        agreement: Scores a model against FP32 on the search images.
        target: Top-1 agreement to reach (e.g. 0.99).
        max_float: Most units kept float; 0 disables the search.
        progress: ``(phase, done, total)`` callback.
        finish: Applied to each candidate model before it is scored (bias correction,
            :mod:`edgecrack.export.biascorrect`), not to the one-in sensitivity probes.
        fast_enough: Whether a candidate model is fast enough to be kept (None: speed not judged).

    Returns:
        The first model reaching ``target``; if none does within ``max_float``, the fast enough one
        with the highest agreement (ties: the earlier). The caller's held-out gate decides.
    """
    say = progress or (lambda *_: None)
    done = finish or (lambda b: b)
    names = list(units)
    best: MixedResult | None = None
    best_fast = False

    def attempt(kind: str, keep: list[str]) -> bool:
        """Build, finish and score one candidate; keep it if it is the best so far; True when it reaches the target."""
        nonlocal best, best_fast
        phase = (f"keeping the first {len(keep)} units float" if kind == "prefix"
                 else f"keeping the {len(keep)} most sensitive units float")
        if keep:
            say(phase, 0, 1)
        blob = done(quantize({n for u in keep for n in units[u]}))
        score = agreement(blob)
        quick = fast_enough is None or fast_enough(blob)
        if keep:
            say(phase, 1, 1)
        step = {"float_units": len(keep), "set": kind, "units": keep, "agreement": round(score.top1_agreement, 4),
                "logit_shift": round(score.mean_logit_shift, 4)}
        if fast_enough is not None:
            step["fast_enough"] = quick
        better = best is None or (quick and not best_fast) or (
            quick == best_fast and score.top1_agreement > best.score.top1_agreement + 1e-9)
        if best is None:
            best = MixedResult(blob, keep, score, units=len(units))
        elif better:
            best.blob, best.float_units, best.score = blob, keep, score
        best_fast = quick if better else best_fast
        best.steps.append(step)
        return quick and score.reaches(target)

    if attempt("all int8", []) or max_float <= 0 or len(units) < 2:
        return best
    ks = [k for k in STEPS if k <= min(max_float, len(units) - 1)]
    for k in ks:
        if attempt("prefix", names[:k]):
            return best
    every = {n for group in units.values() for n in group}
    sens: list[tuple[str, float]] = []
    for i, (unit, group) in enumerate(units.items()):
        say("sensitivity of each unit", i, len(units))
        sens.append((unit, agreement(quantize(every - set(group))).mean_logit_shift))
    say("sensitivity of each unit", len(units), len(units))
    sens.sort(key=lambda t: -t[1])
    best.sensitivity = sens
    for k in ks:
        keep = [u for u, _ in sens[:k]]
        if set(keep) == set(names[:k]):
            continue  # the prefix of the same units was measured above
        if attempt("most sensitive", keep):
            break
    return best

"""Jobs that span layers: training, then the ONNX export of what it trained.

``edgecrack.train`` builds, trains and saves the network; ``edgecrack.export`` turns a run folder
into deployable graphs. Neither imports the other: this module, above both, runs one after the
other, and it is what ``edgecrack train`` and the benchmark scripts call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .io import atomic_write_json
from .splits import run_split
from .train.api import Reporter, TrainConfig, TrainResult, train

#: Held-out images of the run that the post-training export checks PyTorch against onnxruntime
#: on: enough to catch an exporter bug (top-1 and |dp| are checked per image), and each costs
#: ``tta`` eager forward passes on the CPU.
PARITY_IMAGES = 8


def train_job(cfg: TrainConfig, reporter: Reporter | None = None) -> TrainResult:
    """``edgecrack train``: :func:`edgecrack.train.api.train`, then (``cfg.export``) ``model.onnx``.

    The export's parity check runs on the first :data:`PARITY_IMAGES` test, then validation,
    images of the run; its result (``onnx_parity``) and time (``timings.export_s``, counted in
    ``total_s``) are added to the result's metrics and to ``metrics.json``.

    Raises:
        DatasetError, WeightsError, ConfigError: As :func:`~edgecrack.train.api.train`.
        ArtifactError: The exported graph disagrees with the trained weights.
    """
    res = train(cfg, reporter)
    if cfg.export:
        t0 = time.perf_counter()
        _, om = onnx_after_training(res.run_dir, cfg.opset)
        _record_export(res, om.extra.get("parity_torch_vs_ort"), time.perf_counter() - t0)
    return res


def onnx_after_training(run: Path, opset: int):
    """``run/model.onnx`` from the checkpoint just written, checked on the run's held-out images.

    Returns:
        (ONNX path, its manifest)
    """
    from .export.from_run import onnx_from_run

    heldout = [p for p, _, _ in run_split(run, "test", "validation")][:PARITY_IMAGES]
    return onnx_from_run(run, None, opset, parity_paths=heldout)


def _record_export(res: TrainResult, parity: dict[str, Any] | None, seconds: float) -> None:
    """Add the export to the metrics (same keys, same order as one uninterrupted job) and rewrite
    ``metrics.json``."""
    m = res.metrics
    tail = {k: m.pop(k) for k in ("timings", "bottleneck", "skipped") if k in m}
    m["onnx_parity"] = parity
    t = tail.get("timings", res.timings)
    total = t.pop("total_s", 0.0) + seconds
    t["export_s"] = seconds
    t["total_s"] = total
    m.update(tail)
    atomic_write_json(res.run_dir / "metrics.json", m)

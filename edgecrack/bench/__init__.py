"""Latency, throughput, memory and accuracy of every artifact of a run on every backend here.

Torch-free at import: a Jetson with only onnxruntime/TensorRT + OpenCV + numpy can benchmark.
Every number in a report traces to a backend's :meth:`~edgecrack.runtime.base.Backend.info`
and to the environment captured with it (:func:`edgecrack.platform.environment`). Backends
that cannot run here are reported with the reason, never silently dropped.

What is measured, per artifact x backend x batch size:

- *compute*: :meth:`Backend.infer` on a prepared ``uint8 [N,H,W,3]`` tensor made from real
  images (what the model costs);
- *end to end*: decode the image files + :func:`edgecrack.preprocess.preprocess` + infer +
  postprocess (threshold to labels), per call (what a user of the loop sees);
- model size on disk, load time, resident memory after load and the peak resident memory
  while loading and running (Linux ``VmHWM`` after a reset through ``/proc/self/clear_refs``);
- accuracy on a labelled folder (the bundled data by default), and agreement with the FP32
  reference, so speed never hides an accuracy loss.

Modules: :mod:`.timing` (timed loops, statistics), :mod:`.memory`, :mod:`.schema` (report
data model), :mod:`.config`, :mod:`.cells` (artifact x backend), :mod:`.measure`,
:mod:`.run` (orchestration), :mod:`.goals` (goals, summary), :mod:`.compare` (regression check
of two reports), :mod:`.render` (Markdown, plots), :mod:`.training` (training section).
"""

from __future__ import annotations

from ..artifacts import run_artifacts as artifacts_of_run
from ..platform import environment, machine_summary, usable_cores
from ..runtime.registry import backends_for, probe_backend
from .cells import open_cell_backend
from .compare import Comparison, ComparisonRow, compare_reports
from .config import BACKENDS, BenchConfig
from .goals import OVERHEAD_GOAL, TORCH_SPEEDUP_GOAL, goals_of, pair_ratio, summarize
from .measure import measure_compute, measure_e2e, measure_overhead, measure_speedup
from .render import report_markdown, write_plots, write_report
from .run import bench, fold_training
from .schema import (SCHEMA, SCHEMA_MAJOR, TRAIN_SCHEMA, AccuracyResult, BatchResult, BenchReport, CellResult, Goal,
                     read_report)
from .timing import LatencyStats, LoopBudget
from .training import training_markdown, training_section

__all__ = [
    "SCHEMA", "SCHEMA_MAJOR", "TRAIN_SCHEMA", "BACKENDS", "OVERHEAD_GOAL", "TORCH_SPEEDUP_GOAL",
    "AccuracyResult", "BatchResult", "BenchConfig", "BenchReport", "CellResult", "Comparison",
    "ComparisonRow", "Goal", "LatencyStats", "LoopBudget",
    "artifacts_of_run", "backends_for", "bench", "compare_reports", "environment", "fold_training", "goals_of",
    "machine_summary", "measure_compute", "measure_e2e", "measure_overhead", "measure_speedup", "open_cell_backend",
    "pair_ratio", "probe_backend", "read_report", "report_markdown", "summarize", "training_markdown",
    "training_section", "usable_cores", "write_plots", "write_report",
]

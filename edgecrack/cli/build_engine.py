"""``edgecrack build-engine``: a TensorRT engine (:func:`edgecrack.export.tensorrt.engine_from_onnx`) or, with
``--target cpu``, an onnxruntime INT8 model (:func:`edgecrack.export.quantize.int8_from_onnx`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import ProgressView, console, user_errors


def build_engine_cmd(
    model: Path = typer.Argument(..., help="FP32 model.onnx (or its run folder)."),
    precision: str = typer.Option("fp16", help="fp32, fp16 or int8."),
    target: str = typer.Option("gpu", help="gpu: TensorRT engine; cpu: onnxruntime INT8 model (needs --precision int8)."),
    calib: Optional[Path] = typer.Option(None, help="Calibration set folder (INT8). Default: 64 images drawn from the run's training split."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (default model.<precision>.engine / model.int8.onnx)."),
    workspace_mb: int = typer.Option(1024, help="TensorRT builder workspace (MiB)."),
    max_batch: int = typer.Option(32, help="Largest batch of the engine's optimisation profile."),
    opt_batch: int = typer.Option(8, help="Batch size TensorRT tunes for."),
    dla_core: Optional[int] = typer.Option(None, help="DLA core on Xavier/Orin (GPU fallback on)."),
    timing_cache: Optional[Path] = typer.Option(None, help="TensorRT timing cache file (created or reused)."),
    formats: List[str] = typer.Option(["qdq-u8s8", "qop-u8s8", "qdq-s8s8"], "--format",
                                      help="CPU INT8 formats to measure (repeat): qdq-u8s8, qop-u8s8, qdq-s8s8, qop-u8u8."),
    eval_data: Optional[Path] = typer.Option(None, help="Labelled folder for the CPU INT8 accuracy check (default: the run's validation + test split)."),
    min_agreement: float = typer.Option(0.99, help="CPU INT8: smallest accepted top-1 agreement with FP32."),
    min_speedup: float = typer.Option(1.2, help="CPU INT8: smallest accepted speed-up over FP32 at --select-batch."),
    reduce_range: str = typer.Option("auto", help="CPU INT8 7-bit weights: auto (x86 without VNNI), on, off."),
    accuracy_budget: float = typer.Option(0.01, help="Largest accepted accuracy drop vs FP32 (fraction; 0.01 = 1 point)."),
    calibrate_method: str = typer.Option("minmax", help="CPU INT8 calibration: minmax, entropy, percentile."),
    select_batch: int = typer.Option(1, help="CPU INT8: pick the fastest format at batch 1 (camera loop) or 8."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the CPU INT8 measurements."),
    max_float_units: int = typer.Option(8, help="CPU INT8: most backbone units the mixed-precision search keeps float (0: off)."),
    bias_correction: bool = typer.Option(True, help="CPU INT8: correct the QDQ formats' convolution biases so each channel's mean on the calibration images matches FP32."),
) -> None:
    """Build a deployable artifact: TensorRT engine (GPU) or onnxruntime INT8 model (--target cpu)."""
    from ..errors import ConfigError
    from ..runtime import resolve_artifact

    onnx_path = resolve_artifact(model)
    if target not in ("gpu", "cpu"):
        raise ConfigError(f"unknown --target {target!r}", "use gpu (TensorRT) or cpu (onnxruntime INT8)")
    if target == "cpu":
        if precision != "int8":
            raise ConfigError(f"--target cpu builds INT8 models; {precision} on CPU is {onnx_path.name} itself",
                              f"run {onnx_path} directly, or pass --precision int8")
        _build_cpu_int8(onnx_path, calib, out, formats, eval_data, accuracy_budget, calibrate_method, select_batch, threads,
                        min_agreement, min_speedup, reduce_range, max_float_units, bias_correction)
        return
    from ..export.tensorrt import EngineConfig, engine_from_onnx

    cfg = EngineConfig(precision=precision, calib=str(calib) if calib else None, workspace_mb=workspace_mb,
                       max_batch=max_batch, opt_batch=min(opt_batch, max_batch), dla_core=dla_core,
                       timing_cache=str(timing_cache) if timing_cache else None)
    console.print(f"[bold cyan]build-engine[/] {escape(str(onnx_path))} -> TensorRT {precision}"
                  f"{' on DLA core ' + str(dla_core) if dla_core is not None else ''}, batch 1..{max_batch} "
                  f"(opt {cfg.opt_batch})")
    with ProgressView() as prog:
        path, m = engine_from_onnx(onnx_path, out, config=cfg, progress=prog)
    ex = m.extra
    par = ex.get("parity_vs_onnxruntime") or {}
    console.print(f"[bold green]built[/] {escape(str(path))} in {ex['build_seconds']:.1f}s: TensorRT {ex['tensorrt_version']}, "
                  f"{ex['gpu_name']} (sm {ex['compute_capability']}), {ex['precision']}"
                  + (f", calibration {ex['calibration_hash']} ({ex['calibration_images']} images"
                     f"{', cache reused' if ex.get('calibration_cache_reused') else ''})" if ex.get("calibration_hash") else ""))
    if par:
        console.print(f"  parity vs onnxruntime FP32 on {par['n']} real images: max |dp| {par['max_abs_diff']:.3g}, "
                      f"top-1 agreement {par['top1_agreement'] * 100:.1f} %")
    console.print(f"  sidecar: {escape(path.name)}.json (the plan itself is unmodified)")


def _build_cpu_int8(onnx_path, calib, out, formats, eval_data, budget, method, select_batch, threads,
                    min_agreement=0.99, min_speedup=1.2, reduce_range="auto", max_float_units=8,
                    bias_correction=True) -> None:
    from ..export import mixed
    from ..export.quantize import QuantizeConfig, QuantizeRefused, int8_from_onnx

    cfg = QuantizeConfig(calib=str(calib) if calib else None, formats=tuple(formats),
                         eval_data=str(eval_data) if eval_data else None, accuracy_budget=budget,
                         calibrate_method=method, threads=threads, select_batch=select_batch,
                         min_agreement=min_agreement, min_speedup=min_speedup, reduce_range=reduce_range,
                         max_float_units=max_float_units, bias_correction=bias_correction)
    console.print(f"[bold cyan]build-engine --target cpu[/] {escape(str(onnx_path))} -> onnxruntime INT8: measuring "
                  f"{', '.join(cfg.formats)} against FP32 (about 20-40 s per format on 2 cores)")
    try:
        with ProgressView() as prog:
            res = int8_from_onnx(onnx_path, out, cfg, progress=prog)
    except QuantizeRefused as e:
        console.print(int8_table(e.fp32, e.candidates, "", "INT8 formats vs FP32: none is a win on this CPU"))
        raise
    console.print(int8_table(res.fp32, res.candidates, res.chosen.name,
                             f"INT8 formats vs FP32 on {res.eval_images} held-out images ({res.manifest.extra['cpu']})"))
    d = res.manifest.extra["deltas_vs_fp32"]
    console.print(f"[bold green]wrote[/] {escape(str(res.path))} ({res.chosen.name}): accuracy {res.chosen.accuracy:.3f} vs FP32 "
                  f"{res.fp32.accuracy:.3f} ({d['accuracy_points']:+.1f} pts), top-1 agreement "
                  f"{d['top1_agreement'] * 100:.1f} %, speed x{d['speedup_batch1']:.2f} at batch 1, "
                  f"x{d['speedup_batch8']:.2f} at batch 8")
    mp = res.manifest.extra.get("mixed_precision")
    if mp and mp.get("float_units"):
        console.print(f"  kept float: {escape(', '.join(mp['float_units']))} ({len(mp['float_units'])} of {mp['units']} "
                      f"backbone units: {mixed.chosen_as(mp)}; speed-ups against FP32 timed in alternating blocks)")
    console.print(f"  calibration: {escape(str(res.calibration))}")


def int8_table(fp32, candidates, chosen: str, title: str) -> Table:
    """FP32 and each INT8 candidate: accuracy, delta, agreement, latency at batch 1 and 8."""
    t = Table(title=title, caption="speed: FP32 latency over the candidate's, both timed in alternating blocks "
                                   "beside each other (ms columns: each timed on its own)")
    for col in ("model", "accuracy", "Δ pts", "agree", "b1 ms", "b8 ms", "speed b1", "speed b8", "size MB"):
        t.add_column(col, justify="left" if col == "model" else "right")
    t.add_row("fp32", f"{fp32.accuracy:.3f}", "-", "-", f"{fp32.latency_ms['1']:.1f}", f"{fp32.latency_ms['8']:.1f}",
              "1.00", "1.00", f"{fp32.size_bytes / 1e6:.1f}")
    for c in candidates:
        mark = " *" if c.name == chosen else ("" if c.within_budget else " (over budget)")
        t.add_row(c.name + mark, f"{c.accuracy:.3f}", f"{c.accuracy_delta_points:+.1f}", f"{c.top1_agreement * 100:.1f}%",
                  f"{c.latency_ms['1']:.1f}", f"{c.latency_ms['8']:.1f}", f"{c.speedup(fp32, 1):.2f}",
                  f"{c.speedup(fp32, 8):.2f}", f"{c.size_bytes / 1e6:.1f}")
    return t


def register(app: typer.Typer) -> None:
    app.command("build-engine")(user_errors(build_engine_cmd))

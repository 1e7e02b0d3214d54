"""CLI: ``export``, ``build-engine``, ``calibration build``, ``doctor``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .cli_common import console, err_console, user_errors


class _PhaseProgress:
    """Renders ``(phase, done, total)`` callbacks as rich progress bars (one per phase)."""

    def __init__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn("  {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                           TimeElapsedColumn(), console=console, transient=False)
        self._tasks: dict[str, int] = {}
        self._totals: dict[str, int] = {}

    def __enter__(self):
        self._p.start()
        return self

    def __exit__(self, *exc):
        self._p.stop()

    def __call__(self, phase: str, done: int, total: int) -> None:
        if total:
            self._totals[phase] = total
        total = self._totals.get(phase, 0)
        if phase not in self._tasks:
            if not total:
                console.print(f"  {escape(str(phase))}")
                self._tasks[phase] = -1
                return
            self._tasks[phase] = self._p.add_task(phase, total=total)
        tid = self._tasks[phase]
        if tid >= 0:
            self._p.update(tid, completed=min(done, total) if total else done)


def export_cmd(
    run: Path = typer.Argument(..., help="Run folder (checkpoint.safetensors + manifest.json)."),
    opset: int = typer.Option(17, help="ONNX opset. 17 for TensorRT 8.5+/10.x; 13 is the floor for older JetPack TensorRT."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="ONNX file to write (default RUN/model.onnx)."),
    parity_images: int = typer.Option(16, help="Real images for the PyTorch vs onnxruntime parity check (0: skip)."),
    triton: Optional[Path] = typer.Option(None, help="Also write a Triton model repository into this folder."),
    max_batch: int = typer.Option(32, help="Triton max_batch_size (with --triton)."),
    precision: str = typer.Option("fp32", help="fp32 (model.onnx); fp16 (model.fp16.onnx) or int8 (TensorRT Q/DQ "
                                  "model.qdq.onnx) are made from it and checked against FP32."),
    calib: Optional[Path] = typer.Option(None, help="INT8 calibration folder (default: 64 images drawn from the run's training split)."),
    eval_data: Optional[Path] = typer.Option(None, help="Labelled folder for the FP16/INT8 check (default: the run's validation + test split)."),
) -> None:
    """Export a run's checkpoint to ONNX: preprocessing inside, manifest attached, parity recorded.

    With --precision fp16/int8 the FP32 model.onnx (exported first when missing) is converted and
    checked against FP32 on held-out images; outside its budget nothing is written.
    """
    from .export.from_run import onnx_from_run

    if precision not in ("fp32", "fp16", "int8"):
        from .errors import ConfigError

        raise ConfigError(f"unknown --precision {precision!r}", "use fp32, fp16 or int8")
    fp32_path = Path(run) / "model.onnx"
    if precision != "fp32" and fp32_path.is_file() and triton is None:
        _precision_export(fp32_path, precision, calib, eval_data, out)
        return
    path, m = onnx_from_run(run, out if precision == "fp32" else None, opset, parity_images)
    par = m.extra.get("parity_torch_vs_ort") or {}
    console.print(f"[bold green]exported[/] {escape(str(path))} (opset {opset}, input {escape(m.input_name)} uint8 "
                  + escape(f"[N,{m.input.height},{m.input.width},3] BGR -> {m.output_name} {m.labels})"))
    if par:
        console.print(f"  parity PyTorch vs onnxruntime on {par['n']} real images: max |dp| {par['max_abs_diff']:.2e}, "
                      f"top-1 agreement {par['top1_agreement'] * 100:.0f} %")
    if triton is not None:
        try:
            from .export.triton import write_triton_repository
        except ModuleNotFoundError as e:
            if e.name != "edgecrack.export.triton":
                raise
            from .errors import ConfigError

            raise ConfigError("--triton is not available in this build (edgecrack.export.triton is missing)",
                              "export without --triton") from None
        repo = write_triton_repository(path, triton, [], max_batch)
        console.print(f"  Triton model repository: {escape(str(repo))}")
    if precision != "fp32":
        _precision_export(path, precision, calib, eval_data, out)


def _precision_export(fp32_path: Path, precision: str, calib, eval_data, out=None) -> None:
    from .export.precision import precision_onnx_from_onnx

    console.print(f"[bold cyan]{precision.upper()}[/] from {escape(str(fp32_path))}, checked against FP32 on held-out images")
    with _PhaseProgress() as prog:
        r = precision_onnx_from_onnx(fp32_path, precision, out, calib, eval_data, progress=prog)
    f = r.fidelity
    console.print(f"[bold green]wrote[/] {escape(str(r.path))}: accuracy {f.accuracy:.3f} vs FP32 {f.fp32_accuracy:.3f} "
                  f"({f.accuracy_delta_points:+.1f} pts), top-1 agreement {f.top1_agreement * 100:.1f} %, "
                  f"max |dp| {f.max_abs_diff:.3f} on {escape(r.eval_images)}; TensorRT-ready")
    if r.calibration:
        console.print(f"  calibration: {escape(r.calibration)}")


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
) -> None:
    """Build a deployable artifact: TensorRT engine (GPU) or onnxruntime INT8 model (--target cpu)."""
    from .errors import ConfigError
    from .runtime import resolve_artifact

    onnx_path = resolve_artifact(model)
    if target not in ("gpu", "cpu"):
        raise ConfigError(f"unknown --target {target!r}", "use gpu (TensorRT) or cpu (onnxruntime INT8)")
    if target == "cpu":
        if precision != "int8":
            raise ConfigError(f"--target cpu builds INT8 models; {precision} on CPU is {onnx_path.name} itself",
                              f"run {onnx_path} directly, or pass --precision int8")
        _build_cpu_int8(onnx_path, calib, out, formats, eval_data, accuracy_budget, calibrate_method, select_batch, threads,
                        min_agreement, min_speedup, reduce_range)
        return
    from .export.tensorrt import EngineConfig, engine_from_onnx

    cfg = EngineConfig(precision=precision, calib=str(calib) if calib else None, workspace_mb=workspace_mb,
                       max_batch=max_batch, opt_batch=min(opt_batch, max_batch), dla_core=dla_core,
                       timing_cache=str(timing_cache) if timing_cache else None)
    console.print(f"[bold cyan]build-engine[/] {escape(str(onnx_path))} -> TensorRT {precision}"
                  f"{' on DLA core ' + str(dla_core) if dla_core is not None else ''}, batch 1..{max_batch} "
                  f"(opt {cfg.opt_batch})")
    with _PhaseProgress() as prog:
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
                    min_agreement=0.99, min_speedup=1.2, reduce_range="auto") -> None:
    from .export.quantize import QuantizeConfig, QuantizeRefused, int8_from_onnx

    cfg = QuantizeConfig(calib=str(calib) if calib else None, formats=tuple(formats),
                         eval_data=str(eval_data) if eval_data else None, accuracy_budget=budget,
                         calibrate_method=method, threads=threads, select_batch=select_batch,
                         min_agreement=min_agreement, min_speedup=min_speedup, reduce_range=reduce_range)
    console.print(f"[bold cyan]build-engine --target cpu[/] {escape(str(onnx_path))} -> onnxruntime INT8: measuring "
                  f"{', '.join(cfg.formats)} against FP32 (about 20-40 s per format on 2 cores)")
    try:
        with _PhaseProgress() as prog:
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
    console.print(f"  calibration: {escape(str(res.calibration))}")


def _doctor_model(model: Path, json_out: bool) -> None:
    from .errors import ArtifactError
    from .export.graph import tensorrt_readiness

    paths = sorted(p for p in model.glob("*.onnx")) if model.is_dir() else [model]
    if not paths or not all(p.is_file() for p in paths):
        raise ArtifactError(f"no ONNX model at {model}", "pass a .onnx file or a run folder")
    from .manifest import read_manifest

    results = {}
    for p in paths:
        try:
            r = tensorrt_readiness(p)
            try:
                cpu_only = read_manifest(p).kind == "onnx-int8"
            except Exception:  # noqa: BLE001 - a model without a sidecar is judged as a TensorRT input
                cpu_only = False
            if cpu_only:  # onnxruntime CPU INT8: integer ops are its point; only the input rules apply
                r.findings = [f for f in r.findings if f.rule in ("uint8-cast", "static-shape")]
                r.ok = not r.findings
            results[p] = r
        except Exception as e:  # noqa: BLE001 - a file onnx cannot read is reported, not raised
            raise ArtifactError(f"{p} is not a readable ONNX model ({str(e).splitlines()[0][:160]})",
                                "re-export it: edgecrack export RUN") from None
    if json_out:
        typer.echo(json.dumps({str(p): {"ok": r.ok, "opset": r.opset, "ops": r.ops,
                                        "findings": [f.__dict__ for f in r.findings]} for p, r in results.items()},
                              indent=2))
    else:
        for p, r in results.items():
            mark = "[green]ok[/]" if r.ok else "[red]!![/]"
            console.print(f"{mark} {escape(str(p))}: {escape(r.summary())}")
    if not all(r.ok for r in results.values()):
        raise typer.Exit(1)


def int8_table(fp32, candidates, chosen: str, title: str) -> Table:
    """FP32 and each INT8 candidate: accuracy, delta, agreement, latency at batch 1 and 8."""
    t = Table(title=title)
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


def calibration_build_cmd(
    out: Path = typer.Option(Path("calibration/deck"), "--out", "-o", help="Folder to write (images + calibration.json)."),
    source: Optional[Path] = typer.Option(None, help="Labelled image folder to draw from (default: bundled SDNET2018 deck sample)."),
    n: int = typer.Option(64, help="Images to draw (stratified by class)."),
    seed: int = typer.Option(0, help="Seed of the draw."),
    label_from: str = typer.Option("folder", help="folder or prefix."),
) -> None:
    """Build a seeded, stratified INT8 calibration set (feeds TensorRT and onnxruntime alike)."""
    from .calibration import build_calibration_set

    s = build_calibration_set(out, source, n, seed, label_from)
    console.print(f"[bold green]calibration set[/] {escape(s.describe())}")
    console.print(f"  use it: edgecrack build-engine MODEL.onnx --precision int8 --calib {escape(str(out))}")


def doctor_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON."),
               model: Optional[Path] = typer.Option(None, "--model", help="Also check an ONNX model (or a run folder's "
                                                    "ONNX files) against the rules TensorRT's parser enforces.")) -> None:
    """What this machine can run (backends, GPU, TensorRT, OpenCV video I/O), and why not."""
    from .doctor import run_doctor

    if model is not None:
        _doctor_model(model, json_out)
        return

    rep = run_doctor()
    if json_out:
        typer.echo(json.dumps(rep.to_dict(), indent=2))
        return
    mach = rep.machine
    console.print(f"[bold]edgecrack {mach['edgecrack']}[/] on {mach['os']}, Python {mach['python']}, "
                  f"{mach['cpu']} ({mach['cores']} cores; INT8 instructions: {mach['cpu_int8']})"
                  + (f", {mach['jetson']}" if mach.get("jetson") else ""))
    t = Table(show_header=True)
    t.add_column("")
    t.add_column("component")
    t.add_column("found")
    t.add_column("fix")
    for c in rep.checks:
        mark = "[green]ok[/]" if c.ok else ("[yellow]--[/]" if c.optional else "[red]!![/]")
        t.add_row(mark, c.name, escape(c.detail), escape(c.fix))
    console.print(t)
    b = Table(title="backends (open_backend order: tensorrt -> onnxruntime-cuda -> onnxruntime-cpu)")
    b.add_column("backend")
    b.add_column("status")
    for name, why in rep.backends.items():
        b.add_row(name, "[green]usable[/]" if why is None else f"[yellow]no[/]: {escape(why)}")
    console.print(b)
    usable = [n for n, w in rep.backends.items() if w is None and not n.startswith("torch")]
    console.print(f"best runtime here: [bold]{usable[0] if usable else 'none'}[/]")


def register(app: typer.Typer) -> None:
    app.command("export")(user_errors(export_cmd))
    app.command("build-engine")(user_errors(build_engine_cmd))
    app.command("doctor")(user_errors(doctor_cmd))
    calib_app = typer.Typer(help="INT8 calibration sets.", no_args_is_help=True)
    calib_app.command("build")(user_errors(calibration_build_cmd))
    app.add_typer(calib_app, name="calibration")

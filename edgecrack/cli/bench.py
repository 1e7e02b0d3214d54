"""``edgecrack bench``: latency, throughput, memory and accuracy reports (:func:`edgecrack.bench.bench`); regression checks."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import ProgressView, console, err_console, user_errors

#: Exit status of ``--compare`` when a metric regressed past the tolerance (1 is a user error).
EXIT_REGRESSION = 3


def _csv(value: Optional[str]) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return items or None


def _batches(value: str) -> tuple[int, ...]:
    from ..errors import ConfigError

    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--batch takes comma-separated integers, got {value!r}", "e.g. --batch 1,8,32") from None


def _results_table(report) -> Table:
    t = Table(title=escape(f"edgecrack bench: {report.run}"), show_lines=False)
    for col, just in (("artifact / backend", "left"), ("batch", "right"), ("p50 ms", "right"), ("p99 ms", "right"),
                      ("img/s", "right"), ("e2e p50", "right"), ("acc", "right"), ("peak MiB", "right")):
        t.add_column(col, justify=just)
    for c in report.results:
        for i, b in enumerate(c.batches if c.ok else []):
            first = i == 0
            acc = f"{c.accuracy.accuracy:.3f}" if (first and c.accuracy) else ""
            peak = c.memory.get("peak_delta_mb") if first else None
            t.add_row(escape(c.label) if first else "", str(b.batch), f"{b.compute.p50_ms:.2f}", f"{b.compute.p99_ms:.2f}",
                      f"{b.compute.images_per_s:.1f}", f"{b.e2e.p50_ms:.2f}" if b.e2e else "-", acc,
                      "" if peak is None else f"{peak:.0f}")
    return t


def _print_unavailable(report) -> None:
    for c in report.results:
        if not c.ok:
            console.print(f"  [yellow]{c.status}[/] {escape(c.label)}: {escape(str(c.reason))}")


def _comparison_table(cmp) -> Table:
    t = Table(title=f"compare (tolerance {cmp.tolerance:.0%}, accuracy {cmp.accuracy_tolerance:.3f})")
    for col, just in (("cell", "left"), ("batch", "right"), ("metric", "left"), ("old", "right"), ("new", "right"),
                      ("new/old", "right"), ("", "left")):
        t.add_column(col, justify=just)
    short = {"compute_p50_ms": "p50 ms", "images_per_s": "img/s", "e2e_p50_ms": "e2e p50 ms"}
    for r in cmp.rows:
        fmt = (lambda v: "-" if v is None else f"{v:.3f}" if r.metric == "accuracy" else f"{v:.2f}")
        verdict = "[bold red]REGRESSED[/]" if r.regressed else "[green]ok[/]"
        t.add_row(escape(r.cell), "" if r.batch is None else str(r.batch), short.get(r.metric, r.metric), fmt(r.old),
                  fmt(r.new), "-" if r.ratio is None else f"{r.ratio:.2f}x", f"{verdict} {escape(r.note)}".strip())
    return t


def bench_cmd(
    run: Path = typer.Argument(..., help="Run folder (every artifact in it), one artifact file, or an existing "
                                         "bench.json (re-render / compare without measuring)."),
    full: bool = typer.Option(False, "--full", help="The long preset for committed reports: batches 1,8,32, 3 s loops "
                              "of at least 10 calls, 5 warm-up calls, 64 end-to-end images, accuracy on every labelled "
                              "image. The default preset takes about 2 minutes on a 2-core CPU. Options below override "
                              "either preset."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Comma-separated batch sizes (default 1,8; --full 1,8,32)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Seconds per timed loop (default 1; --full 3)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Fixed timed calls per loop instead of --duration."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Untimed calls before each timed loop (default 3; --full 5)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for every backend (default: usable cores)."),
    backends: Optional[str] = typer.Option(None, "--backends", help="Comma-separated backends to try: tensorrt, "
                                           "onnxruntime-tensorrt, onnxruntime-cuda, onnxruntime-cpu, torch-cuda, torch-cpu "
                                           "(default: all; the ones that cannot run are listed with the reason)."),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", help="Comma-separated artifact file names of the run "
                                            "(e.g. model.onnx,model.int8.onnx; default: all)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labelled image folder for accuracy and the end-to-end loop "
                                        "(default: the bundled SDNET2018 deck sample)."),
    e2e_images: Optional[int] = typer.Option(None, "--e2e-images", help="Real image files the end-to-end loop cycles "
                                             "through (default 32; --full 64)."),
    accuracy: bool = typer.Option(True, "--accuracy/--no-accuracy", help="Measure accuracy on --data."),
    accuracy_images: Optional[int] = typer.Option(None, "--accuracy-images", help="Labelled images scored per backend, "
                                                  "evenly spread over the classes (default 100; --full: all)."),
    accuracy_budget: float = typer.Option(0.01, "--accuracy-budget", help="Largest accuracy drop from the FP32 reference "
                                          "that still counts as within budget (also the accuracy tolerance of --compare)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Measure a bare onnxruntime session for the overhead goal."),
    report: Optional[Path] = typer.Option(None, "--report", help="Folder for bench.json, bench.md, bench.png "
                                          "(default: RUN/bench; for a bench.json input: not rewritten unless given)."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="An earlier bench.json: print ratios and exit "
                                           f"{EXIT_REGRESSION} when a metric regressed past --tolerance."),
    tolerance: float = typer.Option(0.15, "--tolerance", help="Allowed relative latency increase / throughput drop for --compare."),
    note: Optional[List[str]] = typer.Option(None, "--note", help="Free-text note stored in the report (repeatable)."),
    train_json: Optional[Path] = typer.Option(None, "--train-json", help="Training benchmark (edgecrack.bench.train/1, "
                                              "from benchmarks/bench_train.py) to fold into the report."),
) -> None:
    """Benchmark every artifact of a run on every backend here: latency, throughput, memory, accuracy."""
    from ..bench import BenchConfig, bench, compare_reports, read_report, summarize, training_section, write_report
    from ..errors import ConfigError

    if duration is not None and iterations is not None:
        raise ConfigError("--duration and --iterations exclude each other", "pick one: a time budget or a call count")
    is_report = run.suffix == ".json" and run.is_file()
    if is_report:
        rep = read_report(run)
        if train_json is not None:
            rep.training = training_section(train_json)
            rep.summary = summarize(rep)
        out = report
    else:
        given = {"batches": None if batch is None else _batches(batch), "duration_s": duration, "iterations": iterations,
                 "warmup": warmup, "e2e_images": e2e_images, "accuracy_images": accuracy_images}
        overrides = {k: v for k, v in given.items() if v is not None}
        base = {"threads": threads, "backends": _csv(backends), "artifacts": _csv(artifacts),
                "data": None if data is None else str(data), "accuracy": accuracy, "accuracy_budget": accuracy_budget,
                "baseline": baseline, "train_json": None if train_json is None else str(train_json),
                "notes": tuple(note or ())}
        cfg = (BenchConfig.full(str(run), **base, **overrides) if full
               else BenchConfig(run=str(run), **base, **overrides))
        with ProgressView(transient=True, single=True, message_style="dim") as view:
            rep = bench(cfg, view)
        out = report or ((run if run.is_dir() else run.parent) / "bench")
    console.print(_results_table(rep))
    _print_unavailable(rep)
    if out is not None:
        paths = write_report(rep, out)
        console.print("report: " + ", ".join(str(p) for p in paths.values()), markup=False)
    for n in rep.notes:
        if n.startswith("plots skipped"):
            err_console.print(f"[yellow]{escape(n)}[/]")
    console.print("[bold]summary[/]")
    for line in rep.summary.get("lines", []):
        console.print(f"  {escape(str(line))}")
    if compare is not None:
        cmp = compare_reports(read_report(compare), rep, tolerance, accuracy_budget)
        console.print(_comparison_table(cmp))
        for n in cmp.notes:
            err_console.print(f"[yellow]note:[/] {escape(str(n))}")
        if not cmp.passed:
            err_console.print(f"[bold red]{len(cmp.regressions)} regression(s)[/] past the tolerance against {escape(str(compare))}")
            raise typer.Exit(EXIT_REGRESSION)
        console.print(f"[green]no regression[/] against {escape(str(compare))} (tolerance {tolerance:.0%})")


def register(app: typer.Typer) -> None:
    app.command("bench")(user_errors(bench_cmd))

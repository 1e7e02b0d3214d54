"""``edgecrack doctor``: what this machine can run (:func:`edgecrack.doctor.run_doctor`), and with
``--model`` whether an ONNX model meets TensorRT's parser rules (:func:`edgecrack.export.graph.tensorrt_readiness`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, user_errors


def doctor_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON."),
               model: Optional[Path] = typer.Option(None, "--model", help="Also check an ONNX model (or a run folder's "
                                                    "ONNX files) against the rules TensorRT's parser enforces.")) -> None:
    """What this machine can run (backends, GPU, TensorRT, OpenCV video I/O), and why not."""
    from ..doctor import run_doctor

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


def _doctor_model(model: Path, json_out: bool) -> None:
    from ..export.graph import readiness_of_models

    results = readiness_of_models(model)
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


def register(app: typer.Typer) -> None:
    app.command("doctor")(user_errors(doctor_cmd))

"""``edgecrack eval``: metrics of an artifact (or of every artifact of a run) on a labelled folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, err_console, metrics_table, user_errors


def eval_cmd(
    artifact: Path = typer.Argument(..., help="Run folder, .onnx (FP32/INT8) or .engine."),
    data: Path = typer.Argument(..., help="Labelled image folder (one sub-folder per class)."),
    backend: str = typer.Option("auto", help="auto, tensorrt, onnxruntime-cuda, onnxruntime-cpu, torch."),
    label_from: str = typer.Option("folder", help="folder or prefix."),
    batch_size: int = typer.Option(16, help="Images per inference call."),
    out: Optional[Path] = typer.Option(None, help="Write the metrics JSON here."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    all_artifacts: bool = typer.Option(False, "--all", help="Evaluate every artifact of the run (ONNX, INT8, engines) with deltas vs FP32."),
) -> None:
    """Metrics of an artifact on any labelled folder (--all: every artifact of a run, compared with FP32)."""
    from ..evaluate import evaluate, evaluate_all

    if all_artifacts:
        rows = evaluate_all(artifact, data, label_from, batch_size, out=out)
        if json_out:
            console.print_json(json.dumps([{"artifact": str(r.artifact), "kind": r.kind, "precision": r.precision,
                                            "accuracy": r.result.metrics["accuracy"] if r.result else None,
                                            "accuracy_delta_points": r.accuracy_delta_points,
                                            "agreement_with_fp32": r.agreement, "error": r.error} for r in rows]))
            return
        t = Table(title=escape(f"artifacts of {artifact} on {data}"))
        for col in ("artifact", "precision", "backend", "n", "accuracy", "Δ vs FP32", "agree", "ROC-AUC"):
            t.add_column(col, justify="left" if col in ("artifact", "precision", "backend") else "right")
        for r in rows:
            if r.result is None:
                t.add_row(escape(r.artifact.name), r.precision, "[yellow]cannot run here[/]", "-", "-", "-", "-", "-")
                continue
            mt = r.result.metrics
            d = r.accuracy_delta_points
            dtxt = "-" if d is None else ("ref" if r.kind == "onnx" and abs(d) < 1e-9 and r.agreement == 1.0 else f"{d:+.1f} pts")
            auc = mt.get("roc_auc")
            t.add_row(escape(r.artifact.name), r.precision, r.result.backend["backend"], str(mt["n"]), f"{mt['accuracy']:.3f}", dtxt,
                      "-" if r.agreement is None else f"{r.agreement * 100:.1f}%", "-" if auc is None else f"{auc:.3f}")
        console.print(t)
        for r in rows:
            if r.error:
                err_console.print(f"{r.artifact.name}: {r.error}", markup=False)
        return
    res = evaluate(artifact, data, backend, label_from, batch_size, out)
    if json_out:
        console.print_json(json.dumps({"artifact": res.artifact, "backend": res.backend, "metrics": res.metrics}))
        return
    console.print(metrics_table({"eval": res.metrics}, escape(f"{Path(res.artifact).name} on {res.backend['backend']}")))
    if res.skipped:
        err_console.print(f"skipped {len(res.skipped)} files: " + "; ".join(f"{Path(p).name} ({w})" for p, w in res.skipped[:5]),
                          markup=False)


def register(app: typer.Typer) -> None:
    app.command("eval")(user_errors(eval_cmd))

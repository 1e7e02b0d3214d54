"""``edgecrack calibration build``: a seeded, stratified INT8 calibration set
(:func:`edgecrack.calibration.build_calibration_set`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from .common import console, user_errors


def calibration_build_cmd(
    out: Path = typer.Option(Path("calibration/deck"), "--out", "-o", help="Folder to write (images + calibration.json)."),
    source: Optional[Path] = typer.Option(None, help="Labelled image folder to draw from (default: bundled SDNET2018 deck sample)."),
    n: int = typer.Option(64, help="Images to draw (stratified by class)."),
    seed: int = typer.Option(0, help="Seed of the draw."),
    label_from: str = typer.Option("folder", help="folder or prefix."),
) -> None:
    """Build a seeded, stratified INT8 calibration set (feeds TensorRT and onnxruntime alike)."""
    from ..calibration import build_calibration_set

    s = build_calibration_set(out, source, n, seed, label_from)
    console.print(f"[bold green]calibration set[/] {escape(s.describe())}")
    console.print(f"  use it: edgecrack build-engine MODEL.onnx --precision int8 --calib {escape(str(out))}")


def register(app: typer.Typer) -> None:
    calib_app = typer.Typer(help="INT8 calibration sets.", no_args_is_help=True)
    calib_app.command("build")(user_errors(calibration_build_cmd))
    app.add_typer(calib_app, name="calibration")

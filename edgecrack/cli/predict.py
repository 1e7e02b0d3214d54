"""``edgecrack predict``: one line (or JSON object) per image, as the ML.NET tutorial prints them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from .common import err_console, user_errors


def predict_cmd(
    artifact: Path = typer.Argument(..., help="Run folder, .onnx or .engine."),
    images: List[Path] = typer.Argument(..., help="Image files or folders."),
    backend: str = typer.Option("auto", help="auto, tensorrt, onnxruntime-cuda, onnxruntime-cpu, torch."),
    label_from: str = typer.Option("folder", help="Where 'Actual' comes from when known: folder or prefix."),
    batch_size: int = typer.Option(16, help="Images per inference call."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line."),
    max_pixels: float = typer.Option(100.0, help="Largest image decoded at full size, in megapixels (0: no limit); "
                                                 "a bigger JPEG is decoded reduced, other formats are skipped."),
) -> None:
    """Predict single or multiple images (tutorial-style lines, or --json)."""
    from ..errors import ConfigError
    from ..evaluate import expand_inputs, predict_files
    from ..runtime import open_backend

    if max_pixels < 0:
        raise ConfigError(f"--max-pixels must be >= 0 (0: no limit), got {max_pixels:g}")
    sel = open_backend(artifact, backend)
    paths = expand_inputs(images)

    def show(p):
        if json_out:
            typer.echo(json.dumps(p.to_dict()))
        else:
            typer.echo(p.line())

    preds, skipped = predict_files(sel, paths, batch_size, label_from, on_result=show, max_pixels=int(max_pixels * 1e6))
    for p, why in skipped:
        err_console.print(f"skipped {p}: {why}", markup=False, soft_wrap=True)
    if not preds:
        err_console.print("[bold red]error:[/] no image could be predicted")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("predict")(user_errors(predict_cmd))

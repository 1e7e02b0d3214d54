"""``edgecrack export``: a run's checkpoint -> ONNX (:func:`edgecrack.export.from_run.onnx_from_run`), and
its FP16 / INT8 Q/DQ siblings checked against FP32 (:func:`edgecrack.export.precision.precision_onnx_from_onnx`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from .common import ProgressView, console, user_errors


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
    min_agreement: float = typer.Option(0.99, help="FP16/INT8: smallest accepted top-1 agreement with FP32 on the held-out images."),
    max_float_units: Optional[int] = typer.Option(None, help="INT8: most backbone units kept float to reach --min-agreement "
                                                  "(0: all INT8; default 4)."),
    bias_correction: bool = typer.Option(True, help="INT8: correct the convolutions' biases so each channel's mean on the calibration images matches FP32."),
) -> None:
    """Export a run's checkpoint to ONNX: preprocessing inside, manifest attached, parity recorded.

    With --precision fp16/int8 the FP32 model.onnx (exported first when missing) is converted and
    checked against FP32 on held-out images; outside its budget nothing is written.
    """
    from ..export.from_run import onnx_from_run

    if precision not in ("fp32", "fp16", "int8"):
        from ..errors import ConfigError

        raise ConfigError(f"unknown --precision {precision!r}", "use fp32, fp16 or int8")
    fp32_path = Path(run) / "model.onnx"
    if precision != "fp32" and fp32_path.is_file() and triton is None:
        _precision_export(fp32_path, precision, calib, eval_data, out, min_agreement, max_float_units,
                          bias_correction)
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
            from ..export.triton import write_triton_repository
        except ModuleNotFoundError as e:
            if e.name != "edgecrack.export.triton":
                raise
            from ..errors import ConfigError

            raise ConfigError("--triton is not available in this build (edgecrack.export.triton is missing)",
                              "export without --triton") from None
        repo = write_triton_repository(path, triton, [], max_batch)
        console.print(f"  Triton model repository: {escape(str(repo))}")
    if precision != "fp32":
        _precision_export(path, precision, calib, eval_data, out, min_agreement, max_float_units, bias_correction)


def _precision_export(fp32_path: Path, precision: str, calib, eval_data, out=None, min_agreement: float = 0.99,
                      max_float_units: int | None = None, bias_correction: bool = True) -> None:
    from ..export import mixed
    from ..export.precision import MAX_FLOAT_UNITS, precision_onnx_from_onnx

    console.print(f"[bold cyan]{precision.upper()}[/] from {escape(str(fp32_path))}, checked against FP32 on held-out images")
    with ProgressView() as prog:
        r = precision_onnx_from_onnx(fp32_path, precision, out, calib, eval_data, progress=prog,
                                     min_agreement=min_agreement,
                                     max_float=MAX_FLOAT_UNITS if max_float_units is None else max_float_units,
                                     bias_correction=bias_correction)
    f = r.fidelity
    console.print(f"[bold green]wrote[/] {escape(str(r.path))}: accuracy {f.accuracy:.3f} vs FP32 {f.fp32_accuracy:.3f} "
                  f"({f.accuracy_delta_points:+.1f} pts), top-1 agreement {f.top1_agreement * 100:.1f} %, "
                  f"max |dp| {f.max_abs_diff:.3f} on {escape(r.eval_images)}; TensorRT-ready")
    mp = r.manifest.extra.get("mixed_precision") or {}
    if mp.get("float_units"):
        console.print(f"  mixed precision: {len(mp['float_units'])} of {mp['units']} backbone units kept float "
                      f"({escape(', '.join(mp['float_units']))}): {mixed.chosen_as(mp)}")
    if r.calibration:
        console.print(f"  calibration: {escape(r.calibration)}")


def register(app: typer.Typer) -> None:
    app.command("export")(user_errors(export_cmd))

"""``edgecrack export``: a run folder's checkpoint -> ``model.onnx`` with its parity check recorded."""

from __future__ import annotations

import json
from pathlib import Path

from ..data import DEFAULT_DATASET, discover, stratified_split
from ..errors import ArtifactError, ConfigError
from ..manifest import Manifest
from .onnx import DEFAULT_OPSET, MIN_OPSET


def parity_images_for_run(run: Path, n: int = 16, seed: int = 0) -> list[Path]:
    """Real, class-balanced images for the export parity check: the run's training data when it
    is still there, else the bundled deck sample."""
    root = DEFAULT_DATASET
    cfg = run / "config.json"
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text()).get("data")
        except json.JSONDecodeError:
            data = None
        if data and Path(data).is_dir():
            root = Path(data)
    ds = discover(root, "folder", min_classes=1)
    if len(ds.samples) <= n:
        return [s.path for s in ds.samples]
    frac = n / len(ds.samples)
    idx, _ = stratified_split(ds.labels, (frac, 1 - frac), seed)
    return [ds.samples[i].path for i in idx]


def onnx_from_run(run: str | Path, out: str | Path | None = None, opset: int = DEFAULT_OPSET,
                  parity_images: int = 16, parity_paths: list[Path] | None = None) -> tuple[Path, Manifest]:
    """Re-export a run's checkpoint to ONNX (preprocessing inside, manifest attached, parity recorded).

    Args:
        run: Run folder with ``checkpoint.safetensors`` and ``manifest.json``.
        out: Destination (default ``<run>/model.onnx``), written atomically with its sidecar.
        opset: ONNX opset; 17 by default, 13 is the floor (older TensorRT on JetPack 4/5.0).
        parity_images: Real images for the torch-vs-onnxruntime check (0 disables it).
        parity_paths: These images for the check instead (an empty list disables it).

    Returns:
        (ONNX path, its manifest; ``extra.parity_torch_vs_ort`` holds max |dp| and top-1 agreement)

    Raises:
        ArtifactError: No checkpoint, or the parity check fails.
        ConfigError: Opset below the floor.
    """
    run = Path(run)
    if not run.is_dir():
        raise ArtifactError(f"run folder not found: {run}", "pass the folder written by edgecrack train --out")
    if opset < MIN_OPSET:
        raise ConfigError(f"--opset {opset} is below the supported floor {MIN_OPSET}", f"use --opset {MIN_OPSET} or higher")
    try:
        from ..train.checkpoint import load_checkpoint
    except ImportError as e:
        from ..errors import BackendUnavailable

        raise BackendUnavailable(f"export needs PyTorch ({e.name} is missing)", "pip install 'edgecrack[train]'") from None
    from ..preprocess import preprocess_files
    from .onnx import export_onnx

    net, manifest = load_checkpoint(run)
    if parity_paths is None:
        parity_paths = parity_images_for_run(run, parity_images) if parity_images > 0 else []
    batch = preprocess_files(parity_paths, manifest.input) if parity_paths else None
    return export_onnx(net, manifest, Path(out) if out else run / "model.onnx", batch, opset)

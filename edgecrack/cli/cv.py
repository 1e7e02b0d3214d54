"""``edgecrack cv``: k-fold cross-validation of ``edgecrack train`` (:func:`edgecrack.train.cv.cross_validate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, user_errors


def cv_cmd(
    data: Optional[Path] = typer.Argument(None, help="Dataset folder (one sub-folder per class; an SDNET2018 root is merged "
                                                     "into cracked/uncracked). Default: the bundled deck sample."),
    folds: int = typer.Option(5, help="Number of stratified folds; each is the test set of one training run."),
    seed: int = typer.Option(0, help="Seed of the fold assignment."),
    out: Path = typer.Option(Path("runs/cv"), "--out", "-o", help="Folder for the fold runs and cv.json / cv.md."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training settings of a run (its config.json or folder); "
                                                                 "default: edgecrack train's defaults."),
    classes: Optional[str] = typer.Option(None, help="binary or all (see edgecrack train)."),
    surfaces: Optional[str] = typer.Option(None, help="SDNET2018 surfaces to use, e.g. D,W."),
    label_from: Optional[str] = typer.Option(None, help="folder or prefix."),
    backbone_units: Optional[int] = typer.Option(None, help="Backbone units kept (see edgecrack train; 0: all)."),
    fine_tune_blocks: Optional[int] = typer.Option(None, help="Backbone units fine-tuned (0: head only)."),
    views: Optional[int] = typer.Option(None, help="Views cached per image (1-12: 8 flip/rotation views, then light draws)."),
    image_size: Optional[int] = typer.Option(None, help="Square input size (multiple of 32)."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (fine-tuning)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    workers: Optional[int] = typer.Option(None, help="Image decoding processes (see edgecrack train)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Bottleneck cache folder."),
) -> None:
    """Cross-validate training: k runs, each testing on one held-out fold; mean ± std of the held-out metrics."""
    from rich.markup import escape

    from ..train.api import TrainConfig, load_config
    from ..train.cv import cross_validate

    base = load_config(config) if config else TrainConfig()
    given = {"classes": classes, "label_from": label_from, "fine_tune_blocks": fine_tune_blocks, "views": views,
             "backbone_units": backbone_units,
             "image_size": image_size, "device": device, "workers": workers,
             "cache_dir": str(cache_dir) if cache_dir else None,
             "surfaces": [x.strip().upper() for x in surfaces.split(",") if x.strip()] if surfaces else None}
    for k, v in given.items():
        if v is not None:
            setattr(base, k, v)
    if epochs is not None:
        base.loop.epochs = epochs

    def show(i: int, r: dict) -> None:
        console.print(f"fold {i}: test accuracy {r['accuracy']:.3f}  ROC-AUC "
                      f"{'-' if r['roc_auc'] is None else format(r['roc_auc'], '.3f')}  ({r['seconds']:.1f}s)")

    rep = cross_validate(data, folds, seed, base, out, on_fold=show)
    console.print(f"[bold green]{folds}-fold CV[/] accuracy {rep['accuracy_mean']:.3f} ± {rep['accuracy_std']:.3f} on "
                  f"{rep['images']} images in {rep['seconds']:.0f}s")
    console.print(f"report: {escape(str(out / 'cv.md'))}, {escape(str(out / 'cv.json'))}")


def register(app: typer.Typer) -> None:
    app.command("cv")(user_errors(cv_cmd))

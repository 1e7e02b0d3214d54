"""``edgecrack train``: options -> :class:`~edgecrack.train.api.TrainConfig` -> :func:`edgecrack.jobs.train_job`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from .common import ProgressView, console, metrics_table, user_errors


class TrainView(ProgressView):
    """The training job's progress: stages, the bottleneck bar (with its rate), one line per epoch."""

    def __init__(self):
        super().__init__(transient=True, unit="img")

    def epoch(self, s) -> None:
        console.print(f"  Epoch {s.epoch:3d}  train loss {s.train_loss:.4f} acc {s.train_accuracy:.3f}  |  "
                      f"val loss {s.val_loss:.4f} acc {s.val_accuracy:.3f}  |  "
                      + (f"L2 {s.l2:.0e} (exact fit)" if s.l2 is not None else f"lr {s.lr:.2e}") + f"  {s.seconds:.2f}s")


#: ``train`` options whose config field has another name; ``LOOP_OPTIONS`` live in ``config.loop``.
OPTION_FIELDS = {"val_fraction": "val_fraction_of_rest", "threshold": "threshold_mode"}
LOOP_OPTIONS = ("epochs", "batch_size", "lr", "lr_top", "weight_decay", "schedule", "warmup_epochs", "early_stopping",
                "monitor", "patience", "min_delta", "class_weight", "label_smoothing", "seed", "amp")


def train_cmd(
    ctx: typer.Context,
    data: Optional[Path] = typer.Argument(None, help="Dataset folder with one sub-folder per class. Default: the bundled SDNET2018 deck sample (400 images)."),
    out: Path = typer.Option(Path("runs/deck"), "--out", "-o", help="Run folder to write."),
    label_from: str = typer.Option("folder", help="Labels from the 'folder' name or the file name 'prefix' letters."),
    classes: str = typer.Option("binary", help="binary: an SDNET2018 root with several surfaces (D/CD D/UD W/CW ...) trains "
                                 "cracked/uncracked; all: every class folder is a class."),
    surfaces: Optional[str] = typer.Option(None, help="SDNET2018 surfaces to use, e.g. D,W (default: all found)."),
    val_dir: Optional[Path] = typer.Option(None, help="Explicit validation folder."),
    test_dir: Optional[Path] = typer.Option(None, help="Explicit test folder."),
    train_fraction: Optional[float] = typer.Option(None, help="Share of the data used for training (default 0.7, the tutorial's; 0.8 with --test-dir)."),
    val_fraction: float = typer.Option(0.9, help="Share of the non-training rest used for validation (the remainder is test)."),
    backbone: str = typer.Option("efficientnet_lite0", help="efficientnet_lite0/1/2, mobilenet_v3_large, resnet50, resnet18."),
    weights: Optional[Path] = typer.Option(None, help="Local pretrained weights file (needed for torchvision backbones)."),
    allow_download: bool = typer.Option(False, help="Let torchvision download ImageNet weights (needs network)."),
    image_size: int = typer.Option(224, help="Square input size (multiple of 32). 224: one EfficientNet-Lite0 pass at its native size (the edge default); 256: SDNET2018's native tile size, 1.3x the compute. 0: the backbone's native size."),
    backbone_units: Optional[int] = typer.Option(None, help="Backbone units kept, counted from the stem; features come from the last one and deeper units are not computed (default: the backbone's; 0: all)."),
    fine_tune_blocks: Optional[int] = typer.Option(None, help="Backbone units fine-tuned on the cached trunk (0: head only)."),
    views: int = typer.Option(12, help="Training views cached per image (1-12): 8 flip/rotation views, then random brightness/contrast/noise draws of one (9-12)."),
    tta: int = typer.Option(1, help="Flip views averaged inside the exported model (1, 2 or 4): each costs one backbone pass per frame. 1 (default) for cameras and Jetsons; --image-size 256 --tta 4 --backbone-units 0 --views 8 for offline surveys (5-fold CV 0.882 vs the default's 0.863 on the bundled deck, 3.7x the latency: benchmarks/candidates)."),
    pool: str = typer.Option("avg", help="Head pooling: avg, max, avgmax."),
    dropout: float = typer.Option(0.2, help="Dropout before the classifier."),
    epochs: int = typer.Option(40, help="Maximum epochs."),
    batch_size: int = typer.Option(32, help="Mini-batch size."),
    lr: float = typer.Option(3e-3, help="Peak learning rate of the head."),
    lr_top: Optional[float] = typer.Option(None, help="Learning rate of fine-tuned backbone units (default lr/10)."),
    weight_decay: float = typer.Option(1e-2, help="AdamW weight decay."),
    schedule: str = typer.Option("cosine", help="cosine, step or constant."),
    warmup_epochs: int = typer.Option(1, help="Linear warm-up epochs."),
    early_stopping: bool = typer.Option(True, help="Stop when the monitored metric stalls; best weights are restored."),
    monitor: str = typer.Option("val_loss", help="val_loss or val_accuracy."),
    patience: int = typer.Option(8, help="Epochs without improvement before stopping."),
    min_delta: float = typer.Option(1e-3, help="Smallest improvement that counts."),
    class_weight: str = typer.Option("auto", help="auto (inverse class frequency) or none."),
    label_smoothing: float = typer.Option(0.0, help="Cross-entropy label smoothing."),
    positive_label: Optional[str] = typer.Option(None, help="The cracked class. Default: recognised from the names "
                                                 "(Positive/Negative, crack/no_crack, defect/ok, 1/0, SDNET2018's CD/UD ...); "
                                                 "required when the names do not say."),
    solver: str = typer.Option("auto", help="auto: exact L-BFGS logistic regression for head-only training, AdamW otherwise; or lbfgs / adamw."),
    refit: bool = typer.Option(True, help="Retrain on training + validation images once validation has chosen epochs/L2 and the threshold."),
    threshold: str = typer.Option("f1", help="Decision threshold: 'f1' maximises cracked-class F1; 'recall' reaches --target-recall."),
    target_recall: float = typer.Option(0.95, help="Cracked-class recall for --threshold recall."),
    seed: int = typer.Option(0, help="Seed of splits, initialisation and shuffling."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (fine-tuning on CUDA runs in mixed precision)."),
    workers: Optional[int] = typer.Option(None, help="Processes decoding images for the bottleneck phase (default: none on "
                                                     "CPU, where two threads decode; up to 8 on CUDA). 0: two threads."),
    amp: bool = typer.Option(True, help="On CUDA, fine-tune under fp16 autocast with a gradient scaler."),
    config: Optional[Path] = typer.Option(None, "--config", help="Re-run a run: its config.json (or run folder). Options "
                                                                 "given on the command line override the file's values."),
    cache_dir: Optional[Path] = typer.Option(None, help="Bottleneck cache folder (default $EDGECRACK_CACHE or ~/.cache/edgecrack)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute features; do not read or write the cache."),
    threads: Optional[int] = typer.Option(None, help="CPU threads."),
    export: bool = typer.Option(True, help="Export model.onnx at the end."),
    opset: int = typer.Option(17, help="ONNX opset of the export (>= 13)."),
    plots: bool = typer.Option(True, help="Write PNG plots."),
) -> None:
    """Train a crack classifier by transfer learning (bottleneck phase + training phase)."""
    from ..jobs import train_job
    from ..train.api import TrainConfig, load_config
    from ..train.loop import LoopConfig

    loop = LoopConfig(epochs=epochs, batch_size=batch_size, lr=lr, lr_top=lr_top, weight_decay=weight_decay,
                      schedule=schedule, warmup_epochs=warmup_epochs, early_stopping=early_stopping, monitor=monitor,
                      patience=patience, min_delta=min_delta, class_weight=class_weight, label_smoothing=label_smoothing,
                      seed=seed, amp=amp)
    cfg = TrainConfig(data=str(data) if data else None, out=str(out), label_from=label_from, classes=classes,
                      surfaces=[x.strip().upper() for x in surfaces.split(",") if x.strip()] if surfaces else None,
                      val_dir=str(val_dir) if val_dir else None, test_dir=str(test_dir) if test_dir else None,
                      train_fraction=train_fraction, val_fraction_of_rest=val_fraction, backbone=backbone,
                      weights=str(weights) if weights else None, allow_download=allow_download, image_size=image_size or None, tta=tta,
                      views=views, pool=pool, dropout=dropout, positive_label=positive_label,
                      threshold_mode=threshold, target_recall=target_recall, solver=solver, refit=refit, device=device,
                      workers=workers, cache_dir=str(cache_dir) if cache_dir else None, no_cache=no_cache, threads=threads,
                      export=export, opset=opset, plots=plots, loop=loop, backbone_units=backbone_units)
    if fine_tune_blocks is not None:
        cfg.fine_tune_blocks = fine_tune_blocks
    if config is not None:
        # The file's values, except those given explicitly on this command line.
        # by name: typer may ship its own copy of click's ParameterSource enum
        given = {name for name in ctx.params if name != "config"
                 and getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")}
        base = load_config(config)
        for name in given:
            if name in LOOP_OPTIONS:
                setattr(base.loop, name, getattr(cfg.loop, name))
            else:
                field = OPTION_FIELDS.get(name, name)
                setattr(base, field, getattr(cfg, field))
        cfg = base
    with TrainView() as view:
        res = train_job(cfg, view)
    best = (f"exact head, L2 {res.metrics['best_l2']:.0e}" if res.metrics.get("solver") == "lbfgs"
            else f"best epoch {res.best_epoch}")
    console.print(metrics_table(res.metrics, escape(f"edgecrack train: {res.manifest.backbone}, {best}")))
    thr = res.manifest.threshold
    tm = res.timings
    console.print(f"[bold green]done[/] in {tm['total_s']:.1f}s (bottleneck {tm['bottleneck_s']:.1f}s, training "
                  f"{tm['training_s']:.1f}s)  threshold {thr if thr is None else f'{thr:.3f}'} on "
                  f"{escape(str(res.manifest.positive_label))}  skipped {len(res.skipped)} files")
    written = ["checkpoint.safetensors"] + (["model.onnx"] if cfg.export else []) + ["metrics.json"] + (["plots/"] if cfg.plots else [])
    console.print(f"run folder: {escape(str(res.run_dir))}  ({', '.join(written)})")


def register(app: typer.Typer) -> None:
    app.command("train")(user_errors(train_cmd))

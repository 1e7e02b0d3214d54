"""The training job: discover -> bottleneck phase -> split -> training phase -> metrics -> run folder.

``edgecrack train`` runs it through :func:`edgecrack.jobs.train_job`, which adds the ONNX export:
this package builds, trains, saves and loads the network and never imports ``edgecrack.export``.
"""

from __future__ import annotations

import copy
import csv
import math
import dataclasses
import io
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..data import (DEFAULT_DATASET, Dataset, discover, fingerprint, merge_sdnet, resolve_positive, stratified_split,
                    tutorial_split)
from ..errors import ConfigError, DatasetError
from ..io import atomic_write_json, atomic_write_text, read_json
from ..manifest import Manifest
from ..metrics import choose_threshold, classification_report
from ..preprocess import InputContract
from ..progress import Reporter as _Reporter
from ..splits import SPLITS_FILE
from .backbones import BACKBONES, LoadedBackbone, keep_units, load_backbone, resolve_units
from .bottleneck import VIEWS, FeatureRows, FeatureSet, default_cache_dir, features_from_images, model_key
from .checkpoint import save_checkpoint
from .loop import EpochStats, LoopConfig, fit_linear_head, logits_from_features, train_on_features
from .model import POOLS, TTA_VIEWS, CrackNet, build_cracknet


@dataclass
class TrainConfig:
    """Everything ``edgecrack train`` needs; written to ``config.json`` in the run folder.

    Attributes:
        data: Dataset folder (None: the bundled SDNET2018 deck sample).
        out: Run folder.
        label_from: ``folder`` or ``prefix`` (ML.NET's ``useFolderNameAsLabel=false``).
        classes: ``binary`` merges a multi-surface SDNET2018 root into cracked/uncracked;
            ``all`` keeps every class folder (see :func:`edgecrack.data.discover`).
        surfaces: SDNET2018 surfaces to train on (e.g. ``["D", "W"]``); None: all.
        val_dir: Explicit validation folder (else split from ``data``).
        test_dir: Explicit test folder (else split from ``data``).
        train_fraction: Share of ``data`` used for training. None: the tutorial's 0.7 when
            validation and test are both split from ``data``; 0.8 when ``test_dir`` is given.
        val_fraction_of_rest: Share of the remainder used for validation (tutorial: 0.9).
        backbone: Backbone registry name.
        weights: Local weights file (torchvision backbones need one unless ``allow_download``).
        allow_download: Let torchvision download weights.
        image_size: Square input size (multiple of 32). Default 224: one EfficientNet-Lite0 pass
            at its native size, the model an edge device wants (benchmarks/candidates compares
            it with 256 px and 4 flip views, 3.7x the latency). None: the backbone's native size.
        backbone_units: Backbone units kept, counted from the stem (None: the backbone's default,
            see ``BackboneSpec.default_units``: 13 of Lite0's 18; 0: all). Features come from the
            last kept unit; the deeper units are not computed and not exported. With the light
            views, 13 units were as accurate as 18 on the deck images as shot and more robust
            under imaging shifts (benchmarks/shift).
        fine_tune_blocks: Backbone units trained on top of the cached trunk (0: head only).
        views: Training views cached per image (1 = no augmentation, up to 12): the 8 dihedral views,
            then photometric 'light' draws (:func:`edgecrack.train.bottleneck.photometric`).
        tta: Flip views averaged inside the exported graph (1, 2 or 4); costs that many
            backbone passes per image (1 by default: offline surveys may take 4).
        pool: Global pooling of the head: avg, max, avgmax.
        dropout: Dropout before the classifier.
        positive_label: The cracked class (None: recognised from the class names; ambiguous
            names are an error, see :func:`edgecrack.data.resolve_positive`).
        threshold_mode: ``f1`` (maximise F1 of the cracked class) or ``recall``.
        target_recall: Cracked-class recall to reach with ``threshold_mode=recall``.
        threshold_tolerance: F1 within this of the best counts as a tie; the tie nearest 0.5 wins.
        threshold_folds: With the exact head and refit, pick the threshold on out-of-fold
            probabilities of train + validation images from this many folds (1: on validation).
        device: ``auto``, ``cpu`` or ``cuda`` (fine-tuning on CUDA runs under fp16 autocast with
            a gradient scaler unless ``loop.amp`` is off).
        workers: Processes that decode images for the bottleneck phase (None: none on CPU,
            where two threads decode; up to 8 on CUDA). 0: two threads.
        cache_dir: Bottleneck cache root (None: ``$EDGECRACK_CACHE`` or ``~/.cache/edgecrack``).
        no_cache: Recompute features, do not read or write the cache.
        threads: CPU threads (None: all cores).
        refit: After validation has chosen the epoch count and threshold, retrain from scratch on
            training + validation images for that many epochs.
        solver: ``auto`` (exact L-BFGS logistic regression for head-only training on pooled
            features, AdamW otherwise), ``lbfgs`` or ``adamw``.
        l2_grid: L2 penalties tried by the exact solver; validation log-loss picks one (shown as
            one "epoch" each in the history).
        export: Export ``model.onnx`` at the end: done by :func:`edgecrack.jobs.train_job` (what
            ``edgecrack train`` runs); :func:`train` itself writes the checkpoint only.
        opset: ONNX opset of the export.
        plots: Write PNG plots.
    """

    data: str | None = None
    out: str = "runs/deck"
    label_from: str = "folder"
    classes: str = "binary"
    surfaces: list[str] | None = None
    val_dir: str | None = None
    test_dir: str | None = None
    train_fraction: float | None = None
    val_fraction_of_rest: float = 0.9
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    allow_download: bool = False
    image_size: int | None = 224
    backbone_units: int | None = None
    fine_tune_blocks: int = 0
    views: int = 12
    tta: int = 1
    pool: str = "avg"
    dropout: float = 0.2
    positive_label: str | None = None
    threshold_mode: str = "f1"
    target_recall: float = 0.95
    threshold_tolerance: float = 0.02
    threshold_folds: int = 5
    device: str = "auto"
    workers: int | None = None
    cache_dir: str | None = None
    no_cache: bool = False
    threads: int | None = None
    refit: bool = True
    solver: str = "auto"
    l2_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
    export: bool = True
    opset: int = 17
    plots: bool = True
    loop: LoopConfig = field(default_factory=LoopConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a type hint of :class:`TrainConfig` / :class:`LoopConfig`."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (x for x in args if x is not type(None)):
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            items = [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return _dataclass_from_dict(hint, value, where + ".")
    else:  # pragma: no cover - a field type this loader does not know is a bug
        raise TypeError(f"no loader for {hint!r}")
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"config key {where!r}: expected {name}, got {json.dumps(value)}")


def _dataclass_from_dict(cls: type, d: dict[str, Any], prefix: str = "") -> Any:
    import typing

    hints = typing.get_type_hints(cls)
    unknown = sorted(set(d) - set(hints))
    if unknown:
        raise ConfigError(f"unknown config key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(repr(prefix + k) for k in unknown)}",
                          f"{cls.__name__} keys are: {', '.join(hints)}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in d.items()})


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from the dict ``config.json`` holds (missing keys take defaults).

    Raises:
        ConfigError: Unknown keys, or values of the wrong type.
    """
    if not isinstance(d, dict):
        raise ConfigError("a training config must be a JSON object")
    if "views" in d and "backbone_units" not in d:
        # written before --backbone-units existed, when every run kept the whole backbone
        d = {**d, "backbone_units": 0}
    return _dataclass_from_dict(TrainConfig, d)


def load_config(path: str | Path) -> TrainConfig:
    """The config of a run (``runs/x/config.json``, or the run folder itself), to re-run it.

    Raises:
        ConfigError: Missing or unreadable file, not JSON, unknown keys or wrong types.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        d = read_json(p)
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror or e}",
                          "pass the config.json of a run folder (edgecrack train writes one)") from None
    try:
        return config_from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e.message}", e.hint) from None


class Reporter(_Reporter):
    """Progress of a training job (:class:`edgecrack.progress.Reporter`), plus one line per epoch."""

    def epoch(self, stats: EpochStats) -> None:
        """An epoch (or, for the exact head, one L2 penalty of the grid) finished."""


@dataclass
class TrainResult:
    run_dir: Path
    manifest: Manifest
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    timings: dict[str, float]
    skipped: list[tuple[str, str]]
    best_epoch: int
    counts: dict[str, dict[str, int]]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but PyTorch sees no CUDA device", "use --device auto or cpu")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}", "use auto, cpu or cuda")
    return device


def _validate(cfg: TrainConfig) -> None:
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {cfg.backbone!r}", f"choose one of: {', '.join(BACKBONES)}")
    if not 1 <= cfg.views <= len(VIEWS):
        raise ConfigError(f"--views must be 1..{len(VIEWS)}, got {cfg.views}")
    if cfg.solver not in ("auto", "lbfgs", "adamw"):
        raise ConfigError(f"--solver must be auto, lbfgs or adamw, got {cfg.solver!r}")
    if cfg.tta not in TTA_VIEWS:
        raise ConfigError(f"--tta must be one of {', '.join(map(str, TTA_VIEWS))}, got {cfg.tta}")
    if cfg.tta > cfg.views:
        raise ConfigError(f"--tta {cfg.tta} needs at least {cfg.tta} cached views (--views {cfg.views})",
                          f"use --views {cfg.tta} or more")
    if cfg.pool not in POOLS:
        raise ConfigError(f"--pool must be one of {', '.join(POOLS)}, got {cfg.pool!r}")
    if cfg.image_size is not None and (cfg.image_size < 32 or cfg.image_size % 32):
        raise ConfigError(f"--image-size must be a multiple of 32 (>= 32), got {cfg.image_size}")
    if cfg.train_fraction is not None and not 0 < cfg.train_fraction < 1:
        raise ConfigError(f"--train-fraction must be in (0, 1), got {cfg.train_fraction}")
    if cfg.threshold_mode not in ("f1", "recall"):
        raise ConfigError(f"--threshold must be f1 or recall, got {cfg.threshold_mode!r}")
    if cfg.loop.epochs < 1 or cfg.loop.batch_size < 1:
        raise ConfigError("--epochs and --batch-size must be positive")
    if cfg.workers is not None and cfg.workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0: decode in this process), got {cfg.workers}")


def versions() -> dict[str, str]:
    import cv2

    v = {"edgecrack": __version__, "torch": torch.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
         "python": platform.python_version()}
    try:
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return v


def train(cfg: TrainConfig, reporter: Reporter | None = None) -> TrainResult:
    """Run the training job and write the run folder (checkpoint, manifest, config, splits, metrics).

    The steps, each a function of this module: :func:`load_data` (discover the folders),
    :func:`build_model` (backbone + head), :func:`bottleneck_features` (cached trunk output),
    :func:`split_rows` (train/validation/test), :func:`fit` (training phase, threshold, refit),
    :func:`score` (metrics) and :func:`write_job` (the run folder). The ONNX export that
    ``edgecrack train`` does afterwards (``cfg.export``) is :func:`edgecrack.jobs.train_job`'s:
    this package never imports the export side.

    Raises:
        DatasetError: Missing/empty/single-class data, or val/test classes that differ.
        WeightsError: Backbone weights unavailable.
        ConfigError: Invalid options.
    """
    rep = reporter or Reporter()
    _validate(cfg)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    device = resolve_device(cfg.device)
    cfg.loop.device = device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.loop.seed)

    data = load_data(cfg, rep)
    t0 = time.perf_counter()
    model = build_model(cfg, data.classes)
    timings["load_backbone_s"] = time.perf_counter() - t0
    fs = bottleneck_features(cfg, data, model, device, rep)
    timings["bottleneck_s"] = fs.seconds
    split = split_rows(cfg, data, fs, rep)
    # Features stay in the bottleneck's file; every use reads them through FeatureRows (a
    # minibatch or a bounded chunk at a time), never as a copy of a whole split.
    features = fs.rows()
    fitted = fit(cfg, model.net, features, split, data, device, rep)
    timings.update(fitted.timings)
    metrics, probs = score(cfg, model.net, features, split, data, fitted, device)
    skipped = list(data.train.skipped) + list(fs.skipped)
    manifest = write_job(cfg, data, model, fs, split, fitted, metrics, probs, skipped, timings)
    timings["total_s"] = time.perf_counter() - t_start
    metrics["timings"] = timings
    metrics["bottleneck"] = {"computed": fs.computed, "cache_hits": fs.hits, "images_per_s": fs.images_per_s,
                             "engine": fs.engine, "views": cfg.views}
    metrics["skipped"] = len(skipped)
    run = Path(cfg.out)
    atomic_write_json(run / "metrics.json", metrics)
    return TrainResult(run, manifest, metrics, [asdict(h) for h in fitted.history], timings, skipped, fitted.best_epoch,
                       split.counts)


# -- the steps of train() ---------------------------------------------------------------------


@dataclass
class JobData:
    """The job's image folders: training root and the optional explicit held-out folders."""

    root: Path
    train: Dataset
    validation: Dataset | None
    test: Dataset | None
    classes: list[str]
    positive: str | None

    @property
    def positive_index(self) -> int | None:
        return self.classes.index(self.positive) if self.positive else None


def load_data(cfg: TrainConfig, rep: Reporter) -> JobData:
    """Discover the training root and the explicit validation/test folders of ``cfg``.

    Raises:
        DatasetError: Missing/empty/single-class data, or held-out classes the training root lacks.
    """
    root = Path(cfg.data) if cfg.data else DEFAULT_DATASET
    ds = discover(root, cfg.label_from, classes=cfg.classes, surfaces=cfg.surfaces)
    # explicit held-out folders are used whole (--surfaces selects from the training root)
    val_ds = discover(cfg.val_dir, cfg.label_from, min_classes=1, classes=cfg.classes) if cfg.val_dir else None
    test_ds = discover(cfg.test_dir, cfg.label_from, min_classes=1, classes=cfg.classes) if cfg.test_dir else None
    if ds.surface_counts():  # merged to cracked/uncracked: a one-surface held-out folder merges too
        val_ds, test_ds = (merge_sdnet(x) if x is not None else None for x in (val_ds, test_ds))
    classes = ds.classes
    for name, extra in (("validation", val_ds), ("test", test_ds)):
        if extra is not None and not set(extra.classes) <= set(classes):
            raise DatasetError(f"{name} folder {extra.root} has classes {extra.classes} not in training classes {classes}",
                               "use the same class folder names in every split")
    positive = resolve_positive(classes, cfg.positive_label)
    rep.stage("data", f"{len(ds.samples)} images in {root} ({', '.join(f'{k}: {v}' for k, v in ds.counts().items())})")
    if ds.surface_counts():
        rep.message(f"SDNET2018 surfaces merged into {' / '.join(classes)}: {ds.describe_surfaces()}")
    return JobData(root, ds, val_ds, test_ds, classes, positive)


@dataclass
class JobModel:
    """The network being trained, its backbone and the input contract it was built for."""

    backbone: LoadedBackbone
    net: CrackNet
    contract: InputContract


def build_model(cfg: TrainConfig, classes: list[str]) -> JobModel:
    """Load the pretrained backbone and put an untrained head for ``classes`` on it.

    Raises:
        WeightsError: Backbone weights unavailable.
        ConfigError: ``fine_tune_blocks`` out of range for the backbone.
    """
    bb = load_backbone(cfg.backbone, cfg.weights, cfg.allow_download)
    size = cfg.image_size or bb.spec.default_size
    contract = InputContract(size, size, mean=bb.spec.mean, std=bb.spec.std)
    total = len(bb.units)
    if cfg.backbone_units is not None and not 0 <= cfg.backbone_units <= total:
        raise ConfigError(f"--backbone-units must be in [0, {total}] for {cfg.backbone} (0: all {total}), "
                          f"got {cfg.backbone_units}", "units count from the stem: 1 keeps the stem only")
    bb = keep_units(bb, resolve_units(bb.spec, total, cfg.backbone_units))
    # config.json records the units kept, so that --config re-runs this network whatever the default becomes
    cfg.backbone_units = len(bb.units)
    if not 0 <= cfg.fine_tune_blocks < len(bb.units):
        raise ConfigError(f"--fine-tune-blocks must be in [0, {len(bb.units) - 1}] for {cfg.backbone} "
                          f"with {len(bb.units)} units kept")
    net = build_cracknet(bb, len(classes), cfg.fine_tune_blocks, contract, cfg.dropout, cfg.pool, cfg.tta)
    return JobModel(bb, net, contract)


def bottleneck_features(cfg: TrainConfig, data: JobData, model: JobModel, device: str, rep: Reporter) -> FeatureSet:
    """The bottleneck phase: frozen-trunk features of every image of the job (content-addressed cache)."""
    views = list(VIEWS)[: cfg.views]
    pooled = cfg.fine_tune_blocks == 0
    c = model.contract
    units = len(model.backbone.units) if model.backbone.total_units else None
    key = model_key(cfg.backbone, model.backbone.weights_id, c, cfg.fine_tune_blocks, pooled, views, cfg.pool, units)
    cache = None if cfg.no_cache else Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    all_samples = (list(data.train.samples) + (data.validation.samples if data.validation else [])
                   + (data.test.samples if data.test else []))
    rep.stage("bottleneck", f"frozen trunk of {cfg.backbone} at {c.width}x{c.height}, {len(views)} views per image, "
              f"cache {'off' if cache is None else cache}")
    fs = features_from_images([s.path for s in all_samples], model.net, c, key, views=views, pooled=pooled,
                              pool=cfg.pool, cache_dir=cache, device=device, threads=cfg.threads, workers=cfg.workers,
                              progress=lambda d, t: rep.progress("bottleneck", d, t))
    rep.message(f"bottleneck: {fs.computed} computed, {fs.hits} from cache, {len(fs.skipped)} skipped"
                + (f", {fs.images_per_s:.1f} images/s ({fs.engine})" if fs.computed else ""))
    return fs


@dataclass
class Split:
    """Feature rows and class indices of each split (rows index :attr:`FeatureSet.paths`)."""

    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    counts: dict[str, dict[str, int]]

    def items(self):
        return (("train", *self.train), ("validation", *self.validation), ("test", *self.test))


def split_rows(cfg: TrainConfig, data: JobData, fs: FeatureSet, rep: Reporter) -> Split:
    """Split the decoded images: the tutorial's 70/27/3 split, or the explicit held-out folders.

    Raises:
        DatasetError: No image of the training root decoded, or only one class did.
    """
    classes = data.classes
    row = {str(p): i for i, p in enumerate(fs.paths)}

    def rows(samples) -> tuple[np.ndarray, np.ndarray]:
        keep = [(row[str(s.path)], classes.index(s.label)) for s in samples if str(s.path) in row]
        if not keep:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        r, y = zip(*keep)
        return np.array(r), np.array(y)

    main_rows, main_y = rows(data.train.samples)
    if len(main_rows) == 0:
        raise DatasetError(f"none of the images in {data.root} could be decoded ({len(data.train.samples)} tried: "
                           + "; ".join(f"{Path(p).name}: {why}" for p, why in fs.skipped[:3]) + ")",
                           "replace or remove the corrupt files")
    if len(set(main_y.tolist())) < 2:
        raise DatasetError(f"after skipping unreadable files only one class is left in {data.root}")
    main_labels = [classes[i] for i in main_y]
    if data.validation is None and data.test is None:
        tr, va, te = tutorial_split(main_labels, cfg.loop.seed, cfg.train_fraction or 0.7, cfg.val_fraction_of_rest)
    elif data.validation is None:
        frac = cfg.train_fraction or 0.8
        tr, va = stratified_split(main_labels, (frac, 1 - frac), cfg.loop.seed)
        te = None
    else:
        tr, va, te = np.arange(len(main_rows)), None, None
    train_ = (main_rows[tr], main_y[tr])
    val = (main_rows[va], main_y[va]) if va is not None else rows(data.validation.samples)
    test = ((main_rows[te], main_y[te]) if te is not None
            else rows(data.test.samples) if data.test else (np.zeros(0, int), np.zeros(0, int)))
    counts = {name: _count(y, classes) for name, y in (("train", train_[1]), ("validation", val[1]), ("test", test[1]))}
    rep.stage("split", ", ".join(f"{k} {sum(v.values())}" for k, v in counts.items()))
    return Split(train_, val, test, counts)


@dataclass
class Fit:
    """What the training phase chose: epochs or L2, the decision threshold, and the history."""

    history: list[EpochStats]
    best_epoch: int
    exact: bool
    best_l2: float | None
    threshold: float | None
    threshold_source: str
    refit_rows: int
    validation_probs: np.ndarray
    timings: dict[str, float]


def fit(cfg: TrainConfig, net: CrackNet, F: FeatureRows, split: Split, data: JobData, device: str,
        rep: Reporter) -> Fit:
    """The training phase on cached features; then the threshold on validation, and the refit.

    Validation picks the epoch count (or the L2 penalty of the exact head) and the threshold;
    with ``cfg.refit`` the head is then retrained on training + validation images.

    Raises:
        ConfigError: ``--solver lbfgs`` with fine-tuned backbone units.
    """
    timings: dict[str, float] = {}
    (tr_rows, tr_y), (va_rows, va_y) = split.train, split.validation
    t0 = time.perf_counter()
    pooled = cfg.fine_tune_blocks == 0
    init_state = copy.deepcopy({"top": net.top.state_dict(), "head": net.head.state_dict()})
    exact = cfg.solver == "lbfgs" or (cfg.solver == "auto" and pooled)
    if exact and not pooled:
        raise ConfigError("--solver lbfgs needs head-only training on pooled features",
                          "use --fine-tune-blocks 0, or --solver adamw")
    best_l2 = None
    if exact:
        history, best_epoch, best_l2 = _fit_exact(net, F, tr_rows, tr_y, va_rows, va_y, cfg, rep)
    else:
        history, best_epoch = train_on_features(net, F.subset(tr_rows), tr_y, F.subset(va_rows) if len(va_rows) else None,
                                                va_y if len(va_rows) else None, cfg.loop, on_epoch=rep.epoch)
    timings["training_s"] = time.perf_counter() - t0

    pos_idx = data.positive_index
    va_p = probs_of(net, F, va_rows, len(data.classes), cfg.tta, device)
    threshold = None
    if pos_idx is not None:
        if len(va_rows):
            threshold = choose_threshold(va_y == pos_idx, va_p[:, pos_idx], cfg.threshold_mode, cfg.target_recall,
                                         cfg.threshold_tolerance)
        else:
            threshold = 0.5
    refit_rows = 0
    source = "validation"
    if cfg.refit and len(va_rows):
        # Validation picked the epoch count and the threshold; now the validation images also
        # train (at 400 images, 30 % more training data is worth ~3 points of accuracy).
        # Validation metrics are those of the first fit, measured before the refit.
        t1 = time.perf_counter()
        net.top.load_state_dict(init_state["top"])
        net.head.load_state_dict(init_state["head"])
        all_rows = np.concatenate([tr_rows, va_rows])
        all_y = np.concatenate([tr_y, va_y])
        if exact:
            fit_linear_head(net, F.subset(all_rows), all_y, best_l2, cfg.loop.class_weight, device, warm_start=True)
        else:
            refit_loop = dataclasses.replace(cfg.loop, epochs=best_epoch, early_stopping=False)
            train_on_features(net, F.subset(all_rows), all_y, None, None, refit_loop)
        refit_rows = len(all_rows)
        if exact and pos_idx is not None and cfg.threshold_folds > 1:
            # The refit model is not the one validation scored, and 20-30 % of a small set is a
            # noisy place to pick a threshold: pick it on out-of-fold probabilities of every
            # training + validation image instead (same L2, same TTA arithmetic).
            threshold = _oof_threshold(net, F, all_rows, all_y, data.classes, pos_idx, best_l2, cfg, device)
            source = f"{cfg.threshold_folds}-fold out-of-fold, train+validation"
        timings["refit_s"] = time.perf_counter() - t1
    return Fit(history, best_epoch, exact, best_l2, threshold, source, refit_rows, va_p, timings)


def probs_of(net: CrackNet, F: FeatureRows, rows: np.ndarray, n_classes: int, tta: int, device: str) -> np.ndarray:
    """Class probabilities of feature rows, with the exported graph's arithmetic: softmax per
    flip view, averaged over ``tta`` views."""
    if len(rows) == 0:
        return np.zeros((0, n_classes), np.float32)
    ps = [torch.softmax(torch.from_numpy(logits_from_features(net, F.subset(rows), device, view=v)), 1).numpy()
          for v in range(tta)]
    return np.mean(ps, 0)


def score(cfg: TrainConfig, net: CrackNet, F: FeatureRows, split: Split, data: JobData, fitted: Fit,
          device: str) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Metrics of each split at the chosen threshold (validation: of the first fit, before the refit).

    Returns:
        (metrics, ``{split: (class indices, probabilities)}`` of the held-out splits for the plots)
    """
    (tr_rows, tr_y), (va_rows, va_y), (te_rows, te_y) = split.train, split.validation, split.test
    classes, pos_idx, threshold = data.classes, data.positive_index, fitted.threshold
    te_p = probs_of(net, F, te_rows, len(classes), cfg.tta, device)
    tr_p = probs_of(net, F, tr_rows, len(classes), cfg.tta, device)
    metrics: dict[str, Any] = {"train": classification_report(tr_y, tr_p, classes, pos_idx, threshold)}
    if len(va_rows):
        metrics["validation"] = classification_report(va_y, fitted.validation_probs, classes, pos_idx, threshold)
    if len(te_rows):
        metrics["test"] = classification_report(te_y, te_p, classes, pos_idx, threshold)
    metrics["best_epoch"] = fitted.best_epoch
    metrics["solver"] = "lbfgs" if fitted.exact else "adamw"
    if fitted.exact:
        metrics["best_l2"] = fitted.best_l2
    metrics["refit_on_train_and_validation"] = fitted.refit_rows
    metrics["threshold_source"] = fitted.threshold_source
    metrics["epochs_run"] = len(fitted.history)
    return metrics, {"validation": (va_y, fitted.validation_probs), "test": (te_y, te_p)}


def write_job(cfg: TrainConfig, data: JobData, model: JobModel, fs: FeatureSet, split: Split, fitted: Fit,
              metrics: dict[str, Any], probs: dict[str, tuple[np.ndarray, np.ndarray]],
              skipped: list[tuple[str, str]], timings: dict[str, float]) -> Manifest:
    """Write the run folder but ``metrics.json``: checkpoint + manifest, ``config.json``,
    ``splits.json``, ``history.csv``, ``skipped.txt`` and the plots (their time in ``timings``).

    Returns:
        The checkpoint's manifest.
    """
    classes = data.classes
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    tr_rows, tr_y = split.train
    manifest = Manifest(
        kind="checkpoint", labels=classes, positive_label=data.positive, threshold=fitted.threshold,
        input=model.contract, backbone=cfg.backbone, weights_id=model.backbone.weights_id,
        fine_tune_blocks=cfg.fine_tune_blocks, head={"pool": cfg.pool, "dropout": cfg.dropout, "tta": cfg.tta,
                                                 "backbone_units": len(model.backbone.units)},
        data_fingerprint=fingerprint([fs.hashes[r] for r in tr_rows], [classes[i] for i in tr_y]),
        metrics={k: {"accuracy": v["accuracy"], "roc_auc": v.get("roc_auc"), "n": v["n"]}
                 for k, v in metrics.items() if isinstance(v, dict)},
        versions=versions(),
    )
    save_checkpoint(model.net, manifest, run)
    atomic_write_json(run / "config.json", cfg.to_dict())
    atomic_write_json(run / SPLITS_FILE, {
        "schema": 1, "seed": cfg.loop.seed,
        "note": "images of each split; INT8/FP16 calibration draws from train, their accuracy checks use "
                "validation + test",
        **{name: [{"path": str(Path(fs.paths[r]).resolve()), "sha1": fs.hashes[r], "label": classes[int(y)]}
                  for r, y in zip(rr, yy)]
           for name, rr, yy in split.items()}})
    hist_rows = [asdict(h) for h in fitted.history]
    _write_history(run / "history.csv", hist_rows)
    atomic_write_text(run / "skipped.txt", "".join(f"{p}\t{why}\n" for p, why in skipped))
    if cfg.plots:
        t0 = time.perf_counter()
        _write_plots(run, hist_rows, metrics, classes, data.positive_index, fitted.threshold, probs)
        timings["plots_s"] = time.perf_counter() - t0
    return manifest


def _fit_exact(net, F: FeatureRows, tr_rows, tr_y, va_rows, va_y, cfg: TrainConfig, rep: Reporter):
    """Exact head fits over the L2 grid; the one with the lowest validation log-loss wins."""
    import torch.nn.functional as nnf

    from .loop import EpochStats

    history, best = [], (math.inf, 0, cfg.l2_grid[0], None)
    # strongest penalty first: it converges fastest and warm-starts the next, weaker one
    grid = sorted(cfg.l2_grid, reverse=True) if len(va_rows) else cfg.l2_grid[len(cfg.l2_grid) // 2:][:1]
    for i, l2 in enumerate(grid, 1):
        t0 = time.perf_counter()
        tr_loss = fit_linear_head(net, F.subset(tr_rows), tr_y, l2, cfg.loop.class_weight, cfg.loop.device,
                                  warm_start=i > 1)
        tr_lg = torch.from_numpy(logits_from_features(net, F.subset(tr_rows), cfg.loop.device))
        tr_acc = float((tr_lg.argmax(1).numpy() == tr_y).mean())
        if len(va_rows):
            va_lg = torch.from_numpy(logits_from_features(net, F.subset(va_rows), cfg.loop.device))
            v_loss = float(nnf.cross_entropy(va_lg, torch.from_numpy(va_y)))
            v_acc = float((va_lg.argmax(1).numpy() == va_y).mean())
        else:
            v_loss = v_acc = float("nan")
        st = EpochStats(i, tr_loss, tr_acc, v_loss, v_acc, 0.0, time.perf_counter() - t0, l2)
        history.append(st)
        rep.epoch(st)
        if not len(va_rows) or v_loss < best[0]:
            best = (v_loss, i, l2, copy.deepcopy(net.head.state_dict()))
    net.head.load_state_dict(best[3])
    return history, best[1], best[2]


def _oof_threshold(net, F: FeatureRows, rows, y, classes, pos_idx, l2, cfg: TrainConfig, device: str) -> float:
    """Threshold chosen on out-of-fold TTA probabilities of ``rows`` (head restored afterwards)."""
    from ..data import kfold_indices

    keep = copy.deepcopy(net.head.state_dict())
    oof = np.zeros((len(rows), len(classes)), np.float64)
    labels = [classes[i] for i in y]
    folds = kfold_indices(labels, cfg.threshold_folds, cfg.loop.seed)
    for f in folds:
        others = np.setdiff1d(np.arange(len(rows)), f)
        net.head.load_state_dict(keep)
        fit_linear_head(net, F.subset(rows[others]), y[others], l2, cfg.loop.class_weight, device, warm_start=True)
        oof[f] = np.mean([torch.softmax(torch.from_numpy(logits_from_features(net, F.subset(rows[f]), device, view=v)),
                                        1).numpy() for v in range(cfg.tta)], 0)
    net.head.load_state_dict(keep)
    return choose_threshold(y == pos_idx, oof[:, pos_idx], cfg.threshold_mode, cfg.target_recall, cfg.threshold_tolerance)


def _count(y: np.ndarray, classes: list[str]) -> dict[str, int]:
    return {c: int((y == i).sum()) for i, c in enumerate(classes)}


def _write_history(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _write_plots(run: Path, hist, metrics, classes, pos_idx, threshold, sets) -> None:
    from .plots import plot_confusion, plot_history, plot_roc_pr

    (run / "plots").mkdir(exist_ok=True)
    if hist:
        plot_history(hist, run / "plots" / "training_curves.png")
    for name, (y, p) in sets.items():
        if name not in metrics or len(y) == 0:
            continue
        cm = np.array(metrics[name]["confusion"]["matrix"])
        plot_confusion(cm, classes, run / "plots" / f"confusion_{name}.png", name)
        if pos_idx is not None and len(set(y.tolist())) == 2:
            plot_roc_pr(y == pos_idx, p[:, pos_idx], run / "plots" / f"roc_pr_{name}.png", threshold, name)


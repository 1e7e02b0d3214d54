"""Single and batch prediction, and evaluation of any artifact on a labelled folder (torch-free)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .artifacts import run_artifacts
from .compare import Agreement, compare_probs
from .data import CRACKED, UNCRACKED, discover, label_from_name, list_images, merge_sdnet
from .errors import DatasetError, EdgecrackError, ImageDecodeError
from .io import atomic_write_json
from .loop.postprocess import predict_labels
from .metrics import classification_report
from .preprocess import IMAGE_SUFFIXES, decode_image, preprocess
from .runtime import Selection, open_backend


@dataclass
class Prediction:
    """One image's result."""

    image: str
    predicted: str
    probability: float
    probs: dict[str, float]
    actual: str | None = None

    def line(self) -> str:
        """The tutorial's line: ``Image: NAME | Actual: LABEL | Predicted: LABEL (p=0.97)``."""
        actual = f" | Actual: {self.actual}" if self.actual is not None else ""
        return f"Image: {Path(self.image).name}{actual} | Predicted: {self.predicted} (p={self.probability:.2f})"

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "actual": self.actual, "predicted": self.predicted,
                "probability": self.probability, "probs": self.probs}


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given; folders expanded to their images (recursive, sorted)."""
    out: list[Path] = []
    for i in inputs:
        p = Path(i)
        if p.is_dir():
            out += list_images(p)
        else:
            out.append(p)
    return out


def _actual(path: Path, labels: list[str], label_from: str) -> str | None:
    lab = path.parent.name if label_from == "folder" else label_from_name(path.name)
    return lab if lab in labels else None


def predict_files(sel: Selection, paths: list[Path], batch_size: int = 16, label_from: str = "folder",
                  on_result: Callable[[Prediction], None] | None = None,
                  max_pixels: int | None = None) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Predict images in batches; undecodable or missing files are skipped and returned.

    Each image is resized whole to the model input, so one over ``max_pixels`` (None: the
    default limit) is decoded reduced when it is a JPEG, never at full size.

    Returns:
        (predictions in input order, skipped ``(path, reason)``)
    """
    m = sel.backend.manifest
    preds: list[Prediction] = []
    skipped: list[tuple[str, str]] = []
    pos = m.positive_index

    def flush(batch_paths: list[Path], imgs: list[np.ndarray]) -> None:
        if not imgs:
            return
        probs = sel.backend.probs(preprocess(imgs, m.input))
        idx = predict_labels(probs, pos, m.threshold)
        for pth, pr, k in zip(batch_paths, probs, idx):
            p = Prediction(str(pth), m.labels[k], float(pr[k]), {lab: float(v) for lab, v in zip(m.labels, pr)},
                           _actual(pth, m.labels, label_from))
            preds.append(p)
            if on_result:
                on_result(p)

    bp: list[Path] = []
    bi: list[np.ndarray] = []
    for pth in paths:
        if not pth.exists():
            skipped.append((str(pth), "file not found"))
            continue
        if pth.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((str(pth), "not an image file type"))
            continue
        try:
            bi.append(decode_image(pth, max_pixels, (m.input.height, m.input.width)))
            bp.append(pth)
        except ImageDecodeError as e:
            skipped.append((str(pth), e.message.split(": ", 1)[-1]))
            continue
        if len(bi) >= batch_size:
            flush(bp, bi)
            bp, bi = [], []
    flush(bp, bi)
    return preds, skipped


@dataclass
class EvalResult:
    artifact: str
    backend: dict[str, Any]
    metrics: dict[str, Any]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    predictions: list[Prediction] = field(default_factory=list)
    fallbacks: list[tuple[str, str]] = field(default_factory=list)


def evaluate(artifact: str | Path, data: str | Path, backend: str = "auto", label_from: str = "folder",
             batch_size: int = 16, out: str | Path | None = None, threads: int | None = None,
             selection: Selection | None = None) -> EvalResult:
    """Metrics of an artifact on a labelled folder.

    Args:
        artifact: Run folder, ONNX (FP32/INT8) or engine.
        data: Labelled image folder (class sub-folders, or prefixed names with ``label_from="prefix"``).
        backend: Backend preference for :func:`edgecrack.runtime.open_backend`.
        label_from: ``folder`` or ``prefix``.
        batch_size: Images per inference call.
        out: Write ``metrics.json`` here (a file path).
        threads: CPU threads for onnxruntime.
        selection: An already opened backend (overrides ``artifact``/``backend``).

    Raises:
        DatasetError: No labelled images, or labels the model does not know.
    """
    t0 = time.perf_counter()
    sel = selection or open_backend(artifact, backend, threads=threads)
    m = sel.backend.manifest
    ds = discover(data, label_from, min_classes=1)
    if set(m.labels) == {CRACKED, UNCRACKED}:
        ds = merge_sdnet(ds)  # a model trained on several SDNET2018 surfaces reads any SDNET2018 tree
    unknown = sorted(set(ds.classes) - set(m.labels))
    if unknown:
        raise DatasetError(f"{data} has classes {unknown} the model does not know (it knows {m.labels})",
                           "evaluate on folders named after the model's labels")
    preds, skipped = predict_files(sel, [s.path for s in ds.samples], batch_size, label_from)
    if not preds:
        raise DatasetError(f"none of the images in {data} could be decoded ({len(ds.samples)} tried: "
                           + "; ".join(f"{Path(p).name}: {why}" for p, why in skipped[:3]) + ")",
                           "replace or remove the corrupt files")
    truth = {str(s.path): s.label for s in ds.samples}
    y = np.array([m.labels.index(truth[p.image]) for p in preds], dtype=int)
    probs = np.array([[p.probs[lab] for lab in m.labels] for p in preds], dtype=np.float64).reshape(-1, len(m.labels))
    metrics = classification_report(y, probs, m.labels, m.positive_index, m.threshold)
    metrics["skipped"] = len(skipped) + len(ds.skipped)
    res = EvalResult(str(sel.backend.artifact), sel.backend.info(), metrics, list(ds.skipped) + skipped,
                     time.perf_counter() - t0, preds, list(sel.skipped))
    if out is not None:
        atomic_write_json(out, {"artifact": res.artifact, "backend": res.backend, "data": str(data),
                                "metrics": metrics, "skipped": res.skipped})
    return res


@dataclass
class ArtifactComparison:
    """One artifact of a run evaluated next to the FP32 ONNX reference.

    Attributes:
        artifact: The file evaluated.
        kind: Manifest kind (``onnx``, ``onnx-int8``, ``tensorrt``, ``checkpoint``).
        precision: fp32 / fp16 / int8.
        result: Its evaluation (None when it cannot run here).
        error: Why it could not run here.
        accuracy_delta_points: Accuracy minus the FP32 ONNX accuracy, in points.
        agreement: Fraction of images with the same predicted label as FP32.
    """

    artifact: Path
    kind: str
    precision: str
    result: EvalResult | None = None
    error: str | None = None
    accuracy_delta_points: float | None = None
    agreement: float | None = None


def artifacts_of_run(run: str | Path) -> list[Path]:
    """Deployable artifacts of a run folder (or of an artifact's folder): ``model.onnx`` first, then
    other ONNX models, then engines (:func:`edgecrack.artifacts.run_artifacts`)."""
    run = Path(run)
    return [a.path for a in run_artifacts(run.parent if run.is_file() else run, checkpoint=False)]


def evaluate_all(run: str | Path, data: str | Path, label_from: str = "folder", batch_size: int = 16,
                 threads: int | None = None, out: str | Path | None = None) -> list[ArtifactComparison]:
    """Evaluate every artifact of a run on the same images and compare each with FP32.

    Engines run on TensorRT only (never silently on onnxruntime, which would just repeat the
    FP32 row); an artifact that cannot run here is listed with the reason.

    Raises:
        DatasetError: No labelled images.
        ArtifactError: The run holds no artifact.
    """
    rows: list[ArtifactComparison] = []
    ref: ArtifactComparison | None = None
    run = Path(run)
    arts = run_artifacts(run.parent if run.is_file() else run, checkpoint=False)
    ref_manifest = None
    for art in arts:
        if art.manifest is None:
            rows.append(ArtifactComparison(art.path, "?", "?", error=art.error))
            continue
        row = ArtifactComparison(art.path, art.kind, art.precision)
        engine = art.family == "engine"
        try:
            sel = open_backend(art.path, "tensorrt" if engine else "auto", strict=engine, threads=threads)
            row.result = evaluate(art.path, data, label_from=label_from, batch_size=batch_size, selection=sel)
        except EdgecrackError as e:
            row.error = e.message
        rows.append(row)
        if ref is None and art.kind == "onnx" and art.precision == "fp32" and row.result is not None:
            ref, ref_manifest = row, art.manifest
    if ref is not None:
        for row, art in zip(rows, arts):
            if row.result is not None:
                agree = _agreement(row.result, ref.result, art.manifest, ref_manifest)
                row.accuracy_delta_points = agree.accuracy_delta_points
                if row.accuracy_delta_points is None:
                    d = row.result.metrics["accuracy"] - ref.result.metrics["accuracy"]
                    row.accuracy_delta_points = round(d * 100, 3)
                row.agreement = agree.decision_agreement if agree.n else None
    if out is not None:
        atomic_write_json(out, {"run": str(run), "data": str(data), "artifacts": [
            {"artifact": str(r.artifact), "kind": r.kind, "precision": r.precision, "error": r.error,
             "accuracy_delta_points": r.accuracy_delta_points, "agreement_with_fp32": r.agreement,
             "backend": r.result.backend if r.result else None, "metrics": r.result.metrics if r.result else None}
            for r in rows]})
    return rows


def _agreement(res: EvalResult, ref: EvalResult, m, m_ref) -> Agreement:
    """Compare two evaluations on the images both scored, each model at its own threshold."""
    by_image = {p.image: p for p in ref.predictions}
    common = [p for p in res.predictions if p.image in by_image]
    labels = m.labels

    def probs(ps: list[Prediction]) -> np.ndarray:
        return np.array([[p.probs[lab] for lab in labels] for p in ps], dtype=np.float64).reshape(-1, len(labels))

    # Labels from the folder names when every image has one (a merged SDNET2018 tree has none).
    y = (np.array([labels.index(p.actual) for p in common], dtype=int)
         if common and all(p.actual in labels for p in common) else None)
    return compare_probs(probs(common), probs([by_image[p.image] for p in common]), y, m.positive_index,
                         m.threshold, m_ref.threshold)

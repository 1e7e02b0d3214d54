"""What one measurement does: compute, end to end, side by side, and accuracy on labelled images.

Every loop runs on real images: a prepared ``uint8 [N,H,W,3]`` tensor made with THE
preprocessing function (compute), or the image files themselves (end to end).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence, TypeVar

import numpy as np

from ..data import discover, list_images
from ..errors import DatasetError
from ..manifest import Manifest
from ..loop.postprocess import predict_labels
from ..metrics import classification_report
from ..preprocess import decode_image, preprocess
from .schema import AccuracyResult
from .timing import LatencyStats, LoopBudget, interleaved, timed_loop

T = TypeVar("T")


def evenly(items: Sequence[T], k: int | None) -> list[T]:
    """At most ``k`` items, evenly spaced (sorted class folders: every class is in); all when ``k`` is None."""
    if k is None or len(items) <= k:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, k)]


def e2e_paths(data: Path, k: int) -> list[Path]:
    """The image files the end-to-end loop cycles through.

    Raises:
        DatasetError: No images in ``data``.
    """
    imgs = list_images(data)
    if not imgs:
        raise DatasetError(f"no images in {data} for the end-to-end loop", "pass a folder of images with --data")
    return evenly(imgs, k)


def tensor_from_images(paths: list[Path], batch: int, m: Manifest) -> np.ndarray:
    return preprocess([decode_image(paths[i % len(paths)]) for i in range(batch)], m.input)


def measure_compute(backend, paths: list[Path], batch: int, budget: LoopBudget) -> LatencyStats:
    """Latency of ``backend.infer`` on a prepared tensor of ``batch`` real images."""
    m = backend.manifest
    feeds = {m.input_name: tensor_from_images(paths, batch, m)}
    samples, wall, _ = timed_loop(lambda k: backend.infer(feeds), budget)
    return LatencyStats.from_samples(samples, batch, wall)


def measure_e2e(backend, paths: list[Path], batch: int, budget: LoopBudget) -> tuple[LatencyStats, dict[str, float]]:
    """Latency of decode + preprocess + infer + postprocess on real image files.

    Each call takes the next ``batch`` files (cycling), decodes them from disk (page cache
    after the first pass), preprocesses them with THE preprocessing function, runs the
    backend and turns probabilities into labels at the manifest threshold.

    Returns:
        (latency statistics, mean milliseconds per call of each stage)
    """
    m = backend.manifest
    pos, thr, labels = m.positive_index, m.threshold, m.labels

    def once(k: int) -> tuple[float, float, float, float]:
        chosen = [paths[(k * batch + i) % len(paths)] for i in range(batch)]
        t0 = time.perf_counter()
        imgs = [decode_image(p) for p in chosen]
        t1 = time.perf_counter()
        x = preprocess(imgs, m.input)
        t2 = time.perf_counter()
        probs = backend.probs(x)
        t3 = time.perf_counter()
        idx = predict_labels(probs, pos, thr)
        _ = [(labels[i], float(probs[j, i])) for j, i in enumerate(idx)]
        t4 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3

    samples, wall, parts = timed_loop(once, budget)
    stages = np.asarray(parts, dtype=np.float64).mean(axis=0) * 1e3
    return (LatencyStats.from_samples(samples, batch, wall),
            {k: round(float(v), 4) for k, v in zip(("decode", "preprocess", "infer", "postprocess"), stages)})


def measure_speedup(slow, fast, paths: list[Path], budget: LoopBudget) -> dict[str, Any]:
    """Compute latency of two backends at batch 1 on the same tensor, interleaved.

    Used for eager PyTorch against the fastest CPU artifact: measured in alternating blocks
    rather than minutes apart, the ratio does not depend on what else the machine did.

    Returns:
        ``slow`` and ``fast`` statistics (as dicts), their names, and ``ratio_p50`` (slow / fast).
    """
    xs = {b: {b.manifest.input_name: tensor_from_images(paths, 1, b.manifest)} for b in (slow, fast)}
    stats, block = interleaved({"slow": lambda: slow.infer(xs[slow]), "fast": lambda: fast.infer(xs[fast])}, budget)
    return {"slow": asdict(stats["slow"]), "fast": asdict(stats["fast"]), "block": block,
            "ratio_p50": stats["slow"].p50_ms / stats["fast"].p50_ms,
            "method": f"interleaved blocks of {block} calls, Backend.infer on the same preprocessed tensor, batch 1"}


def measure_overhead(backend, paths: list[Path], threads: int, budget: LoopBudget) -> dict[str, Any]:
    """edgecrack's ORT CPU path against a bare onnxruntime session, interleaved, at batch 1.

    The bare session loads the same ONNX with the same intra-op thread count and otherwise
    onnxruntime's defaults, and runs the same preprocessed tensor. The three loops (bare,
    edgecrack compute, edgecrack end to end) alternate in short blocks so that load from
    other processes hits all three alike.

    Returns:
        ``bare``, ``compute``, ``e2e`` latency statistics (as dicts) and the ratios.
    """
    import onnxruntime as ort

    m = backend.manifest
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(backend.artifact), so, providers=["CPUExecutionProvider"])
    x = tensor_from_images(paths, 1, m)
    feeds = {m.input_name: x}
    ours = {m.input_name: x}
    pos, thr = m.positive_index, m.threshold

    def bare() -> None:
        sess.run(None, feeds)

    def compute() -> None:
        backend.infer(ours)

    k_e2e = [0]

    def e2e() -> None:
        k = k_e2e[0] = k_e2e[0] + 1
        img = decode_image(paths[k % len(paths)])
        probs = backend.probs(preprocess(img, m.input))
        predict_labels(probs, pos, thr)

    stats, block = interleaved({"bare": bare, "compute": compute, "e2e": e2e}, budget, block=10)
    del sess
    return {
        "artifact": backend.artifact.name, "threads": threads, "batch": 1,
        "method": f"interleaved blocks of {block} calls: bare session.run, edgecrack Backend.infer, edgecrack end to end",
        "bare": asdict(stats["bare"]), "compute": asdict(stats["compute"]), "e2e": asdict(stats["e2e"]),
        "ratio_e2e_p50": stats["e2e"].p50_ms / stats["bare"].p50_ms,
        "ratio_compute_p50": stats["compute"].p50_ms / stats["bare"].p50_ms,
        "bare_library": f"onnxruntime {ort.__version__}",
    }


def accuracy_probs(backend, data: Path, limit: int | None = None, label_from: str = "folder",
                   ) -> tuple[AccuracyResult, dict[str, np.ndarray]]:
    """Accuracy of a loaded backend on a labelled folder, and its probabilities per image path.

    Args:
        backend: A loaded backend.
        data: Labelled folder (class sub-folders named after the model's labels).
        limit: Score this many images, evenly spaced over the sorted folder (None: all).
        label_from: ``folder`` or ``prefix``.

    Raises:
        DatasetError: Classes the model does not know.
    """
    from ..evaluate import predict_files
    from ..runtime import Selection

    m = backend.manifest
    ds = discover(data, label_from, min_classes=1)
    unknown = sorted(set(ds.classes) - set(m.labels))
    if unknown:
        raise DatasetError(f"{data} has classes {unknown} the model does not know (it knows {m.labels})",
                           "benchmark accuracy on folders named after the model's labels (--data)")
    t0 = time.perf_counter()
    preds, skipped = predict_files(Selection(backend), [s.path for s in evenly(ds.samples, limit)], batch_size=16,
                                   label_from=label_from)
    truth = {str(s.path): s.label for s in ds.samples}
    y = np.array([m.labels.index(truth[p.image]) for p in preds], dtype=int)
    probs = np.array([[p.probs[lab] for lab in m.labels] for p in preds], dtype=np.float64).reshape(-1, len(m.labels))
    rep = classification_report(y, probs, m.labels, m.positive_index, m.threshold)
    f1 = rep["per_class"][m.positive_label]["f1"] if m.positive_label in rep["per_class"] else None
    res = AccuracyResult(n=rep["n"], accuracy=rep["accuracy"], roc_auc=rep.get("roc_auc"), f1_positive=f1,
                         threshold=m.threshold, skipped=len(skipped) + len(ds.skipped), seconds=time.perf_counter() - t0)
    return res, {p.image: probs[i] for i, p in enumerate(preds)}

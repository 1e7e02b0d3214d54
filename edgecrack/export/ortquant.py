"""What both INT8 paths share around onnxruntime: sessions, the nodes kept float, calibration feeds.

:mod:`edgecrack.export.precision` (TensorRT Q/DQ) and :mod:`edgecrack.export.quantize`
(onnxruntime CPU INT8) both quantize with onnxruntime's ``quantize_static`` and measure the
result with onnxruntime; this module holds the pieces they share, so neither imports the other:

- :func:`session`: a CPU session, optionally in reference arithmetic (Q/DQ executed as written);
- :func:`float_nodes`: the in-graph preprocessing and classifier head every INT8 variant keeps float;
- :class:`CalibrationReader`: the calibration images as onnxruntime's calibration data reader;
- :func:`search_scorer`: scores a candidate model against FP32 for the mixed-precision search;
- :class:`quiet_root_logger`: mutes the quantizer's per-tensor warnings.

Probabilities come from :func:`edgecrack.compare.probs_on`, agreement from :mod:`edgecrack.compare`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..calibration import CalibrationSource
from ..compare import probs_on
from ..manifest import Manifest
from . import mixed

# Ops that start the network proper; everything between the graph input and these is the
# in-graph preprocessing and stays float.
_COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
#: Images per onnxruntime call when measuring a model.
BATCH = 32


def session(model: bytes | Path, threads: int | None = None, reference: bool = False):
    """onnxruntime CPU session; ``reference`` runs Q/DQ as written (no fused integer kernels).

    Its worker threads do not spin-wait between calls: an export measures several sessions in turn,
    and one session's spinning threads take the cores from the next one's timed calls.
    """
    import onnxruntime as ort

    from ..runtime.onnxruntime_backend import no_spin_wait

    so = ort.SessionOptions()
    no_spin_wait(so)
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if reference
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if threads:
        so.intra_op_num_threads = threads
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def head_nodes(model) -> list[str]:
    """Names of the nodes between the last convolution and the graph outputs (kept float).

    Pooling, the linear classifier, softmax and the test-time-augmentation average are a few
    thousand multiply-adds; quantizing them buys no speed and moves the decision boundary
    (the classifier stays exactly as trained).
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    front = [o.name for o in model.graph.output]
    seen: list[str] = []
    while front:
        n = producer.get(front.pop())
        if n is None or n.name in seen or n.op_type == "Conv":
            continue
        seen.append(n.name)
        front.extend(n.input)
    return seen


def preprocessing_nodes(model) -> list[str]:
    """Names of the nodes between the graph input and the first compute op (kept float)."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name for i in model.graph.initializer}
    front = [i.name for i in model.graph.input if i.name not in inits]
    seen: list[str] = []
    while front:
        t = front.pop()
        for n in consumers.get(t, []):
            if n.op_type in _COMPUTE_OPS or n.name in seen:
                continue
            seen.append(n.name)
            front.extend(n.output)
    return seen


def float_nodes(model) -> list[str]:
    """Nodes every INT8 variant keeps in float: the in-graph preprocessing and the classifier head."""
    return preprocessing_nodes(model) + head_nodes(model)


class CalibrationReader:
    """onnxruntime ``CalibrationDataReader`` over the calibration images, ``batch`` at a time,
    preprocessed by the inference function (:meth:`edgecrack.calibration.CalibrationSource.batches`)."""

    def __init__(self, calib: CalibrationSource, m: Manifest, batch: int = 8):
        self._it = calib.batches(m.input, batch)
        self._name = m.input_name

    def get_next(self):
        b = next(self._it, None)
        return None if b is None else {self._name: b}


def search_scorer(x: np.ndarray, fp32_probs: np.ndarray, m: Manifest, threads: int | None = None,
                  reference: bool = False) -> mixed.Scorer:
    """``model bytes -> Score`` against FP32's probabilities on the search images ``x``
    (:func:`edgecrack.export.mixed.score`); ``reference`` as in :func:`session`."""
    def score(blob: bytes) -> mixed.Score:
        return mixed.score(probs_on(session(blob, threads, reference), x, BATCH, m.input_name), fp32_probs,
                           m.positive_index)

    return score


class quiet_root_logger:
    """onnxruntime's quantizer logs per-tensor warnings on the root logger (e.g. int32 bias range
    of tiny depthwise scales); the accuracy measurement is what decides, so they are muted."""

    def __enter__(self):
        import logging

        self._lvl = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc):
        import logging

        logging.getLogger().setLevel(self._lvl)

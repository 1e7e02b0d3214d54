"""How far two models' answers are apart on the same inputs: one definition for every check.

Export parity (PyTorch vs onnxruntime), an engine against its ONNX, a reduced-precision model
against FP32, a benchmark row against the reference, ``eval --all``: all ask the same
question and answer it with :class:`Agreement`:

- ``max_abs_diff`` / ``mean_abs_diff``: the largest / mean difference in any class probability;
- ``top1_agreement``: share of inputs with the same argmax;
- ``decision_agreement``: share with the same decision (thresholded positive class for binary
  models, argmax otherwise; :func:`edgecrack.loop.postprocess.predict_labels`);
- with labels: the accuracy of each side and the difference.

:func:`compare_probs` compares two probability arrays; :func:`compare_runners` runs N models
(edgecrack backends, onnxruntime sessions, or any ``uint8 batch -> probabilities`` function)
on the same feeds and compares each with a reference. :class:`Fidelity` is an
:class:`Agreement` with FP32 as the reference, in the fields export manifests record
(``fidelity_vs_fp32``). Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .loop.postprocess import predict_labels

ProbsFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Agreement:
    """One model's answers against a reference's on the same inputs.

    Attributes:
        n: Inputs compared.
        max_abs_diff: Largest absolute difference in any class probability.
        mean_abs_diff: Mean absolute difference over all probabilities.
        top1_agreement: Share of inputs with the same argmax class.
        decision_agreement: Share of inputs with the same decision (threshold or argmax).
        accuracy: Accuracy of the model's decisions (with labels, else None).
        reference_accuracy: Accuracy of the reference's decisions (with labels, else None).
    """

    n: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    decision_agreement: float
    accuracy: float | None = None
    reference_accuracy: float | None = None

    @property
    def accuracy_delta(self) -> float | None:
        """``accuracy - reference_accuracy`` (a fraction; None without labels)."""
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return self.accuracy - self.reference_accuracy

    @property
    def accuracy_delta_points(self) -> float | None:
        """The accuracy difference in percentage points, rounded to 3 decimals."""
        d = self.accuracy_delta
        return None if d is None else round(d * 100, 3)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy_delta_points": self.accuracy_delta_points}


def compare_probs(probs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None,
                  positive_index: int | None = None, threshold: float | None = None,
                  reference_threshold: float | None = None) -> Agreement:
    """Compare two ``[N, classes]`` probability arrays row by row.

    Args:
        probs: The model's probabilities.
        reference: The reference's probabilities for the same inputs, same class order.
        labels: True class indices (optional): adds the accuracy of both sides.
        positive_index: Positive class of a binary model (None: decisions are the argmax).
        threshold: The model's decision threshold on the positive class.
        reference_threshold: The reference's threshold (default: ``threshold``); each side is
            judged at its own threshold, as a user of each would be.

    Raises:
        ValueError: The arrays (or labels) do not line up.
    """
    p = np.asarray(probs, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if p.shape != r.shape or p.ndim != 2:
        raise ValueError(f"probabilities must be two arrays of the same [N, classes] shape, got {p.shape} and {r.shape}")
    n = len(p)
    ref_thr = threshold if reference_threshold is None else reference_threshold
    if n == 0:
        return Agreement(0, 0.0, 0.0, 1.0, 1.0)
    d = predict_labels(p, positive_index, threshold)
    d0 = predict_labels(r, positive_index, ref_thr)
    diff = np.abs(p - r)
    acc = acc0 = None
    if labels is not None:
        y = np.asarray(labels, dtype=int)
        if y.shape != (n,):
            raise ValueError(f"labels must be [N] = [{n}], got {list(y.shape)}")
        acc, acc0 = float((d == y).mean()), float((d0 == y).mean())
    return Agreement(n, float(diff.max()), float(diff.mean()), float((p.argmax(1) == r.argmax(1)).mean()),
                     float((d == d0).mean()), acc, acc0)


@dataclass
class Fidelity:
    """A reduced-precision model against FP32 on labelled images: an :class:`Agreement` in the
    fields export manifests record as ``fidelity_vs_fp32`` (the names manifests already carry).

    Attributes:
        accuracy: Accuracy of the model's decisions.
        fp32_accuracy: Accuracy of FP32's decisions on the same images.
        accuracy_delta_points: ``accuracy - fp32_accuracy`` in percentage points (3 decimals).
        top1_agreement, decision_agreement, max_abs_diff, mean_abs_diff, n: As in :class:`Agreement`.
    """

    accuracy: float
    fp32_accuracy: float
    accuracy_delta_points: float
    top1_agreement: float
    decision_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    n: int

    @classmethod
    def of(cls, a: Agreement) -> "Fidelity":
        """The fidelity record of an agreement with FP32 measured with labels.

        Raises:
            ValueError: The agreement has no accuracies (compared without labels, or on no input).
        """
        if a.accuracy is None or a.reference_accuracy is None:
            raise ValueError(f"a fidelity record needs accuracies: compare on labelled images (got {a.n} without labels)")
        return cls(a.accuracy, a.reference_accuracy, a.accuracy_delta_points, a.top1_agreement, a.decision_agreement,
                   a.max_abs_diff, a.mean_abs_diff, a.n)


def fidelity(probs: np.ndarray, fp32_probs: np.ndarray, labels: np.ndarray, manifest: Any) -> Fidelity:
    """:func:`compare_probs` of a model with FP32 at the manifest's positive class and threshold."""
    return Fidelity.of(compare_probs(probs, fp32_probs, labels, manifest.positive_index, manifest.threshold))


def probs_function(runner: Any, input_name: str | None = None) -> ProbsFn:
    """``uint8 batch -> probabilities`` for an edgecrack backend, an onnxruntime session or a function.

    Args:
        runner: A loaded :class:`~edgecrack.runtime.base.Backend` (its ``probs``), an
            ``onnxruntime.InferenceSession`` (first output), or a callable.
        input_name: The session's input name (default: its first input).

    Raises:
        TypeError: Not one of those.
    """
    if hasattr(runner, "probs") and callable(runner.probs):
        return runner.probs
    if hasattr(runner, "run") and hasattr(runner, "get_inputs"):
        name = input_name or runner.get_inputs()[0].name
        return lambda x: runner.run(None, {name: x})[0]
    if callable(runner):
        return runner
    raise TypeError(f"cannot run {type(runner).__name__}: pass a Backend, an onnxruntime session or a function")


def probs_on(runner: Any, x: np.ndarray, batch: int | None = None, input_name: str | None = None) -> np.ndarray:
    """Probabilities of one runner on ``x``, ``batch`` inputs per call (None: all at once)."""
    fn = probs_function(runner, input_name)
    if batch is None or len(x) <= batch:
        return np.asarray(fn(x))
    return np.concatenate([np.asarray(fn(x[i:i + batch])) for i in range(0, len(x), batch)])


def compare_runners(runners: Sequence[Any], x: np.ndarray, labels: np.ndarray | None = None,
                    positive_index: int | None = None, threshold: float | None = None, reference: int = 0,
                    batch: int | None = None, thresholds: Sequence[float | None] | None = None,
                    ) -> tuple[list[np.ndarray], list[Agreement]]:
    """Run N models on the same feeds and compare each with the reference.

    Args:
        runners: Backends, onnxruntime sessions or ``uint8 batch -> probabilities`` functions.
        x: The feeds: a preprocessed ``uint8 [N, H, W, 3]`` batch.
        labels: True class indices (optional, adds accuracies).
        positive_index: Positive class of a binary model.
        threshold: Decision threshold shared by all (see ``thresholds``).
        reference: Index of the reference runner.
        batch: Inputs per call (None: all at once).
        thresholds: One threshold per runner (overrides ``threshold``).

    Returns:
        (probabilities per runner, :class:`Agreement` of each runner with the reference;
        the reference's own row is the identity)
    """
    thr = list(thresholds) if thresholds is not None else [threshold] * len(runners)
    probs = [probs_on(r, x, batch) for r in runners]
    ref = probs[reference]
    rows = [compare_probs(p, ref, labels, positive_index, thr[i], thr[reference]) for i, p in enumerate(probs)]
    return probs, rows

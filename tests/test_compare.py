"""edgecrack.compare: one definition of how far two models' answers are apart."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from edgecrack.compare import Agreement, Fidelity, compare_probs, compare_runners, fidelity, probs_function

onnx = pytest.importorskip("onnx")
from tiny_onnx import tiny_batch, tiny_manifest, write_tiny_onnx  # noqa: E402

# Four images, CD (index 0) positive. Model vs reference:
#   p(CD) model  .90 .60 .40 .20     reference .80 .45 .40 .30
#   argmax       CD  CD  UD  UD                CD  UD  UD  UD   -> top-1 agreement 3/4
#   at 0.5       CD  CD  UD  UD                CD  UD  UD  UD   -> decisions agree 3/4
#   at 0.35 (ref threshold)                    CD  CD  CD  UD   -> model@0.5 vs ref@0.35: 3/4
#   |dp|         .10 .15 0   .10 (each twice)  -> max .15, mean .0875
P = np.array([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8]])
R = np.array([[0.8, 0.2], [0.45, 0.55], [0.4, 0.6], [0.3, 0.7]])
Y = np.array([0, 0, 1, 1])


def test_compare_probs_by_hand():
    a = compare_probs(P, R, Y, positive_index=0, threshold=0.5)
    assert (a.n, a.top1_agreement, a.decision_agreement) == (4, 0.75, 0.75)
    assert a.max_abs_diff == pytest.approx(0.15) and a.mean_abs_diff == pytest.approx(0.0875)
    assert (a.accuracy, a.reference_accuracy) == (1.0, 0.75)
    assert a.accuracy_delta == pytest.approx(0.25) and a.accuracy_delta_points == 25.0
    d = a.to_dict()
    assert d["accuracy_delta_points"] == 25.0 and d["max_abs_diff"] == pytest.approx(0.15)


def test_each_side_is_judged_at_its_own_threshold():
    a = compare_probs(P, R, Y, positive_index=0, threshold=0.5, reference_threshold=0.35)
    assert a.decision_agreement == 0.75 and a.reference_accuracy == 0.75 and a.top1_agreement == 0.75
    # Without labels there are no accuracies; without a positive class decisions are the argmax.
    b = compare_probs(P, R)
    assert b.accuracy is None and b.accuracy_delta_points is None and b.decision_agreement == 0.75


def test_fidelity_is_the_agreement_under_the_manifest_names():
    """Export manifests record ``fidelity_vs_fp32`` with these keys; the numbers are compare_probs's,
    at the manifest's positive class and threshold."""
    f = fidelity(P, R, Y, tiny_manifest(threshold=0.35))
    a = compare_probs(P, R, Y, positive_index=0, threshold=0.35)
    assert (f.accuracy, f.fp32_accuracy, f.top1_agreement, f.decision_agreement, f.n) == (
        a.accuracy, a.reference_accuracy, a.top1_agreement, a.decision_agreement, 4)
    assert (f.accuracy, f.fp32_accuracy, f.accuracy_delta_points) == (0.75, 0.75, 0.0)
    assert f.max_abs_diff == a.max_abs_diff == pytest.approx(0.15) and f.mean_abs_diff == a.mean_abs_diff
    assert list(asdict(f)) == ["accuracy", "fp32_accuracy", "accuracy_delta_points", "top1_agreement",
                               "decision_agreement", "max_abs_diff", "mean_abs_diff", "n"]
    with pytest.raises(ValueError, match="labelled"):
        Fidelity.of(compare_probs(P, R))


def test_compare_probs_refuses_misaligned_inputs():
    with pytest.raises(ValueError, match="same"):
        compare_probs(P, R[:3])
    with pytest.raises(ValueError, match="labels"):
        compare_probs(P, R, Y[:3])
    assert compare_probs(np.zeros((0, 2)), np.zeros((0, 2))) == Agreement(0, 0.0, 0.0, 1.0, 1.0)


def test_compare_runners_on_the_same_feeds(tmp_path):
    """A real onnxruntime session, an edgecrack backend on the same file, and a changed model."""
    import onnxruntime as ort

    from edgecrack.runtime import OnnxRuntimeBackend

    path, m = write_tiny_onnx(tmp_path / "model.onnx")
    other, _ = write_tiny_onnx(tmp_path / "other.onnx", weights=(0.03, -0.01, 0.0, -0.02, 0.01, 0.0))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = tiny_batch(24)
    with OnnxRuntimeBackend(path, m) as same, OnnxRuntimeBackend(other, m) as changed:
        probs, rows = compare_runners([sess, same, changed, lambda b: same.probs(b)[:, ::-1]], x, batch=5,
                                      positive_index=0, threshold=0.5)
    assert [p.shape for p in probs] == [(24, 2)] * 4
    assert rows[0] == rows[1] == Agreement(24, 0.0, 0.0, 1.0, 1.0)
    assert 0 < rows[2].max_abs_diff < 0.5
    # Swapped classes: every top-1 differs, and the largest difference is |p - (1 - p)|.
    assert rows[3].top1_agreement == 0.0 and rows[3].max_abs_diff == pytest.approx(np.abs(2 * probs[0][:, 0] - 1).max())
    with pytest.raises(TypeError, match="cannot run"):
        probs_function(42)

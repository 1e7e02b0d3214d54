"""Build the tiny ONNX crack classifier the torch-free tests run, and its golden tensors.

No torch: the graph is written with the ``onnx`` helper API. It honours the artifact contract
of :mod:`edgecrack.export.onnx`: ``images: uint8 [N, 64, 64, 3] BGR`` -> Cast -> BGR to RGB ->
``(x - mean) / std`` -> NCHW -> 8 fixed 5x5 filters (grey level, Laplacian and Sobel, each
sign) -> ReLU -> global average and max pooling -> standardised features -> a linear head
fitted here by logistic regression (numpy) on real bundled deck images -> ``probs: float32
[N, 2]`` (softmax), with the manifest in ``metadata_props`` and as a sidecar, exactly as
``edgecrack export`` writes them (:func:`edgecrack.export.onnx.attach_manifest`).

It is a weak classifier on purpose (a few KB, no training framework): tests that need a
trained model's accuracy keep the session-trained one (tests/conftest.py ``trained_run``).

Writes, next to this script, ``tiny/model.onnx``, ``tiny/model.onnx.json`` and
``tiny/golden.npz`` (the preprocessed uint8 input of a few real images, their names, and the
probabilities onnxruntime gives). Run it again only to change the model; the tests then check
the new files against onnxruntime:

    python tests/assets/make_tiny_model.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgecrack.data import DEFAULT_DATASET  # noqa: E402
from edgecrack.export.onnx import attach_manifest  # noqa: E402
from edgecrack.io import atomic_write_bytes  # noqa: E402
from edgecrack.manifest import Manifest, write_manifest  # noqa: E402
from edgecrack.metrics import choose_threshold, classification_report  # noqa: E402
from edgecrack.preprocess import InputContract, preprocess_files  # noqa: E402

OUT = HERE / "tiny"
SIZE = 64
LABELS = ["CD", "UD"]
OPSET = 17
#: Fitted on these images of each class (sorted by name); the conftest's small_deck uses the
#: first 20 and holdout_deck the last 20, so neither is in the fit.
FIT = slice(20, 140)
#: Golden tensors: these real images, preprocessed, and the model's probabilities on them.
GOLDEN = ["CD/7001-115.jpg", "CD/7001-139.jpg", "UD/7001-1.jpg", "UD/7001-100.jpg"]


def _filters() -> np.ndarray:
    """8 fixed 5x5 filters on the grey level (the mean of the three normalised channels)."""
    lap = np.zeros((5, 5), np.float32)
    lap[1:4, 1:4] = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    sx = np.zeros((5, 5), np.float32)
    sx[1:4, 1:4] = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    box = np.full((5, 5), 1 / 25, np.float32)
    grey = [box, -box, lap, -lap, sx, -sx, sx.T, -sx.T]
    return np.stack([np.repeat(k[None] / 3.0, 3, axis=0) for k in grey]).astype(np.float32)  # [8, 3, 5, 5]


def build_model(contract: InputContract, head: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None) -> onnx.ModelProto:
    """The graph; ``head`` = (feature mean, feature std, weights [16, 2], bias [2]), None: features only."""
    mean = np.asarray(contract.mean, np.float32).reshape(1, 1, 1, 3)
    std = np.asarray(contract.std, np.float32).reshape(1, 1, 1, 3)
    inits = [numpy_helper.from_array(np.array([2, 1, 0], np.int64), "bgr_to_rgb"),
             numpy_helper.from_array(mean, "mean"), numpy_helper.from_array(std, "std"),
             numpy_helper.from_array(_filters(), "filters")]
    # Cast first: TensorRT takes a uint8 input only as the direct input of a Cast.
    nodes = [helper.make_node("Cast", ["images"], ["x_f"], to=TensorProto.FLOAT),
             helper.make_node("Gather", ["x_f", "bgr_to_rgb"], ["x_rgb"], axis=3),
             helper.make_node("Sub", ["x_rgb", "mean"], ["x_c"]),
             helper.make_node("Div", ["x_c", "std"], ["x_n"]),
             helper.make_node("Transpose", ["x_n"], ["x_nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["x_nchw", "filters"], ["resp"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
             helper.make_node("Relu", ["resp"], ["act"]),
             helper.make_node("GlobalAveragePool", ["act"], ["avg"]),
             helper.make_node("GlobalMaxPool", ["act"], ["max"]),
             helper.make_node("Concat", ["avg", "max"], ["pooled"], axis=1),
             helper.make_node("Flatten", ["pooled"], ["features"], axis=1)]
    out_name, out_dims = "features", 16
    if head is not None:
        mu, sd, w, b = head
        inits += [numpy_helper.from_array(mu.astype(np.float32), "feat_mean"),
                  numpy_helper.from_array(sd.astype(np.float32), "feat_std"),
                  numpy_helper.from_array(w.astype(np.float32), "head_w"),
                  numpy_helper.from_array(b.astype(np.float32), "head_b")]
        nodes += [helper.make_node("Sub", ["features", "feat_mean"], ["f_c"]),
                  helper.make_node("Div", ["f_c", "feat_std"], ["f_n"]),
                  helper.make_node("Gemm", ["f_n", "head_w", "head_b"], ["logits"]),
                  helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
        out_name, out_dims = "probs", len(LABELS)
    graph = helper.make_graph(
        nodes, "edgecrack_tiny_test_classifier",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", contract.height, contract.width, 3])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", out_dims])], inits)
    # IR 8 with opset 17: what onnxruntime 1.16 (the oldest this project supports) and TensorRT 8.5 read.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x})[0]


def _fit_logistic(f: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 3000, lr: float = 0.5) -> tuple[np.ndarray, float]:
    """Binary logistic regression by gradient descent (y = 1 for the positive class)."""
    w, b = np.zeros(f.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(f @ w + b)))
        w -= lr * (f.T @ (p - y) / len(y) + l2 * w)
        b -= lr * float(np.mean(p - y))
    return w, b


def main() -> None:
    contract = InputContract(height=SIZE, width=SIZE)
    files = {c: sorted((DEFAULT_DATASET / c).glob("*.jpg")) for c in LABELS}
    fit = files["CD"][FIT] + files["UD"][FIT]
    y = np.array([1] * len(files["CD"][FIT]) + [0] * len(files["UD"][FIT]), np.float64)
    feats = _run(build_model(contract, None), preprocess_files(fit, contract)).astype(np.float64)
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    w, b = _fit_logistic((feats - mu) / sd, y)
    # Softmax over [CD, UD] logits = [z / 2, -z / 2] gives P(CD) = sigmoid(z).
    head_w = np.stack([w / 2, -w / 2], axis=1)
    head_b = np.array([b / 2, -b / 2])
    model = build_model(contract, (mu, sd, head_w, head_b))
    p_fit = _run(model, preprocess_files(fit, contract))
    threshold = round(choose_threshold(y == 1, p_fit[:, 0]), 4)
    rest = [p for c in LABELS for p in files[c] if p not in fit]
    y_rest = np.array([0 if p.parent.name == "CD" else 1 for p in rest])
    rep = classification_report(y_rest, _run(model, preprocess_files(rest, contract)), LABELS, 0, threshold)
    manifest = Manifest(kind="onnx", labels=LABELS, positive_label="CD", threshold=threshold, input=contract,
                        backbone="tiny-test-filters", head={"features": "8 fixed 5x5 filters, avg+max pooled"},
                        metrics={"heldout_accuracy": round(rep["accuracy"], 4), "heldout_n": rep["n"]},
                        versions={"onnx": onnx.__version__}, extra={"opset": OPSET, "purpose": "tests only"})
    blob = attach_manifest(model.SerializeToString(), manifest)
    OUT.mkdir(exist_ok=True)
    atomic_write_bytes(OUT / "model.onnx", blob)
    write_manifest(OUT / "model.onnx", manifest)
    names = np.array(GOLDEN)
    x = preprocess_files([DEFAULT_DATASET / n for n in GOLDEN], contract)
    probs = _run(onnx.load_from_string(blob), x)
    np.savez_compressed(OUT / "golden.npz", names=names, images=x, probs=probs)
    print(f"model.onnx {len(blob)} bytes, threshold {threshold}, accuracy on the {rep['n']} deck images not fitted "
          f"{rep['accuracy']:.3f}; golden probs {np.round(probs[:, 0], 4).tolist()}")


if __name__ == "__main__":
    main()

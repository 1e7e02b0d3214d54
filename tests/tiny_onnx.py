"""A real, tiny edgecrack-shaped ONNX model made with ``onnx.helper`` (no torch): uint8 [N,8,8,3] -> probs [N,2].

The graph casts, averages each channel over the image and maps the three means to two softmax
probabilities; the manifest is attached the way ``edgecrack export`` attaches it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecrack.manifest import Manifest, write_manifest
from edgecrack.preprocess import InputContract

SIZE = 8


def tiny_manifest(kind: str = "onnx", threshold: float = 0.5, **extra) -> Manifest:
    return Manifest(kind=kind, labels=["CD", "UD"], positive_label="CD", threshold=threshold,
                    input=InputContract(height=SIZE, width=SIZE), backbone="tiny", extra=dict(extra))


def write_tiny_onnx(path: Path, weights: tuple[float, ...] = (0.02, -0.01, 0.0, -0.02, 0.01, 0.0),
                    manifest: Manifest | None = None) -> tuple[Path, Manifest]:
    """Write the model and its sidecar; ``weights`` are the 3x2 matrix from channel means to logits."""
    from onnx import TensorProto, helper, numpy_helper

    from edgecrack.export.onnx import attach_manifest

    w = numpy_helper.from_array(np.asarray(weights, np.float32).reshape(3, 2), "w")
    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    m = manifest or tiny_manifest()
    path.write_bytes(attach_manifest(model.SerializeToString(), m))
    write_manifest(path, m)
    return path, m


def tiny_batch(n: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)

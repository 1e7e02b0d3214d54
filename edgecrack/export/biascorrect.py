"""Empirical bias correction: an INT8 graph's convolutions shifted so that, on the calibration
images, each output channel's mean equals FP32's.

Rounding weights and activations to INT8 is not zero-mean error on this backbone: it shifts every
channel's mean a little, the trunk carries the shifts forward, and the classifier reads global
average-pooled features, so a shift of the means is a shift of the logits. Simulated on the 224 px
deck default (``benchmarks/int8/sources.json``), quantized weights alone moved the cracked-class
logit by 0.59 on average, two thirds of it one systematic offset. A convolution's bias is the last
term of its output, so subtracting the measured shift from the bias removes it exactly for the
calibration images' mean, at no run-time cost.

The correction is sequential, in graph order: each convolution's shift is measured with every
earlier one already corrected. Correcting every layer from one pass overshoots: each layer would
also undo shifts its corrected inputs no longer carry, and the errors compound down the trunk.
The quantized graph runs once, segment by segment (one segment per corrected convolution), in
reference arithmetic (Q/DQ as written), keeping only the tensors later segments read; a corrected
output is the measured output minus its correction, so no segment runs twice. Memory: the live
tensors of at most ``max_bytes`` worth of images.

Works on any Q/DQ graph whose convolutions take ``DequantizeLinear`` weights and a bias that is a
float initializer (TensorRT Q/DQ) or a ``DequantizeLinear`` of an int32 initializer (onnxruntime
QDQ); other convolutions (kept float, or QOperator formats) are left as they are.
:class:`BiasCorrector` is the step both INT8 paths (:mod:`edgecrack.export.precision`,
:mod:`edgecrack.export.quantize`) apply to each candidate model.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..calibration import CalibrationSource
    from ..manifest import Manifest

#: Live tensors kept between segments, in bytes (the number of images used follows from it).
MAX_BYTES = 1 << 30
#: Images per onnxruntime call inside a segment.
_CHUNK = 8
_INT32 = (-(2 ** 31), 2 ** 31 - 1)


@dataclass
class _Target:
    index: int  # position in the graph's node list
    name: str
    output: str
    bias: str  # initializer holding the bias (float, or int32 behind a DequantizeLinear)
    scale: np.ndarray | None  # the int32 bias's scale; None for a float bias


def _targets(model) -> list[_Target]:
    from onnx import numpy_helper

    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for k, n in enumerate(model.graph.node):
        if n.op_type != "Conv" or len(n.input) < 3 or not n.input[2]:
            continue
        w = producer.get(n.input[1])
        if w is None or w.op_type != "DequantizeLinear":
            continue
        b = n.input[2]
        if b in inits:
            out.append(_Target(k, n.name, n.output[0], b, None))
            continue
        dq = producer.get(b)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits and dq.input[1] in inits:
            if numpy_helper.to_array(inits[dq.input[0]]).dtype == np.int32:
                out.append(_Target(k, n.name, n.output[0], dq.input[0],
                                   numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)))
    return out


def _channel_means(model, outputs: list[str], images: np.ndarray, input_name: str, threads) -> list[np.ndarray]:
    """Per-channel means of ``outputs`` (NCHW) over ``images``, read through in-graph ReduceMean
    nodes so only [N, C] leaves onnxruntime."""
    from onnx import TensorProto, helper, numpy_helper

    from .ortquant import session

    m = type(model)()
    m.CopyFrom(model)
    del m.graph.output[:]
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    names = []
    for k, o in enumerate(outputs):
        mean = f"edgecrack.bc.mean.{k}"
        if opset >= 18:
            axes = f"edgecrack.bc.axes.{k}"
            m.graph.initializer.append(numpy_helper.from_array(np.array([2, 3], np.int64), axes))
            m.graph.node.append(helper.make_node("ReduceMean", [o, axes], [mean], keepdims=0))
        else:
            m.graph.node.append(helper.make_node("ReduceMean", [o], [mean], axes=[2, 3], keepdims=0))
        m.graph.output.append(helper.make_tensor_value_info(mean, TensorProto.FLOAT, None))
        names.append(mean)
    s = session(m.SerializeToString(), threads, reference=True)
    sums, rows = [0.0] * len(names), [0] * len(names)  # rows: images x test-time views
    for i in range(0, len(images), _CHUNK):
        for k, r in enumerate(s.run(names, {input_name: images[i:i + _CHUNK]})):
            sums[k], rows[k] = sums[k] + r.astype(np.float64).sum(0), rows[k] + r.shape[0]
    return [s_ / n for s_, n in zip(sums, rows)]


class _Segments:
    """The quantized graph cut after each corrected convolution, one session per piece."""

    def __init__(self, model, targets: list[_Target], input_name: str, threads):
        import onnx
        from onnx import helper

        from .ortquant import session

        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type
                 for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
        nodes = list(model.graph.node)
        inits = {i.name: i for i in model.graph.initializer}
        last_use: dict[str, int] = {}
        batched = {input_name}  # tensors that depend on the images (the rest: weights, constants)
        for k, n in enumerate(nodes):
            for i in n.input:
                last_use[i] = k
            if any(i in batched for i in n.input):
                batched.update(n.output)
        elem = dict(types, **{input_name: next(i.type.tensor_type.elem_type for i in model.graph.input
                                               if i.name == input_name)})
        self.pieces = []  # (session, input names, output names, the target)
        start = 0
        for t in targets:
            seg = nodes[start:t.index + 1]
            made = {o for n in seg for o in n.output}
            ins = sorted({i for n in seg for i in n.input if i and i not in made and i not in inits})
            outs = sorted({o for n in seg for o in n.output if o and (last_use.get(o, -1) > t.index or o == t.output)})
            unknown = [o for o in ins + outs if not elem.get(o)]
            if unknown:
                raise ValueError(f"no element type for {unknown[0]!r} after shape inference")
            g = helper.make_graph(
                seg, f"segment-{t.name}", [helper.make_tensor_value_info(i, elem[i], None) for i in ins],
                [helper.make_tensor_value_info(o, elem[o], None) for o in outs],
                [inits[i] for i in sorted({i for n in seg for i in n.input if i in inits})])
            piece = helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version)
            self.pieces.append((session(piece.SerializeToString(), threads, reference=True), ins, outs, t))
            start = t.index + 1
        self.last_use, self.batched = last_use, batched

    def run(self, images: np.ndarray, input_name: str, correct) -> int:
        """Feeds ``images`` through the pieces, ``_CHUNK`` images per call, each chunk's tensors kept
        apart (a graph may batch its test-time views, so a tensor's first axis need not be the
        images'). ``correct(target, chunks of its output)`` returns the shift subtracted from the
        target's output. Returns the peak bytes of the live tensors."""
        live: dict[str, list[np.ndarray]] = {input_name: [images[c:c + _CHUNK] for c in range(0, len(images), _CHUNK)]}
        peak = 0
        for sess, ins, outs, t in self.pieces:
            got = [sess.run(outs, {i: live[i][c] if i in self.batched else live[i][0] for i in ins})
                   for c in range(len(live[input_name]))]
            for k, o in enumerate(outs):
                live[o] = [g[k] for g in got] if o in self.batched else [got[0][k]]
            shift = correct(t, live[t.output]).astype(np.float32)[None, :, None, None]
            live[t.output] = [a - shift for a in live[t.output]]
            for name in [n for n in live if n != input_name and self.last_use.get(n, -1) <= t.index]:
                del live[name]
            peak = max(peak, sum(a.nbytes for v in live.values() for a in v))
        return peak


def bias_correct(qdq: bytes, fp32: bytes, images: np.ndarray, input_name: str, threads: int | None = None,
                 max_bytes: int = MAX_BYTES, fp32_means: dict | None = None) -> tuple[bytes, dict]:
    """The INT8 graph ``qdq`` with its convolution biases corrected against ``fp32`` on ``images``.

    Args:
        qdq: A Q/DQ model quantized from ``fp32`` (convolutions keep their node names).
        fp32: The float model.
        images: Calibration images as the graph's input takes them.
        input_name: The graph input.
        threads: onnxruntime intra-op threads.
        max_bytes: Bound on the tensors kept between segments; fewer images are used if needed.
        fp32_means: A cache of FP32 channel means, ``(convolution, images used) -> means``, shared by
            the calls of one mixed-precision search (same ``fp32`` and ``images``): each of its
            candidates would otherwise run the float model over the images again.

    Returns:
        (corrected model bytes, record for the manifest: convolutions corrected, images used,
        mean |shift| applied, seconds)
    """
    import onnx
    from onnx import numpy_helper

    t0 = time.perf_counter()
    q, f = onnx.load_from_string(qdq), onnx.load_from_string(fp32)
    float_out = {n.name: n.output[0] for n in f.graph.node if n.op_type == "Conv"}
    targets = [t for t in _targets(q) if t.name in float_out]
    if not targets or not len(images):
        return qdq, {"convolutions": 0, "images": 0}
    segments = _Segments(q, targets, input_name, threads)
    peak = segments.run(images[:1], input_name, lambda t, chunks: np.zeros(chunks[0].shape[1]))
    n = int(max(1, min(len(images), max_bytes // max(peak, 1))))
    images = images[:n]
    cache = {} if fp32_means is None else fp32_means
    missing = [t.name for t in targets if (t.name, n) not in cache]
    if missing:
        means = _channel_means(f, [float_out[name] for name in missing], images, input_name, threads)
        cache.update({(name, n): m for name, m in zip(missing, means)})
    ref = {t.name: cache[(t.name, n)] for t in targets}
    inits = {i.name: i for i in q.graph.initializer}
    shifts = []

    def correct(t: _Target, chunks: list[np.ndarray]) -> np.ndarray:
        count = sum(a.shape[0] * a.shape[2] * a.shape[3] for a in chunks)
        d = sum(a.astype(np.float64).sum((0, 2, 3)) for a in chunks) / count - ref[t.name]
        b = numpy_helper.to_array(inits[t.bias])
        if t.scale is None:
            new = (b.astype(np.float64) - d).astype(np.float32)
            applied = b.astype(np.float64) - new
        else:
            new = np.clip(np.round((b * t.scale - d) / t.scale), *_INT32).astype(np.int32)
            applied = (b.astype(np.float64) - new) * t.scale
        inits[t.bias].CopyFrom(numpy_helper.from_array(new, t.bias))
        shifts.append(float(np.abs(applied).mean()))
        return applied

    segments.run(images, input_name, correct)
    return q.SerializeToString(), {"convolutions": len(targets), "images": n,
                                   "mean_abs_shift": round(float(np.mean(shifts)), 5),
                                   "seconds": round(time.perf_counter() - t0, 2)}


class BiasCorrector:
    """``model bytes -> model bytes``: :func:`bias_correct` against the
    float graph the quantizer started from, on the calibration images; remembers each result's record."""

    def __init__(self, fp32: bytes, calib: "CalibrationSource", m: "Manifest", threads: int | None = None):
        self._fp32, self._calib, self._m, self._threads = fp32, calib, m, threads
        self._images: np.ndarray | None = None  # decoded on first use (no QDQ candidate: never)
        self._records: dict[str, dict] = {}
        self._fp32_means: dict = {}  # FP32 channel means, computed once for all candidates

    def __call__(self, blob: bytes) -> bytes:
        if self._images is None:
            self._images = np.concatenate(list(self._calib.batches(self._m.input, 8)))
        out, rec = bias_correct(blob, self._fp32, self._images, self._m.input_name, self._threads,
                                fp32_means=self._fp32_means)
        self._records[hashlib.sha256(out).hexdigest()] = rec
        return out

    def record_of(self, blob: bytes) -> dict | None:
        """The record of a model this corrector returned (None for any other)."""
        return self._records.get(hashlib.sha256(blob).hexdigest())

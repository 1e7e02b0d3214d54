"""Bias correction of INT8 graphs (edgecrack.export.biascorrect), on the session's real trained model.

The property it promises: after correction, every corrected convolution's per-channel mean output
on the calibration images (quantized graph, reference arithmetic) equals FP32's; nothing but bias
values changes; the images used follow the byte bound.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from onnx import numpy_helper  # noqa: E402

from edgecrack.export.biascorrect import _channel_means, _targets, bias_correct  # noqa: E402
from edgecrack.manifest import read_manifest  # noqa: E402
from edgecrack.preprocess import preprocess_files  # noqa: E402


def _quantized(fp32_path, images, input_name, tensorrt: bool) -> bytes:
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgecrack.export.ortquant import float_nodes, quiet_root_logger
    from edgecrack.export.precision import tensorrt_qdq_settings

    class Reader:
        def __init__(self):
            self.it = iter([images[i:i + 8] for i in range(0, len(images), 8)])

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {input_name: b}

    settings = tensorrt_qdq_settings() if tensorrt else dict(
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        per_channel=True, reduce_range=True)
    with tempfile.TemporaryDirectory() as t, quiet_root_logger():
        quantize_static(str(fp32_path), f"{t}/q.onnx", Reader(), nodes_to_exclude=float_nodes(onnx.load(str(fp32_path))),
                        **settings)
        return Path(f"{t}/q.onnx").read_bytes()


def _mean_gaps(q: bytes, f: bytes, images, input_name) -> np.ndarray:
    """Per corrected convolution: largest |mean_INT8 - mean_FP32| over its channels."""
    qm, fm = onnx.load_from_string(q), onnx.load_from_string(f)
    targets = _targets(qm)
    fout = {n.name: n.output[0] for n in fm.graph.node if n.op_type == "Conv"}
    a = _channel_means(qm, [t.output for t in targets], images, input_name, None)
    b = _channel_means(fm, [fout[t.name] for t in targets], images, input_name, None)
    return np.array([np.abs(x - y).max() for x, y in zip(a, b)])


@pytest.fixture(scope="module")
def calib_images(trained_onnx, deck_dir):
    m = read_manifest(trained_onnx)
    paths = sorted((deck_dir / "CD").glob("*.jpg"))[100:108] + sorted((deck_dir / "UD").glob("*.jpg"))[100:108]
    return preprocess_files(paths, m.input), m.input_name


@pytest.mark.parametrize("tensorrt", [True, False], ids=["tensorrt-float-bias", "onnxruntime-int32-bias"])
def test_corrected_channel_means_equal_fp32(trained_onnx, calib_images, tensorrt):
    images, name = calib_images
    f = trained_onnx.read_bytes()
    q = _quantized(trained_onnx, images, name, tensorrt)
    fixed, rec = bias_correct(q, f, images, name)
    n_conv = len(_targets(onnx.load_from_string(q)))
    assert rec["convolutions"] == n_conv >= 30 and rec["images"] == len(images) and rec["mean_abs_shift"] > 0
    before, after = _mean_gaps(q, f, images, name), _mean_gaps(fixed, f, images, name)
    # before: INT8 moves channel means by tenths to whole units of pre-activation; after: float
    # noise, or for an int32 bias its grid (scale = input scale x weight scale) and the channels
    # it cannot move (dead channels with ~1e-9 scales, clamped)
    assert np.median(before) > 0.05
    assert np.median(after) < (1e-3 if tensorrt else 1e-2) and np.median(after) < np.median(before) / 20
    # nothing but bias values changed
    qm, fm = onnx.load_from_string(q), onnx.load_from_string(fixed)
    assert [(n.op_type, list(n.input), list(n.output)) for n in qm.graph.node] == \
           [(n.op_type, list(n.input), list(n.output)) for n in fm.graph.node]
    biases = {t.bias for t in _targets(qm)}
    old = {i.name: numpy_helper.to_array(i) for i in qm.graph.initializer}
    new = {i.name: numpy_helper.to_array(i) for i in fm.graph.initializer}
    assert old.keys() == new.keys()
    changed = {k for k in old if not np.array_equal(old[k], new[k])}
    assert changed and changed <= biases
    assert all(new[k].dtype == old[k].dtype for k in biases)


def test_images_follow_the_byte_bound(trained_onnx, calib_images):
    images, name = calib_images
    q = _quantized(trained_onnx, images, name, True)
    _, rec = bias_correct(q, trained_onnx.read_bytes(), images, name, max_bytes=1)
    assert rec["images"] == 1
    # a float graph has nothing to correct and comes back as it was
    f = trained_onnx.read_bytes()
    assert bias_correct(f, f, images, name) == (f, {"convolutions": 0, "images": 0})


def test_shared_fp32_means_give_the_same_models(trained_onnx, calib_images):
    """A mixed-precision search corrects many candidates against one FP32 model: the cached FP32
    means give byte-identical models to fresh ones, also for a candidate with units left float
    (fewer convolutions to correct) and after the cache was filled by another."""
    images, name = calib_images
    f = trained_onnx.read_bytes()
    q = _quantized(trained_onnx, images, name, True)
    model = onnx.load_from_string(q)
    # leave the first quantized convolution float: drop its weight DequantizeLinear
    first = _targets(model)[0].name
    conv = next(n for n in model.graph.node if n.name == first)
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == conv.input[1])
    conv.input[1] = dq.input[0]
    inits = {i.name: i for i in model.graph.initializer}
    w = inits[dq.input[0]]
    scale = numpy_helper.to_array(inits[dq.input[1]]).reshape(-1, 1, 1, 1)
    w.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(w) * scale).astype(np.float32), w.name))
    model.graph.node.remove(dq)
    partial = model.SerializeToString()

    cache: dict = {}
    a, ra = bias_correct(q, f, images, name, fp32_means=cache)
    filled = len(cache)
    b, rb = bias_correct(partial, f, images, name, fp32_means=cache)
    assert filled == ra["convolutions"] and len(cache) == filled  # the second call computed nothing new
    assert rb["convolutions"] == ra["convolutions"] - 1
    assert a == bias_correct(q, f, images, name)[0]
    assert b == bias_correct(partial, f, images, name)[0]

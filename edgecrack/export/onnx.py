"""ONNX export: one graph with the preprocessing contract inside and the manifest attached.

Graph: ``images: uint8 [N, H, W, 3] BGR`` -> cast, channel flip, (x - mean) / std, NCHW ->
backbone -> head -> ``probs: float32 [N, classes]`` (softmax). Dynamic batch.

Opset: 17 by default. TensorRT 8.5/8.6 (JetPack 5) parse opsets up to 17; 13 is the floor
that still expresses everything here and is what older TensorRT 8.0-8.4 builds need.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..io import atomic_write_bytes
from ..manifest import METADATA_KEY, Manifest, write_manifest

DEFAULT_OPSET = 17
MIN_OPSET = 13


def onnx_bytes_from_model(net, height: int, width: int, opset: int = DEFAULT_OPSET,
                          input_name: str = "images", output_name: str = "probs") -> bytes:
    """Trace a :class:`~edgecrack.train.model.CrackNet` to ONNX bytes (TorchScript exporter)."""
    import torch

    if opset < MIN_OPSET:
        raise ConfigError(f"--opset {opset} is below the supported floor {MIN_OPSET}", f"use --opset {MIN_OPSET} or higher")
    net = net.eval().cpu()
    x = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter is used on purpose: it is ~20x faster than the dynamo
        # exporter for this graph and emits plain opset-17 ops every TensorRT parses.
        torch.onnx.export(net, (x,), buf, input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    import onnx

    from .graph import fold_constants

    return fold_constants(onnx.load_from_string(buf.getvalue())).SerializeToString()


def attach_manifest(onnx_blob: bytes, manifest: Manifest) -> bytes:
    """Return the ONNX model with the manifest in ``metadata_props`` (and doc string)."""
    import onnx

    model = onnx.load_from_string(onnx_blob)
    del model.metadata_props[:]
    prop = model.metadata_props.add()
    prop.key = METADATA_KEY
    prop.value = json.dumps(manifest.to_dict(), sort_keys=True)
    for k, v in (("labels", ",".join(manifest.labels)), ("threshold", str(manifest.threshold))):
        p = model.metadata_props.add()
        p.key, p.value = f"edgecrack.{k}", v
    model.producer_name = "edgecrack"
    model.doc_string = f"edgecrack {manifest.backbone} classifier; input uint8 NHWC BGR; output softmax probabilities"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def parity_torch_vs_ort(net, onnx_blob: bytes, batch: np.ndarray) -> dict:
    """Compare PyTorch and onnxruntime probabilities on a real uint8 batch (:mod:`edgecrack.compare`).

    Returns:
        ``max_abs_diff``, ``top1_agreement`` (fraction), ``n``.
    """
    import onnxruntime as ort
    import torch

    from ..compare import compare_runners

    sess = ort.InferenceSession(onnx_blob, providers=["CPUExecutionProvider"])
    net = net.eval().cpu()

    def torch_probs(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    _, (_, agree) = compare_runners([sess, torch_probs], batch)
    return {"n": agree.n, "max_abs_diff": agree.max_abs_diff, "top1_agreement": agree.top1_agreement}


def export_onnx(net, manifest: Manifest, out_path: str | Path, parity_batch: np.ndarray | None = None,
                opset: int = DEFAULT_OPSET) -> tuple[Path, Manifest]:
    """Export a trained model to ONNX with its manifest (sidecar + metadata_props).

    Args:
        net: Trained CrackNet.
        manifest: The checkpoint's manifest (copied with ``kind="onnx"``).
        out_path: Destination ``.onnx`` file, written atomically.
        parity_batch: Real preprocessed images for the torch-vs-onnxruntime check.
        opset: ONNX opset (>= 13).

    Returns:
        (path, ONNX manifest)

    Raises:
        ArtifactError: Parity check failed (top-1 disagreement or large difference).
    """
    c = manifest.input
    blob = onnx_bytes_from_model(net, c.height, c.width, opset, manifest.input_name, manifest.output_name)
    extra = {"opset": opset}
    if parity_batch is not None and len(parity_batch):
        par = parity_torch_vs_ort(net, blob, parity_batch)
        extra["parity_torch_vs_ort"] = par
        if par["top1_agreement"] < 1.0 or par["max_abs_diff"] > 1e-3:
            raise ArtifactError(
                f"ONNX export parity failed: top-1 agreement {par['top1_agreement']:.3f}, "
                f"max |dp| {par['max_abs_diff']:.2e} on {par['n']} images",
                "this is a bug in the exporter path; please report it with the run folder",
            )
    import onnx

    versions = dict(manifest.versions, onnx=onnx.__version__)
    om = manifest.with_kind("onnx", extra=extra, versions=versions)
    final = attach_manifest(blob, om)
    out = Path(out_path)
    atomic_write_bytes(out, final)
    write_manifest(out, om)
    return out, om

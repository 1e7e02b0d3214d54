"""Triton python-backend model: an edgecrack ONNX model run by onnxruntime on CPU.

This file is copied verbatim to ``<repository>/<name>_python/1/model.py`` by
:func:`edgecrack.export.triton.write_triton_repository`; it runs inside Triton's python stub,
not inside edgecrack, and needs only ``numpy`` and ``onnxruntime`` in the server's Python
environment. It exists for servers without the ONNX Runtime backend (CPU-only boxes, the
``nvidia-pytriton`` server used by the tests); GPU servers should serve the ``_onnx`` or
``_trt_*`` variants instead.

Dynamic batching hands ``execute`` several requests at once: their images are stacked into one
onnxruntime call and the probabilities split back per request.
"""

from __future__ import annotations

import json
import os

import numpy as np


class TritonPythonModel:
    """The class name and method names are Triton's python-backend contract."""

    def initialize(self, args):
        import triton_python_backend_utils as pb_utils  # provided by Triton's python backend

        self.pb = pb_utils
        cfg = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
        self.input_name = cfg["input"][0]["name"]
        self.output_name = cfg["output"][0]["name"]
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise pb_utils.TritonModelException(
                f"{cfg['name']}: onnxruntime is not installed in Triton's Python environment ({e}); "
                "pip install onnxruntime in the server image, or serve the model's _onnx variant") from None
        so = ort.SessionOptions()
        threads = int(params.get("intra_op_threads") or 0)
        if threads > 0:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        pb = self.pb
        try:
            arrays = [pb.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
            probs = self.session.run([self.output_name], {self.input_name: np.concatenate(arrays)})[0]
        except Exception as e:  # noqa: BLE001 - reported to each client instead of killing the stub
            return [pb.InferenceResponse(error=pb.TritonError(f"edgecrack model failed: {e}")) for _ in requests]
        responses, start = [], 0
        for a in arrays:
            part = np.ascontiguousarray(probs[start:start + a.shape[0]], dtype=np.float32)
            responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(self.output_name, part)]))
            start += a.shape[0]
        return responses

    def finalize(self):
        self.session = None

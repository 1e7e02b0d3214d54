"""Exporters: ONNX (torch side), onnxruntime INT8, TensorRT engines."""

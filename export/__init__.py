"""Export: fold checkpoints -> one verified ONNX model (to_onnx) -> TensorRT engines (to_trt)."""

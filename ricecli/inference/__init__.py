"""The model contract, model loading, engines (ONNX Runtime, TensorRT), calibration."""

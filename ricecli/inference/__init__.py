"""Stage 5, inference: load a model, open the engine that runs it, calibrate its answer.

Read in this order: model.py (load_model: the file checked against ricecli/contract.py and
ricecli/spec.py) -> engine.py (open_engine and the Engine interface) -> onnx.py / tensorrt.py
(the two engines) -> calibration.py. Below them: batches.py, gpu.py, engine_cache.py, cuda.py,
ort_rewrite.py; every ONNX Runtime session's settings come from ricecli/runtime.py.
"""

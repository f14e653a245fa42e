"""Stage 5, inference: load a model, open the engine that runs it, calibrate its answer.

Read in this order: model.py (load_model: the file checked against ricecli/contract.py and
ricecli/spec.py) -> engine.py (open_engine: one ONNX Runtime session, the Engine interface) ->
gpu.py (the GPU providers, their options and errors) -> calibration.py. Every ONNX Runtime
session's settings come from ricecli/runtime.py.
"""

"""Occlusion sensitivity: which regions drove the answer.

Read top-down: `occlusion` (settings, the maps, `explain_case`), `positions` (where the cube
goes), `maps` (onto the event scan) and `incremental/` (the exact fast path on ONNX Runtime
CPU). The files are written by `outputs/explain_files.py`.
"""

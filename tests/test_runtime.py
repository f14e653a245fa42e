"""runtime.py: every ONNX Runtime session's settings come from one place."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from model_fixtures import TINY_SPEC

from ricecli.contract import INPUT_NAME, OUTPUT_NAMES
from ricecli.runtime import CPU_EP, cpu_session, onnxruntime_builds, physical_cores, session_options


def test_session_options_are_sequential_and_quiet():
    opts = session_options(threads=2, spin=False)
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.log_severity_level == 3
    assert session_options().intra_op_num_threads == physical_cores() >= 1
    bare = session_options(optimize=False)  # enough to read a model's I/O
    assert bare.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_cpu_session_runs_a_model_from_its_file_or_bytes(tiny_model):
    shape = (1, len(TINY_SPEC.channels), *TINY_SPEC.model_space.shape_zyx)
    volumes = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    by_path = cpu_session(tiny_model, threads=1)
    by_bytes = cpu_session(tiny_model.read_bytes(), threads=1)
    assert by_path.get_providers() == [CPU_EP]
    a = by_path.run(list(OUTPUT_NAMES), {INPUT_NAME: volumes})
    b = by_bytes.run(list(OUTPUT_NAMES), {INPUT_NAME: volumes})
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (1, 2) and np.allclose(a[0].sum(1), 1.0, atol=1e-5)
    assert "onnxruntime" in onnxruntime_builds()

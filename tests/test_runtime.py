"""runtime.py: every ONNX Runtime session's settings come from one place, and they hold in the
sessions it opens."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from model_fixtures import TINY_SPEC

from ricecli.contract import INPUT_NAME, OUTPUT_NAMES
from ricecli.runtime import CPU_EP, cpu_session, onnxruntime_builds


def _volumes(seed: int = 0) -> np.ndarray:
    shape = (2, len(TINY_SPEC.channels), *TINY_SPEC.model_space.shape_zyx)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_cpu_session_runs_a_model_from_its_file_or_bytes(tiny_model):
    volumes = _volumes()
    by_path = cpu_session(tiny_model, threads=1)
    by_bytes = cpu_session(tiny_model.read_bytes(), threads=1)
    assert by_path.get_providers() == [CPU_EP]
    a = by_path.run(list(OUTPUT_NAMES), {INPUT_NAME: volumes})
    b = by_bytes.run(list(OUTPUT_NAMES), {INPUT_NAME: volumes})
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (2, 2) and np.allclose(a[0].sum(1), 1.0, atol=1e-5)
    assert onnxruntime_builds() == ["onnxruntime"]  # one build here, never two


def test_sessions_keep_their_threads_and_spin_setting(tiny_model):
    """The settings reach the session ORT really opened; idle threads that do not spin and
    another thread count give the same bits."""
    quiet = cpu_session(tiny_model, threads=2, spin=False)
    options = quiet.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    volumes = _volumes(1)
    one = cpu_session(tiny_model, threads=1).run(list(OUTPUT_NAMES), {INPUT_NAME: volumes})
    two = quiet.run(list(OUTPUT_NAMES), {INPUT_NAME: volumes})
    assert all(np.array_equal(x, y) for x, y in zip(one, two, strict=True))


def test_default_threads_are_the_cores_this_process_may_use():
    """A process pinned to one CPU gets one thread per session, not one per machine core."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from ricecli.runtime import physical_cores, session_options; "
            "print(physical_cores(), session_options().intra_op_num_threads)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["1", "1"]

"""benchmarks/gpu_extra.py in its CPU mode: the GPU script runs end to end before a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_parity_and_occlusion_steps_run_on_cpu(tmp_path):
    from ricecli.inference.model import load_model

    shape = load_model(None).spec.model_space.shape_zyx
    case = tmp_path / "demo" / "case0"
    case.mkdir(parents=True)
    np.save(case / "prepared.npy",
            np.random.default_rng(0).standard_normal((3, *shape), dtype=np.float32))
    out = tmp_path / "extra.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_extra.py"), "--demo",
         str(tmp_path / "demo"), "--json", str(out), "--only", "parity,occlusion",
         "--paper", "16", "--cube", "8", "--batch", "8"],
        capture_output=True, text=True, env={**os.environ, "GPU_EXTRA_DEVICE": "cpu"},
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["errors"] == {}
    parity = data["steps"]["parity_demo"]
    assert parity["fp32"]["max_abs_members"] == 0.0  # the same CPU session twice
    assert 0.0 < parity["fp16"]["max_abs_members"] < 5e-3  # fp16 weights really differ
    occ = data["steps"]["occlusion_paper16_cpu"]
    assert occ["max_abs_diff_vs_monai"] < 1e-5 and occ["map_max_abs"] > 1e-4

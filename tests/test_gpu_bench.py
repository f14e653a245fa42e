"""benchmarks/gpu_bench.py: rows labelled by the provider a session really runs on, ricecli's own
engines exercised (open_engine, its fallback and errors), one family failing skips only its rows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" /
                                                  "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("GPU_CHECK_REPS", "1")
    monkeypatch.setenv("GPU_CHECK_OCC_BATCH", "2")
    monkeypatch.setenv("RICENET_CACHE", str(tmp_path / "cache"))
    return bench.Bench(bench.Config.from_env(tmp_path), tmp_path / "out.json")


def test_row_label_comes_from_get_providers(bench):
    assert bench.ort_row_engine("cpu", [CPU]) == ("onnxruntime-CPU", "")
    assert bench.ort_row_engine("cuda", [CUDA, CPU]) == ("onnxruntime-CUDA", "")
    assert bench.ort_row_engine("cuda", [CPU]) == (
        None, f"asked for {CUDA}, the session runs on {CPU}")
    assert bench.ort_row_engine("tensorrt", [CUDA, CPU])[0] is None


def test_onnxruntime_rows_use_ricecli_engines_and_never_call_cpu_gpu(bench, run, tiny_model,
                                                                      monkeypatch):
    import onnxruntime as ort
    from model_fixtures import TINY_SPEC

    from ricecli.inference.engine import forget_engines

    forget_engines()
    # an onnxruntime that lists CUDA whose libraries do not load (onnxruntime-gpu, no GPU)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    ref = np.zeros((1, 2), np.float32)
    bench.bench_onnxruntime(run, "edge", [None, None], TINY_SPEC, {False: tiny_model}, ref)
    data = json.loads(run.json_path.read_text())
    assert {r["engine"] for r in data["rows"]} == {"onnxruntime-CPU"}
    assert all(r["providers"] == [CPU] for r in data["rows"])
    cuda_skip = [s for s in data["skipped"] if s["what"].startswith("onnxruntime cuda")]
    assert len(cuda_skip) == 1 and "did not load its CUDA provider" in cuda_skip[0]["why"]
    forget_engines()


def test_preflight_opens_each_device_through_open_engine(bench, run, tiny_model):
    import onnxruntime as ort

    bench.preflight(run, tiny_model)
    pre = json.loads(run.json_path.read_text())["preflight"]
    assert pre["available_providers"] == ort.get_available_providers()
    assert pre["devices"]["cpu"]["providers"] == [CPU]
    assert pre["devices"]["cpu"]["engine"].startswith("onnxruntime-cpu (")
    if CUDA not in ort.get_available_providers():
        assert pre["devices"]["auto"]["providers"] == [CPU]
        assert pre["devices"]["cuda"]["error"].startswith("RicenetError: --device cuda asked "
                                                          "for, but this onnxruntime has no CUDA")
        assert "TensorRT execution provider" in pre["devices"]["tensorrt"]["error"]

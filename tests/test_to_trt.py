"""export/to_trt.py: one-line exit 2 without TensorRT or a GPU; real builds where both exist."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from export.to_onnx import export_ensemble
from export.to_trt import attach_timing_cache, read_onnx_meta, timing_cache_bytes
from ricecli.spec import ModelSpace, Spec
from train.model import arch_config, build_network

ROOT = Path(__file__).resolve().parents[1]
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
SPEC = Spec(model_space=ModelSpace(spacing_mm=(6.0, 6.0, 6.0), size_xyz=(24, 28, 24)),
            preset="tiny")


def tiny_members(n: int, seed: int) -> list:
    import torch

    torch.manual_seed(seed)
    return [build_network(arch_config("tiny"), len(SPEC.channels)).eval() for _ in range(n)]


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trt")
    members = tiny_members(2, seed=3)
    fp32, fp16 = folder / "tiny.onnx", folder / "tiny16.onnx"
    export_ensemble(members, SPEC, {"name": "trt-test"}, fp32, exporter="torchscript")
    export_ensemble(members, SPEC, {"name": "trt-test"}, fp16, fp16=True, exporter="torchscript")
    return fp32, fp16


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "export" / "to_trt.py"), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_reads_spec_card_and_precision(onnx_models):
    fp32, fp16 = onnx_models
    spec, card, is_fp16 = read_onnx_meta(fp32)
    assert spec == SPEC and card["name"] == "trt-test" and is_fp16 is False
    assert read_onnx_meta(fp16)[2] is True


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_exits_2_with_one_line(onnx_models, tmp_path):
    out = tmp_path / "tiny.engine"
    proc = run_script("--onnx", str(onnx_models[0]), "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorRT is not installed" in lines[0] and "Fix:" in lines[0]
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT")
def test_without_gpu_exits_2_with_one_line(onnx_models, tmp_path):
    if has_cuda():
        pytest.skip("a CUDA GPU is present")
    proc = run_script("--onnx", str(onnx_models[0]), "--out", str(tmp_path / "m.engine"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "no CUDA GPU" in proc.stderr


@pytest.mark.gpu
@pytest.mark.slow
def test_build_engine_sidecar_and_parity(onnx_models, tmp_path):
    trt = pytest.importorskip("tensorrt")
    if not has_cuda():
        pytest.skip("needs a CUDA GPU")
    from export.to_trt import FP16_PARITY_TOL, FP32_PARITY_TOL, convert
    from ricecli.errors import InputError

    fp32, fp16 = onnx_models
    cache = tmp_path / "timing.cache"
    engine = tmp_path / "tiny.engine"
    side = convert(fp32, engine, max_batch=4, opt_batch=3, timing_cache=cache)
    assert engine.is_file() and cache.stat().st_size > 0
    on_disk = json.loads((tmp_path / "tiny.engine.json").read_text())
    assert on_disk == json.loads(json.dumps(side))
    assert side["profile"]["min"][0] == 1 and side["profile"]["opt"][0] == 3
    assert side["profile"]["max"] == [4, 3, 24, 28, 24]
    assert side["tensorrt_version"] == trt.__version__
    assert side["parity"]["max_abs_diff_vs_onnxruntime"] <= FP32_PARITY_TOL
    # ricecli's own path
    assert side["parity"]["engine"] == "ricecli.inference.engine.TensorRTEngine"
    assert side["build"]["timing_cache_status"] == "new"
    assert not list(tmp_path.glob(".*.build"))  # the staging folder is gone
    from ricecli.inference import model
    loaded = model.load_model(engine)
    assert loaded.format == "tensorrt" and loaded.spec == SPEC and loaded.name == "trt-test"
    side16 = convert(fp16, tmp_path / "tiny16.engine", max_batch=4, opt_batch=3,
                     timing_cache=cache)
    assert side16["build"]["timing_cache_status"] == "loaded"
    cache.write_bytes(b"a timing cache from another GPU")  # refused by TensorRT: rebuilt
    side_again = convert(fp32, tmp_path / "again.engine", max_batch=4, opt_batch=3,
                         timing_cache=cache)
    assert side_again["build"]["timing_cache_status"] == "mismatch"
    assert cache.stat().st_size > 100 and (tmp_path / "again.engine").is_file()
    assert side16["build"]["strongly_typed"] and side16["build"]["fp16"]
    assert side16["parity"]["max_abs_diff_vs_onnxruntime"] <= FP16_PARITY_TOL
    if int(trt.__version__.split(".")[0]) >= 11:
        with pytest.raises(InputError, match="no FP16 builder flag"):
            convert(fp32, tmp_path / "x.engine", fp16=True, max_batch=4, opt_batch=3)


def test_timing_cache_guard_starts_fresh_when_tensorrt_refuses_the_saved_one():
    """TensorRT's set_timing_cache returns False for a cache from another GPU or version and
    leaves the builder without one; saving `get_timing_cache().serialize()` then raised after
    the whole build. The guard attaches a fresh cache instead and says so."""
    attached: list[bytes] = []

    def create(data: bytes) -> bytes:  # what config.create_timing_cache is given
        return b"fresh" if data == b"" else data

    def attach(cache: bytes) -> bool:  # config.set_timing_cache(cache, ignore_mismatch=False)
        ok = cache != b"other GPU"
        if ok:
            attached.append(cache)
        return ok

    assert attach_timing_cache(create, attach, b"this GPU") == (b"this GPU", "loaded")
    assert attach_timing_cache(create, attach, b"other GPU") == (b"fresh", "mismatch")
    assert attach_timing_cache(create, attach, b"") == (b"fresh", "new")
    assert attached == [b"this GPU", b"fresh", b"fresh"]

    def broken(data: bytes):
        if data:
            raise RuntimeError("not a timing cache")
        return None

    assert attach_timing_cache(broken, attach, b"garbage") == (None, "none")
    assert timing_cache_bytes(None) == b""  # nothing to save, not an exception


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_parity_runs_through_ricecli_tensorrt_engine(onnx_models, tmp_path):
    """The parity check opens the written engine with ricecli's TensorRTEngine: without
    TensorRT that is ricecli's own one-line error, and no engine is left behind."""
    from export.to_trt import trt_parity
    from ricecli.errors import ModelError

    staged = tmp_path / "x.engine"
    staged.write_bytes(b"not an engine")
    spec, card, _ = read_onnx_meta(onnx_models[0])
    staged.with_name("x.engine.json").write_text(json.dumps(
        {"ricenet.spec": spec.to_dict(), "ricenet.card": card}))
    with pytest.raises(ModelError, match="this is a TensorRT engine but the tensorrt package "
                                         "is missing"):
        trt_parity(staged, onnx_models[0], spec, 1)

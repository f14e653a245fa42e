"""ricecli.engine: ONNX Runtime sessions agree with torch, split batches, pick devices."""

from __future__ import annotations

import numpy as np
import pytest
from model_fixtures import TINY_SPEC, tiny_ensemble

from ricecli.engine import (
    Engine,
    OnnxRuntimeEngine,
    available_engines,
    describe,
    open_engine,
    physical_cores,
)
from ricecli.errors import ModelError, RicenetError
from ricecli.model import load_model


def _volumes(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3, *TINY_SPEC.model_space.shape_zyx)).astype(np.float32)


def test_onnxruntime_matches_torch(tiny_model):
    import torch

    engine = open_engine(load_model(tiny_model), "cpu")
    assert isinstance(engine, Engine) and engine.name == "onnxruntime-cpu"
    x = _volumes(3)
    probs, members = engine.run(x)
    with torch.no_grad():
        ref_probs, ref_members = tiny_ensemble()(torch.from_numpy(x))
    assert probs.shape == (3, 2) and members.shape == (3, 2, 2)
    np.testing.assert_allclose(probs, ref_probs.numpy(), atol=1e-5)
    np.testing.assert_allclose(members, ref_members.numpy(), atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_large_batch_is_split_and_joined(tiny_model):
    engine = OnnxRuntimeEngine(load_model(tiny_model), threads=1)
    x = _volumes(5, seed=2)
    whole = engine.run(x)
    engine.max_batch = 2
    split = engine.run(x)
    single = engine.run(x[3])  # a 4-D volume is a batch of one
    np.testing.assert_allclose(split[0], whole[0], atol=1e-6)
    np.testing.assert_allclose(split[1], whole[1], atol=1e-6)
    np.testing.assert_allclose(single[0][0], whole[0][3], atol=1e-6)


def test_one_session_per_model_and_device(tiny_model):
    model = load_model(tiny_model)
    assert open_engine(model, "cpu") is open_engine(model, "cpu")
    auto = open_engine(model, "auto")
    assert auto.providers[-1] == "CPUExecutionProvider" and "batch <=" in describe(auto)


def test_wrong_shape_is_a_model_error(tiny_model):
    engine = open_engine(load_model(tiny_model), "cpu")
    with pytest.raises(ModelError, match="expects"):
        engine.run(np.zeros((1, 3, 8, 8, 8), np.float32))


def test_cuda_without_gpu_is_a_clear_error(tiny_model):
    if available_engines()["onnxruntime-cuda"]:
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(RicenetError, match="--device cpu"):
        open_engine(load_model(tiny_model), "cuda")
    with pytest.raises(RicenetError, match="unknown device"):
        open_engine(load_model(tiny_model), "tpu")


def test_available_engines_and_cores():
    have = available_engines()
    assert have["onnxruntime-cpu"] is True
    assert set(have) == {"onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt",
                         "tensorrt"}
    assert 1 <= physical_cores() <= 1024

"""Load-time rewrite: sibling stem convs merge into one Conv + Split with unchanged outputs;
graphs without siblings or with an old opset are left as they are, with the reason."""

from __future__ import annotations

import numpy as np
import onnx
from test_incremental import SHAPE, volume, write_model

from ricecli.inference.engine import OnnxRuntimeEngine
from ricecli.inference.model import load_model
from ricecli.inference.ort_rewrite import (
    cpu_session_source,
    merge_sibling_convs,
    rewritten_model,
)
from ricecli.runtime import cpu_session


def _run(source, x):
    session = cpu_session(source, threads=1)
    return session.run(["probabilities", "member_probabilities"], {"volumes": x})


def test_stem_convs_merge_and_outputs_stay_equal(tmp_path):
    path = write_model(tmp_path / "m.onnx", "uneven", members=3, seed=2)
    model = onnx.load(str(path))
    assert merge_sibling_convs(model) == 2  # three stem convs -> one
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 1 and convs[0].input[0] == "volumes"
    assert any(n.op_type == "Split" for n in model.graph.node)
    onnx.checker.check_model(model, full_check=True)
    x = np.stack([volume(0), volume(1)])
    want = _run(str(path), x)
    got = _run(rewritten_model(path), x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-6, rtol=0)
    assert np.abs(want[1][:, 0] - want[1][:, 1]).max() > 1e-3  # the members do differ


def test_engine_uses_the_rewrite_on_cpu(tmp_path):
    path = write_model(tmp_path / "m.onnx", "resnet_stem", members=2, seed=1)
    assert isinstance(cpu_session_source(path), bytes)
    engine = OnnxRuntimeEngine(load_model(path), threads=1)
    x = volume(3)[None]
    probs, members = engine.run(x)
    want = _run(str(path), x)
    np.testing.assert_allclose(probs, want[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(members, want[1], atol=1e-6, rtol=0)
    assert members.shape == (1, 2, 2) and SHAPE == x.shape[2:]


def test_nothing_to_merge_or_old_opset_keeps_the_file(tmp_path):
    path = write_model(tmp_path / "one.onnx", "resnet_stem", members=1)
    assert rewritten_model(path) == "no sibling convs to merge"
    assert cpu_session_source(path) == str(path)
    old = onnx.load(str(write_model(tmp_path / "two.onnx", members=2)))
    old.opset_import[0].version = 12
    onnx.save(old, str(tmp_path / "old.onnx"))
    assert rewritten_model(tmp_path / "old.onnx") == "opset 12 < 13"

"""export/merge_convs.py: sibling stem convs merge into one Conv + Split with the same output
bits; graphs without siblings or with an old opset are left alone; the shipped model is merged."""

from __future__ import annotations

import numpy as np
import onnx
from test_incremental import volume, write_model

from export.merge_convs import main, merge_sibling_convs
from ricecli.inference.model import default_model_path
from ricecli.runtime import cpu_session


def _run(source, x):
    session = cpu_session(source, threads=1)
    return session.run(["probabilities", "member_probabilities"], {"volumes": x})


def test_stem_convs_merge_and_outputs_keep_their_bits(tmp_path):
    path = write_model(tmp_path / "m.onnx", "uneven", members=3, seed=2)
    assert main([str(path), str(tmp_path / "merged.onnx")]) == 0
    model = onnx.load(str(tmp_path / "merged.onnx"))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 1 and convs[0].input[0] == "volumes"
    assert any(n.op_type == "Split" for n in model.graph.node)
    assert [p.key for p in model.metadata_props] == [p.key for p in onnx.load(str(path))
                                                     .metadata_props]
    onnx.checker.check_model(model, full_check=True)
    x = np.stack([volume(0), volume(1)])
    want = _run(str(path), x)
    got = _run(str(tmp_path / "merged.onnx"), x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert np.abs(want[1][:, 0] - want[1][:, 1]).max() > 1e-3  # the members do differ


def test_nothing_to_merge_or_old_opset_keeps_the_graph(tmp_path, capsys):
    one = write_model(tmp_path / "one.onnx", "resnet_stem", members=1)
    assert main([str(one), str(tmp_path / "out.onnx")]) == 1
    assert "no sibling convs to merge" in capsys.readouterr().err
    assert not (tmp_path / "out.onnx").exists()
    old = onnx.load(str(write_model(tmp_path / "two.onnx", members=2)))
    old.opset_import[0].version = 12  # Split takes its sizes as an attribute there
    assert merge_sibling_convs(old) == 0


def test_the_shipped_model_is_merged_once():
    model = onnx.load(str(default_model_path()))
    stems = [n for n in model.graph.node if "volumes" in n.input]
    assert [n.op_type for n in stems] == ["Conv"]
    assert merge_sibling_convs(model) == 0  # nothing left to merge

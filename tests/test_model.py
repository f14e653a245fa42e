"""inference/model.py: loading ricenet ONNX models, and refusing bad ones."""

from __future__ import annotations

import hashlib
import warnings

import pytest
from model_fixtures import TINY_SPEC, export_onnx, tiny_ensemble

from ricecli.contract import SPEC_KEY
from ricecli.errors import ModelError
from ricecli.inference import model as model_mod
from ricecli.inference.model import load_model
from ricecli.spec import ModelSpace, Spec


def test_load_reads_spec_card_and_hash(tiny_model):
    m = load_model(tiny_model)
    assert m.spec == TINY_SPEC
    assert m.card["intended_use"] == "tests only"
    assert (m.name, m.version, m.format) == ("ricenet-test", "0.0.1", "onnx")
    assert m.sha256 == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert m.members == 2 and m.fixed_batch is None
    assert m.summary()["sha256"] == m.sha256


def test_no_model_and_no_default_says_pass_model(monkeypatch, tmp_path):
    monkeypatch.setattr(model_mod, "default_model_path", lambda: tmp_path / "absent.onnx")
    with pytest.raises(ModelError, match="--model"):
        load_model(None)


@pytest.mark.parametrize("make", ["missing", "folder", "text", "empty"])
def test_bad_paths_are_model_errors(tmp_path, make):
    path = tmp_path / "m.onnx"
    if make == "folder":
        path.mkdir()
    elif make == "text":
        path.write_text("this is not a model\n")
    elif make == "empty":
        path.write_bytes(b"")
    with pytest.raises(ModelError) as err:
        load_model(path)
    assert str(path) in err.value.one_line() and "Fix:" in err.value.one_line()


def test_onnx_without_ricenet_metadata(tmp_path):
    path = export_onnx(tiny_ensemble(members=1), tmp_path / "plain.onnx", TINY_SPEC,
                       metadata=False)
    with pytest.raises(ModelError, match="without ricenet metadata"):
        load_model(path)


def test_spec_that_disagrees_with_graph_shape(tmp_path):
    other = Spec(model_space=ModelSpace(spacing_mm=(6.0, 6.0, 6.0), size_xyz=(24, 28, 20)))
    path = export_onnx(tiny_ensemble(members=1), tmp_path / "m.onnx", TINY_SPEC)
    import onnx

    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == SPEC_KEY:
            entry.value = other.to_json()
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match="input D is 24 but its spec says 20"):
        load_model(path)


def test_wrong_io_names(tmp_path):
    import onnx
    import torch

    net = tiny_ensemble(members=1)
    path = tmp_path / "named.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 24, 28, 24),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["p", "m"])
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, TINY_SPEC.to_json()
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match="expected \\['volumes'\\]"):
        load_model(path)


def test_models_are_loaded_once_per_file_version(tmp_path):
    """The same file gives the same LoadedModel; a rewritten file is read again; clear_all
    forgets it."""
    from ricecli.memo import clear_all

    path = export_onnx(tiny_ensemble(members=1), tmp_path / "m.onnx", TINY_SPEC)
    first = load_model(path)
    assert load_model(path) is first
    export_onnx(tiny_ensemble(members=2), path, TINY_SPEC)
    again = load_model(path)
    assert again is not first and again.members == 2 and again.sha256 != first.sha256
    clear_all()
    assert load_model(path) is not again

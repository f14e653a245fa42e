"""contract.py: the one definition of a ricenet model file, read back from real ONNX files."""

from __future__ import annotations

import json

import onnx
import pytest
from model_fixtures import TINY_SPEC

from ricecli.contract import (
    CARD_KEY,
    INPUT_NAME,
    OUTPUT_NAMES,
    SPEC_KEY,
    check_io,
    metadata,
    parse_card,
    parse_spec,
)
from ricecli.errors import ModelError


def _io(model: onnx.ModelProto) -> tuple[list, list]:
    """(name, dims) of a graph's inputs and outputs, as ONNX Runtime lists them."""
    def dims(value: onnx.ValueInfoProto) -> list:
        return [d.dim_value or d.dim_param or None for d in value.type.tensor_type.shape.dim]
    return ([(v.name, dims(v)) for v in model.graph.input],
            [(v.name, dims(v)) for v in model.graph.output])


def test_an_exported_model_holds_the_contract(tiny_model):
    """The file export/to_onnx.py wrote: contract names, metadata that parses to its spec."""
    model = onnx.load(str(tiny_model), load_external_data=False)
    inputs, outputs = _io(model)
    assert [n for n, _ in inputs] == [INPUT_NAME]
    assert [n for n, _ in outputs] == list(OUTPUT_NAMES)
    members, batch = check_io(TINY_SPEC, inputs, outputs, tiny_model)
    assert members == 2 and batch is None  # two folds, dynamic batch
    props = {p.key: p.value for p in model.metadata_props}
    assert parse_spec(props[SPEC_KEY], tiny_model) == TINY_SPEC
    assert parse_card(props[CARD_KEY], tiny_model)["members"]


def test_metadata_round_trips():
    card = {"name": "ricenet-tiny", "version": "0.0.1"}
    props = metadata(TINY_SPEC, card)
    assert set(props) == {SPEC_KEY, CARD_KEY}
    assert parse_spec(props[SPEC_KEY], "m.onnx") == TINY_SPEC
    assert parse_card(props[CARD_KEY], "m.onnx") == card and parse_card(None, "m.onnx") == {}


def test_io_that_breaks_the_contract_is_refused_with_the_reason(tiny_model):
    inputs, outputs = _io(onnx.load(str(tiny_model), load_external_data=False))
    with pytest.raises(ModelError) as err:
        check_io(TINY_SPEC, [("image", inputs[0][1])], outputs, tiny_model)
    assert "model inputs are ['image'], expected ['volumes']" in err.value.one_line()
    wrong_d = [(INPUT_NAME, [None, 3, 99, *inputs[0][1][3:]])]
    with pytest.raises(ModelError, match="model input D is 99 but its spec says"):
        check_io(TINY_SPEC, wrong_d, outputs, tiny_model)
    with pytest.raises(ModelError, match="missing \\['member_probabilities'\\]"):
        check_io(TINY_SPEC, inputs, outputs[:1], tiny_model)
    with pytest.raises(ModelError, match="not a valid spec"):
        parse_spec(json.dumps({"classes": ["RICE"]}), tiny_model)

"""outputs/record.py and outputs/console.py: the result record, QA warnings, its JSON written
whole, the rich summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ricecli.errors import OutputError
from ricecli.inference.engine import open_engine
from ricecli.inference.model import load_model
from ricecli.io.files import write_text_atomic
from ricecli.outputs.console import print_summary
from ricecli.outputs.record import build_result, qa_warnings, to_json


def _result(tiny_model, probs=(0.3, 0.7), members=((0.6, 0.4), (0.0, 1.0))):
    model = load_model(tiny_model)
    engine = open_engine(model, "cpu")
    qa = {"registration": {"post_op_to_event": {"metric": -0.5, "warnings": ["low overlap"]}},
          "dose": {"max_gy": np.float32(59.5), "warnings": []}, "notes": ("a", "b")}
    return build_result(np.array(probs), np.array(members), model, engine, qa,
                        {"prepare": 1.23456, "infer": 0.01}, {"post_op": "a.nii.gz"})


def test_build_result_fields(tiny_model):
    r = _result(tiny_model)
    assert r["label"] == "recurrence"
    assert r["probabilities"] == pytest.approx({"RICE": 0.3, "recurrence": 0.7})
    assert r["votes"] == {"RICE": 1, "recurrence": 1}
    assert [m["vote"] for m in r["members"]] == ["RICE", "recurrence"]
    assert r["warnings"] == ["registration.post_op_to_event: low overlap"]
    assert r["timings_s"]["prepare"] == 1.2346
    assert r["model"]["sha256"] == load_model(tiny_model).sha256
    data = json.loads(to_json({**r, "_case": object()}))
    assert "_case" not in data and data["qa"]["dose"]["max_gy"] == pytest.approx(59.5)
    assert data["qa"]["notes"] == ["a", "b"]


def test_label_follows_mean_probability(tiny_model):
    r = _result(tiny_model, probs=(0.55, 0.45), members=((0.9, 0.1), (0.2, 0.8)))
    assert r["label"] == "RICE"


def test_qa_warnings_nested():
    qa = {"warnings": ["top"], "a": [{"warnings": ["x", "y"]}], "b": {"warning": "z"}}
    assert qa_warnings(qa) == ["top", "a: x", "a: y", "b: z"]


def test_write_atomic(tmp_path):
    target = tmp_path / "r.json"
    write_text_atomic(target, "{}\n")
    assert target.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
    write_text_atomic(target, "[]\n")  # replaced whole
    assert target.read_text() == "[]\n"
    with pytest.raises(OutputError, match="overwrite an input"):
        write_text_atomic(target, "x", inputs=[target])
    write_text_atomic(tmp_path / "new" / "r.json", "x")  # its folder is made
    assert (tmp_path / "new" / "r.json").read_text() == "x"
    with pytest.raises(OutputError, match="folder"):
        write_text_atomic(tmp_path, "x")


def test_summary_prints_label_votes_and_timings(tiny_model):
    from rich.console import Console

    console = Console(record=True, width=120)
    print_summary(_result(tiny_model), console)
    text = console.export_text()
    assert "recurrence" in text and "p(recurrence) = 0.700" in text
    assert "ensemble votes (2 members)" in text and "low overlap" in text
    assert "prepare 1.23s" in text

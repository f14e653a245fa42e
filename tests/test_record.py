"""outputs/record.py, ricecli/result.py and outputs/console.py: the result built once, withheld
on a QA fail, its JSON, the rich summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ricecli.errors import OutputError
from ricecli.inference.engine import open_engine
from ricecli.inference.model import load_model
from ricecli.io.files import write_text_atomic
from ricecli.outputs.console import print_summary
from ricecli.outputs.record import build_result, qa_line
from ricecli.result import SCHEMA_VERSION, Finding, QAReport, to_json, to_record

WARNED = QAReport("warn", warnings=[Finding("dose_peak_unusual", "low peak")],
                  measures={"dose": {"max_gy": np.float32(59.5), "shell": float("inf")}},
                  notes=["a", "b"])
FAILED = QAReport("fail", reasons=[Finding("dose_peak_low", "the dose peaks at 1 Gy")])


def _result(tiny_model, probs=(0.3, 0.7), members=((0.6, 0.4), (0.0, 1.0)), qa=WARNED,
            **options):
    model = load_model(tiny_model)
    engine = open_engine(model, "cpu")
    return build_result(np.array(probs), np.array(members), model, engine, qa,
                        {"prepare": 1.23456, "infer": 0.01}, {"post_op": "a.nii.gz"},
                        **options)


def test_build_result_fields(tiny_model):
    r = _result(tiny_model)
    assert r.label == "recurrence" and r.labelled and not r.label_despite_qa_failure
    assert r.probabilities == pytest.approx({"RICE": 0.3, "recurrence": 0.7})
    assert r.votes == {"RICE": 1, "recurrence": 1}
    assert [m.vote for m in r.members] == ["RICE", "recurrence"]
    assert r.timings_s["prepare"] == 1.2346
    assert r.model["sha256"] == load_model(tiny_model).sha256


def test_the_json_keeps_the_keys_and_makes_findings_objects(tiny_model):
    data = json.loads(to_json(to_record(_result(tiny_model))))
    assert data["schema_version"] == SCHEMA_VERSION and data["label"] == "recurrence"
    assert data["members"][1] == {"member": 1, "vote": "recurrence",
                                  "probabilities": {"RICE": 0.0, "recurrence": 1.0},
                                  "probabilities_calibrated": {"RICE": 0.0, "recurrence": 1.0}}
    qa = data["qa"]
    assert qa["verdict"] == "warn" and qa["reasons"] == [] and qa["notes"] == ["a", "b"]
    assert qa["warnings"] == [{"code": "dose_peak_unusual", "message": "low peak"}]
    assert qa["dose"] == {"max_gy": pytest.approx(59.5), "shell": None}  # measures, plain


def test_label_follows_mean_probability(tiny_model):
    r = _result(tiny_model, probs=(0.55, 0.45), members=((0.9, 0.1), (0.2, 0.8)))
    assert r.label == "RICE"


def test_a_qa_fail_withholds_the_answer_unless_accepted(tiny_model):
    withheld = _result(tiny_model, qa=FAILED)
    assert not withheld.labelled and withheld.probabilities is None and withheld.votes is None
    assert withheld.members == [] and withheld.uncertainty is None
    assert withheld.decision.startswith("no label")
    assert qa_line(withheld) == "QA failed, no label: the dose peaks at 1 Gy"
    accepted = _result(tiny_model, qa=FAILED, accept_qa_failure=True)
    assert accepted.label == "recurrence" and accepted.label_despite_qa_failure
    assert to_record(accepted)["label_despite_qa_failure"] is True


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


def _printed(result) -> str:
    from rich.console import Console

    console = Console(record=True, width=120)
    print_summary(result, console)
    return console.export_text()


def test_summary_prints_label_votes_warnings_and_timings(tiny_model):
    text = _printed(_result(tiny_model))
    assert "recurrence" in text and "p(recurrence) = 0.700" in text
    assert "ensemble votes (2 members)" in text and "QA warning: low peak" in text
    assert "QA note: a" in text and "prepare 1.23s" in text


def test_summary_of_a_withheld_answer_says_why_once(tiny_model):
    text = _printed(_result(tiny_model, qa=FAILED))
    assert "QA failed, no label: the dose peaks at 1 Gy" in text
    assert "p(recurrence)" not in text and text.count("peaks at") == 1


# --- docs/result-schema.md: the documented fields are the written fields -----------------------

JSON_TYPES = {"integer": int, "string": str, "object": dict, "array": list, "boolean": bool,
              "null": type(None)}


QA_SECTION = "## The QA report (`qa`)"


def documented_fields(section: str = "## result.json") -> dict[str, tuple[type, ...]]:
    """Field -> allowed JSON types from the first table under `section` of the schema doc."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "result-schema.md").read_text()
    table = text.split(section + "\n", 1)[1].strip().split("\n\n", 1)[0]
    fields = {}
    for line in table.splitlines()[2:]:
        name, kind = (cell.strip() for cell in line.split("|")[1:3])
        fields[name.strip("`")] = tuple(JSON_TYPES[k] for k in kind.split(" or "))
    return fields


def check_schema(record: dict, section: str = "## result.json") -> None:
    """`record` has exactly the documented fields, each of a documented type."""
    fields = documented_fields(section)
    assert list(record) == list(fields)
    for name, value in record.items():  # bool is an int in Python: not for integer fields
        assert isinstance(value, fields[name]) and not (
            isinstance(value, bool) and bool not in fields[name]), name


def test_the_record_is_what_the_schema_doc_says(tiny_model):
    qa_fields = documented_fields(QA_SECTION)
    for result in (_result(tiny_model), _result(tiny_model, qa=FAILED)):
        record = json.loads(to_json(to_record(result)))
        check_schema(record)
        assert set(record["qa"]) <= set(qa_fields)
        for finding in record["qa"]["reasons"] + record["qa"]["warnings"]:
            assert set(finding) == {"code", "message"}

"""ricecli/pipeline.py: one real case through classify and explain (tiny exported ensemble, real
preparation), the QA refusal, and the stage stopwatch."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import SimpleITK as sitk

from ricecli import pipeline
from ricecli.explain.occlusion import OcclusionSettings
from ricecli.prepare import CaseInputs, PreparedCase
from ricecli.result import to_json

COARSE = OcclusionSettings(cube_mm=36.0, stride_mm=36.0)


@pytest.fixture(scope="module")
def opened(tiny_model):
    return pipeline.open_model(tiny_model, "cpu")


@pytest.fixture(scope="module")
def classified(opened, synthetic_case) -> pipeline.Classified:
    model, engine = opened
    inputs = CaseInputs(synthetic_case["post_op"], synthetic_case["event"],
                        synthetic_case["dose"])
    return pipeline.classify(inputs, model, engine)


def test_stopwatch_adds_up_each_stage_in_the_order_they_ran():
    watch = pipeline.Stopwatch()
    for name in ("b", "a", "b"):
        with watch.stage(name):
            time.sleep(0.02)
    assert list(watch.timings_s) == ["b", "a"]
    assert watch.timings_s["b"] >= 0.04 and watch.timings_s["a"] >= 0.02


def test_classify_gives_the_record_and_the_prepared_case_apart(classified, opened,
                                                                 synthetic_case):
    model, engine = opened
    record = classified.record
    assert isinstance(classified.case, PreparedCase)
    assert json.loads(to_json(record)) == record  # plain JSON data: the case never rides in it
    assert classified.labelled and record["label"] in model.spec.classes
    assert record["inputs"]["event"] == str(synthetic_case["event"])
    timings = record["timings_s"]
    assert {"prepare", "infer", "total"} <= set(timings) and "timings_s" not in record["qa"]
    assert {k for k in timings if k.startswith("prepare.")} == {
        f"prepare.{k}" for k in classified.case.timings_s}
    # the stages lie within the total, and the preparation's sub-stages within "prepare"
    assert timings["prepare"] + timings["infer"] <= timings["total"] + 1e-3
    assert sum(v for k, v in timings.items() if k.startswith("prepare.")) <= \
        timings["prepare"] + 1e-2
    # the record's answer is the engine's answer on the prepared case
    from ricecli.prepare import to_tensor

    probs, _ = engine.run(to_tensor(classified.case, model.spec)[None])
    raw = record["probabilities_uncalibrated"]
    assert [raw[c] for c in model.spec.classes] == pytest.approx(probs[0].tolist(), abs=1e-6)


def test_explain_writes_maps_and_the_case_record(classified, opened, tmp_path):
    model, engine = opened
    explained = pipeline.explain(classified, model, engine, COARSE, tmp_path,
                                 extra={"case_id": "c1"})
    assert {"occlusion.nii.gz", "overview.png", "explain.json"} <= {
        p.name for p in tmp_path.iterdir()}
    rec = json.loads((tmp_path / "explain.json").read_text())
    assert rec["case_id"] == "c1" and rec["label"] == classified.record["label"]
    assert rec["inputs"] == classified.record["inputs"]  # every input, --dose-frame included
    assert "dose_frame" in rec["inputs"] and rec["qa"] == classified.record["qa"]
    assert rec["model"]["sha256"] == model.sha256 and rec["target"] == explained.target
    heat = sitk.ReadImage(str(tmp_path / "occlusion.nii.gz"))
    assert heat.GetSize() == classified.case.event_image.GetSize()


def test_qa_failure_withholds_the_label_unless_accepted(opened, synthetic_case, tmp_path):
    model, engine = opened
    low = tmp_path / "low_dose.nii.gz"  # peaks at ~1.8 Gy: no brain RT plan does that
    sitk.WriteImage(sitk.ReadImage(str(synthetic_case["dose"])) * 0.03, str(low))
    inputs = CaseInputs(synthetic_case["post_op"], synthetic_case["event"], low)
    refused = pipeline.classify(inputs, model, engine)
    assert not refused.labelled and refused.record["probabilities"] is None
    assert refused.result.qa.verdict == "fail"
    assert [f.code for f in refused.result.qa.reasons] == ["dose_peak_low"]
    folder = tmp_path / "explain"
    folder.mkdir()
    pipeline.write_unexplained(refused, model, engine, folder)
    rec = json.loads((folder / "explain.json").read_text())
    assert rec["label"] is None and rec["qa"]["verdict"] == "fail"
    assert [p.name for p in folder.iterdir()] == ["explain.json"]
    accepted = pipeline.classify(inputs, model, engine, accept_qa_failure=True)
    assert accepted.labelled and accepted.record["label_despite_qa_failure"] is True
    assert np.isclose(sum(accepted.record["probabilities"].values()), 1.0)

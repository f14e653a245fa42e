"""ricecli.qa: the verdict (pass | warn | fail) that decides whether a case gets a label, and the
one table of thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from model_fixtures import run_cli
from prepare_fixtures import EVENT_POSE, grid, pose, scan

from ricecli.outputs.console import qa_lines
from ricecli.qa import LIMITS, agreement, assess, high_dose_in_brain, threshold_table
from ricecli.result import QAReport
from ricecli.simulate.treatment import centred_dose

MIN_AGREEMENT = LIMITS.min_agreement


def _qa(notes: tuple[str, ...] = (), **changes) -> QAReport:
    """The verdict on a clean case's measures with `changes` made."""
    reg = {"likely_failed": False, "reasons": [], "ncc": 0.9}
    measures = {"registration": {"post_op_to_event": dict(reg), "event_to_template": dict(reg)},
                "dose": {"coverage_of_brain": 1.0, "max_in_brain_gy": 60.0},
                "fov_coverage_of_brain": {"post_op": 1.0, "event": 1.0},
                "agreement": {"post_op_event": 0.8}}
    return assess({**measures, **changes}, list(notes))


def test_a_clean_case_passes():
    qa = _qa()
    assert qa.verdict == "pass" and qa.reasons == [] and qa.warnings == []


@pytest.mark.parametrize("change, code, words", [
    ({"registration": {"post_op_to_event": {"likely_failed": True,
                                            "reasons": ["only 40% on the head"]}}},
     "registration_failed", "registration post-op -> event failed (only 40% on the head)"),
    ({"agreement": {"post_op_event": 0.3}}, "scans_disagree", "do not line up"),
    ({"dose": {"coverage_of_brain": 0.13, "max_in_brain_gy": 60.0}}, "dose_coverage_low",
     "the dose grid covers only 13% of the brain (at least 75% needed)"),
    ({"dose": {"coverage_of_brain": 0.55, "max_in_brain_gy": 60.0}},  # half the brain
     "dose_coverage_low", "the dose grid covers only 55% of the brain"),
    ({"dose": {"coverage_of_brain": 1.0, "max_in_brain_gy": 30.0, "high_dose_in_brain": 0.3}},
     "dose_off_brain",
     "only 30% of the dose's high-dose region (>= 50% of its maximum) lies in this brain"),
    ({"dose": {"coverage_of_brain": 1.0, "max_in_brain_gy": 0.58}}, "dose_peak_low",
     "peaks at 0.58 Gy"),
    ({"fov_coverage_of_brain": {"post_op": 1.0, "event": 0.3}}, "fov_coverage_low",
     "event scan covers only 30%"),
])
def test_each_fail_has_its_code_and_sentence(change, code, words):
    qa = _qa(**change)
    assert qa.verdict == "fail" and [f.code for f in qa.reasons] == [code]
    assert words in qa.reasons[0].message and qa.why() == qa.reasons


def test_partial_dose_and_unusual_peak_warn_and_reach_the_summary():
    qa = _qa(dose={"coverage_of_brain": 0.85, "max_in_brain_gy": 14.0},
             notes=("event: folder held 2 series; took T1c",))
    assert qa.verdict == "warn" and qa.reasons == []
    assert [f.code for f in qa.warnings] == ["dose_coverage_partial", "dose_peak_unusual"]
    lines = qa_lines(qa)
    assert lines[0].startswith("QA warn: the dose grid covers only 85% of the brain; ")
    assert "peaks at 14.0 Gy" in lines[0] and lines[1] == "note: event: folder held 2 series; " \
        "took T1c"


@pytest.mark.parametrize("coverage, peak, verdict", [
    (0.7499, 60.0, "fail"), (0.75, 60.0, "warn"), (0.8999, 60.0, "warn"), (0.90, 60.0, "pass"),
    (1.0, 4.99, "fail"), (1.0, 5.0, "warn"), (1.0, 19.99, "warn"), (1.0, 20.0, "pass"),
    (1.0, 90.0, "pass"), (1.0, 90.01, "warn")])
def test_the_dose_limits_split_where_the_table_says(coverage, peak, verdict):
    assert _qa(dose={"coverage_of_brain": coverage, "max_in_brain_gy": peak}).verdict == verdict


def test_every_threshold_says_what_it_guards_and_what_set_it():
    rows = threshold_table()
    assert len({r["name"] for r in rows}) == len(rows) > 20
    assert {r["effect"] for r in rows} == {"refuse", "route", "flag", "fail", "warn"}
    assert all(r["guards"] and r["calibrated_on"] for r in rows)
    by_name = {r["name"]: r for r in rows}
    # the prepare-time refusal and the verdict's fail are two limits with two names
    assert by_name["refuse_dose_coverage"]["value"] == 0.01
    assert by_name["refuse_dose_coverage"]["effect"] == "refuse"
    assert by_name["min_dose_coverage"]["value"] == 0.75
    assert by_name["min_dose_coverage"]["effect"] == "fail"


def test_agreement_high_for_the_same_anatomy_low_for_another():
    reference = grid((56, 64, 56), 3.0)
    a = sitk.GetArrayFromImage(scan(pose(*EVENT_POSE), reference))
    brain = a > 200
    rng = np.random.default_rng(0)
    same = a + rng.normal(0, 30, a.shape)
    assert agreement(a, same, brain, (3.0, 3.0, 3.0)) > 0.8
    # another "patient": the same template folded differently (mirrored and shifted 12 mm)
    other = np.roll(a[:, :, ::-1], 4, axis=0)
    assert agreement(a, other, brain, (3.0, 3.0, 3.0)) < MIN_AGREEMENT


# --- through classify: no label on fail, exit 3, the JSON says why ----------------------------

def _low_dose_case(synthetic_case: dict, tmp_path) -> dict:
    """The synthetic case with a dose that peaks at ~1.8 Gy: no brain RT plan does that."""
    low = tmp_path / "low_dose.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(synthetic_case["dose"])) * 0.03, str(low))
    return {**synthetic_case, "dose": low}


@pytest.mark.slow
def test_qa_fail_gives_no_label_exit_3_unless_accepted(tiny_model, synthetic_case, tmp_path,
                                                       capsys):
    case = _low_dose_case(synthetic_case, tmp_path)
    out = tmp_path / "r.json"
    args = ["classify", "--t1", str(case["post_op"]), "--t1", str(case["event"]), "--dose",
            str(case["dose"]), "--model", str(tiny_model), "--device", "cpu", "--json", str(out)]
    code, text, err = run_cli(args, capsys)
    assert code == 3, err
    record = json.loads(out.read_text())
    assert record["label"] is None and record["probabilities"] is None
    assert record["qa"]["verdict"] == "fail"
    assert [r["code"] for r in record["qa"]["reasons"]] == ["dose_peak_low"]
    assert "peaks at" in record["qa"]["reasons"][0]["message"]
    text = " ".join(text.split())
    assert "QA failed, no label: the dose peaks at" in text and "p(recurrence)" not in text
    assert text.count("QA") == 1 and text.count("peaks at") == 1  # said once

    code, text, err = run_cli([*args, "--overwrite", "--accept-qa-failure"], capsys)
    assert code == 0, err
    record = json.loads(out.read_text())
    probs = record["probabilities"]
    assert record["label"] == max(probs, key=probs.get) and record["label_despite_qa_failure"]
    assert record["qa"]["verdict"] == "fail"  # the verdict stands; only the label is kept
    assert "label given anyway" in " ".join(text.split())


# --- calibration facts on real scans (docs/qa.md) ----------------------------------------------

def _prepared_verdict(post, event, tmp_path) -> QAReport:
    from ricecli.prepare import CaseInputs, prepare_case
    from ricecli.spec import PRESETS

    dose = tmp_path / "dose.nii.gz"
    sitk.WriteImage(centred_dose(sitk.ReadImage(str(post), sitk.sitkFloat32)), str(dose))
    return prepare_case(CaseInputs(post, event, dose), PRESETS["edge"]).qa


@pytest.mark.slow
def test_different_patients_fail(shared_data, tmp_path):
    gli = shared_data / "mri/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz"
    met = next((shared_data / "mri/BraTS-MET-00110-000").glob("*t1c.nii.gz"))
    qa = _prepared_verdict(gli, met, tmp_path)
    assert qa.verdict == "fail"
    assert "scans_disagree" in [f.code for f in qa.reasons], qa.reasons


@pytest.mark.slow
def test_same_patient_t1_to_t1c_does_not_fail(shared_data, tmp_path):
    folder = shared_data / "mri/BraTS-GLI-00001-000"
    qa = _prepared_verdict(folder / "BraTS-GLI-00001-000-t1n.nii.gz",
                           folder / "BraTS-GLI-00001-000-t1c.nii.gz", tmp_path)
    assert qa.measures["agreement"]["post_op_event"] > MIN_AGREEMENT
    assert qa.verdict != "fail", qa.reasons


def test_the_summary_says_which_brain_mask_was_used():
    qa = _qa(brain_mask="extracted (deepbet)")
    assert qa_lines(qa) == ["QA pass", "brain mask: extracted (deepbet)"]


def test_a_fail_reason_is_not_repeated_as_a_warning():
    qa = _qa(registration={"post_op_to_event": {"likely_failed": True, "reasons": ["x"]}},
             dose={"coverage_of_brain": 0.4, "max_in_brain_gy": 60.0})
    assert qa.warnings == []  # neither the registration nor the coverage warns as well
    assert [f.message for f in qa.reasons] == [
        "registration post-op -> event failed (x)",
        "the dose grid covers only 40% of the brain (at least 75% needed): the dose of another "
        "patient or frame, or a grid cut short"]


def test_high_dose_in_brain():
    brain = np.zeros((10, 10, 10), bool)
    brain[2:8, 2:8, 2:8] = True
    dose = np.zeros(brain.shape)
    dose[3:6, 3:6, 3:6] = 60.0  # the target: in the brain
    assert high_dose_in_brain(dose, brain, 60.0) == 1.0
    dose[:, :, 8:] = 60.0  # as much again outside it: 27 of 227 high-dose voxels inside
    assert high_dose_in_brain(dose, brain, 60.0) == pytest.approx(27 / 227, abs=1e-4)
    assert high_dose_in_brain(dose, brain, 200.0) == 0.0  # the grid's hot spot is elsewhere
    assert high_dose_in_brain(dose * 0, brain, 0.0) is None


def test_prepare_prints_one_total():
    from ricecli.commands.prepare import summary_lines as prepare_lines
    from ricecli.prepare import PreparedCase

    qa = _qa()
    for reg in qa.measures["registration"].values():
        reg.update(metric=-0.5, iterations=10, seconds=1.0)
    qa.measures["dose"].update(max_gy=60.0)
    case = PreparedCase({}, np.zeros(1), sitk.Image(), sitk.Image(), sitk.Transform(), qa,
                        timings_s={"read": 1.0, "register": 2.0, "total": 3.5})
    (line,) = [x for x in prepare_lines(case, 3.6) if x.startswith("time:")]
    assert line == "time: read 1.00 s, register 2.00 s; total 3.60 s"

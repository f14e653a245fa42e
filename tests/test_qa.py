"""ricecli.qa: the verdict (pass | warn | fail) that decides whether a case gets a label."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from model_fixtures import run_cli
from prepare_fixtures import EVENT_POSE, grid, pose, scan

from ricecli.qa import MIN_AGREEMENT, agreement, decide, high_dose_in_brain, summary_lines
from ricecli.simulate.posed import centred_dose


def _qa(**changes) -> dict:
    reg = {"likely_failed": False, "reasons": [], "ncc": 0.9}
    qa = {"registration": {"post_op_to_event": dict(reg), "event_to_template": dict(reg)},
          "dose": {"coverage_of_brain": 1.0, "max_in_brain_gy": 60.0},
          "fov_coverage_of_brain": {"post_op": 1.0, "event": 1.0},
          "agreement": {"post_op_event": 0.8}, "warnings": [], "notes": []}
    for key, value in changes.items():
        qa[key] = value
    return qa


def test_a_clean_case_passes():
    qa = decide(_qa())
    assert qa["verdict"] == "pass" and qa["reasons"] == []


@pytest.mark.parametrize("change, words", [
    ({"registration": {"post_op_to_event": {"likely_failed": True,
                                            "reasons": ["only 40% on the head"]}}},
     "registration post-op -> event failed (only 40% on the head)"),
    ({"agreement": {"post_op_event": 0.3}}, "do not line up"),
    ({"dose": {"coverage_of_brain": 0.13, "max_in_brain_gy": 0.58}},
     "the dose grid covers only 13% of the brain (at least 75% needed)"),
    ({"dose": {"coverage_of_brain": 0.55, "max_in_brain_gy": 60.0}},  # half the brain
     "the dose grid covers only 55% of the brain"),
    ({"dose": {"coverage_of_brain": 1.0, "max_in_brain_gy": 30.0, "high_dose_in_brain": 0.3}},
     "only 30% of the dose's high-dose region (>= 50% of its maximum) lies in this brain"),
    ({"dose": {"coverage_of_brain": 1.0, "max_in_brain_gy": 0.58}}, "peaks at 0.58 Gy"),
    ({"fov_coverage_of_brain": {"post_op": 1.0, "event": 0.3}}, "event scan covers only 30%"),
])
def test_fail_reasons(change, words):
    qa = decide(_qa(**change))
    assert qa["verdict"] == "fail" and any(words in r for r in qa["reasons"]), qa["reasons"]


def test_warnings_and_unusual_dose_warn_and_reach_the_summary():
    qa = decide(_qa(warnings=["the dose grid covers only 85% of the brain"],
                    dose={"coverage_of_brain": 0.85, "max_in_brain_gy": 14.0},
                    notes=["event: folder held 2 series; took T1c"]))
    assert qa["verdict"] == "warn" and len(qa["reasons"]) == 2
    lines = summary_lines(qa)
    assert lines[0].startswith("QA warn: the dose grid covers only 85%")
    assert "peaks at 14.0 Gy" in lines[0] and lines[1] == "note: event: folder held 2 series; " \
        "took T1c"


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
    assert any("peaks at" in r for r in record["qa"]["reasons"])
    text = " ".join(text.split())
    assert "QA failed, no label: the dose peaks at" in text and "p(recurrence)" not in text
    assert text.count("QA") == 1 and text.count("peaks at") == 1  # said once

    code, text, err = run_cli([*args, "--overwrite", "--accept-qa-failure"], capsys)
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["label"] in ("RICE", "recurrence") and record["label_despite_qa_failure"]
    assert "label given anyway" in " ".join(text.split())


# --- calibration facts on real scans (docs/qa.md) ----------------------------------------------

def _prepared_verdict(post, event, tmp_path) -> dict:
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
    assert qa["verdict"] == "fail"
    assert any("do not line up" in r for r in qa["reasons"]), qa["reasons"]


@pytest.mark.slow
def test_same_patient_t1_to_t1c_does_not_fail(shared_data, tmp_path):
    folder = shared_data / "mri/BraTS-GLI-00001-000"
    qa = _prepared_verdict(folder / "BraTS-GLI-00001-000-t1n.nii.gz",
                           folder / "BraTS-GLI-00001-000-t1c.nii.gz", tmp_path)
    assert qa["agreement"]["post_op_event"] > MIN_AGREEMENT
    assert qa["verdict"] != "fail", qa["reasons"]


def test_the_summary_says_which_brain_mask_was_used():
    qa = decide(_qa())
    qa["brain_mask"] = "extracted (deepbet)"
    assert summary_lines(qa)[-1] == "brain mask: extracted (deepbet)"


def test_a_fail_reason_is_not_repeated_as_a_warning():
    qa = decide(_qa(warnings=["the dose grid covers only 40% of the brain", "other"],
                    dose={"coverage_of_brain": 0.4, "max_in_brain_gy": 60.0}))
    assert qa["warnings"] == ["other"]
    assert [r for r in qa["reasons"] if "covers only" in r] == [
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

    qa = decide(_qa())
    for reg in qa["registration"].values():
        reg.update(metric=-0.5, iterations=10, seconds=1.0)
    qa["dose"].update(max_gy=60.0)
    qa["timings_s"] = {"read": 1.0, "register": 2.0, "total": 3.5}
    (line,) = [x for x in prepare_lines(qa, 3.6) if x.startswith("time:")]
    assert line == "time: read 1.00 s, register 2.00 s; total 3.60 s"

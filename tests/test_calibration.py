"""inference/calibration.py: temperature per member, uncertainty; classify/batch/explain report
them and write DICOM (--dicom-out) on a real calibrated tiny ONNX model and real registration."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from model_fixtures import TINY_SPEC, export_tiny_model, run_cli

from ricecli.inference.calibration import assess, calibrate_members, member_logits
from ricecli.inference.model import load_model
from ricecli.io.dicom_write import write_mr_series
from ricecli.spec import Calibration, Spec

CAL = Calibration(temperature=2.5, conformal_alpha=0.1, conformal_qhat=0.6, n_cases=170)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_members_calibrated_one_by_one_then_averaged():
    cal = Calibration(temperature=2.0, conformal_alpha=0.1, conformal_qhat=0.7)
    members = np.array([[0.2, 0.8], [0.6, 0.4]])
    got = calibrate_members(members, cal)
    want = _sigmoid(np.log(members[:, 1] / members[:, 0]) / 2.0)
    np.testing.assert_allclose(got[:, 1], want, atol=1e-12)
    spec = Spec(calibration=cal)
    rec = assess(members.mean(0), members, spec)
    assert rec.probabilities["recurrence"] == pytest.approx(want.mean())
    assert [m["recurrence"] for m in rec.members] == pytest.approx(want)
    u = rec.uncertainty
    assert u["agreement"] == 0.5 and u["member_sd_p_recurrence"] == pytest.approx(
        np.std(want))
    # p = 0.56: both labels within qhat 0.7 -> uncertain
    assert u["prediction_set"] == ["RICE", "recurrence"] and u["uncertain"]
    sure = assess(np.array([0.02, 0.98]), np.array([[0.02, 0.98], [0.01, 0.99]]), spec)
    assert sure.uncertainty["prediction_set"] == ["recurrence"]
    assert not sure.uncertainty["uncertain"] and sure.uncertainty["agreement"] == 1.0
    split = assess(np.array([0.5, 0.5]), np.array([[0.01, 0.99], [0.99, 0.01]]), spec)
    assert "members confidently disagree (RICE vs recurrence)" in split.uncertainty["reasons"]
    plain = assess(members.mean(0), members, Spec())  # an old model: no calibration
    assert plain.calibration["applied"] is False
    assert plain.probabilities["recurrence"] == pytest.approx(0.6)
    assert plain.uncertainty["uncertain"]  # votes split 1:1
    assert not assess(np.array([0.3, 0.7]), np.array([[0.2, 0.8], [0.4, 0.6]]),
                      Spec()).uncertainty["uncertain"]


def test_calibration_can_turn_the_answer():
    # raw mean p(recurrence) 0.60 (recurrence); after T = 3 the two moderate recurrence votes
    # lose more than the one near-certain RICE vote gains: the calibrated mean says RICE
    members = np.array([[0.1, 0.9], [0.1, 0.9], [0.9999, 0.0001]])
    rec = assess(members.mean(0), members, Spec(calibration=Calibration(temperature=3.0)))
    assert members.mean(0)[1] == pytest.approx(0.6, abs=1e-4)
    assert max(rec.probabilities, key=rec.probabilities.get) == "RICE"


def test_softmax_is_scipy_bit_for_bit_as_the_hand_written_one_was():
    rng = np.random.default_rng(7)
    cal = Calibration(temperature=1.7, prob_floor=1e-7)
    for _ in range(200):
        p = rng.dirichlet(np.ones(2), size=int(rng.integers(1, 6)))
        z = member_logits(p, cal.prob_floor) / cal.temperature
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        assert np.array_equal(calibrate_members(p, cal), e / e.sum(axis=-1, keepdims=True))


def test_spec_calibration_field_is_backward_compatible():
    old = Spec()
    text = old.to_json()
    assert "calibration" not in text and Spec.from_json(text) == old
    new = Spec(calibration=Calibration(temperature=1.7, conformal_alpha=0.1,
                                       conformal_qhat=0.66, n_cases=170))
    assert Spec.from_json(new.to_json()) == new
    assert new.cache_key() == old.cache_key()
    assert new.with_channels(("event", "dose")).calibration == new.calibration
    future = json.loads(new.to_json())
    future["calibration"]["some_later_field"] = 1  # newer writers may add fields
    assert Spec.from_dict(future) == new
    with pytest.raises(ValueError):
        Calibration(temperature=-1.0)


# --- the commands, end to end ------------------------------------------------------------------

@pytest.fixture(scope="module")
def calibrated_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("calmodel") / "ricenet-cal.onnx"
    return export_tiny_model(path, spec=replace(TINY_SPEC, calibration=CAL))


@pytest.fixture(scope="module")
def dicom_event(tmp_path_factory, synthetic_case):
    """The synthetic case's event scan as a DICOM MR series folder."""
    image = sitk.ReadImage(str(synthetic_case["event"]), sitk.sitkFloat32)
    return write_mr_series(image, tmp_path_factory.mktemp("dicom") / "event",
                           series_description="event T1c")


def _case_args(case, event, model, *extra):
    return ["--t1", str(case["post_op"]), "--t1", str(event), "--dose", str(case["dose"]),
            "--model", str(model), "--device", "cpu", *extra]


@pytest.mark.slow
def test_classify_reports_calibration_and_writes_the_sr(tmp_path, calibrated_model,
                                                        synthetic_case, dicom_event, capsys):
    out = tmp_path / "dcm"
    code, stdout, _ = run_cli(["classify", *_case_args(
        synthetic_case, dicom_event, calibrated_model, "--json", str(tmp_path / "r.json"),
        "--dicom-out", str(out))], capsys)
    assert code == 0
    r = json.loads((tmp_path / "r.json").read_text())
    raw = np.array([[m["probabilities"]["RICE"], m["probabilities"]["recurrence"]]
                    for m in r["members"]])
    want = _sigmoid(np.log(raw[:, 1] / raw[:, 0]) / CAL.temperature).mean()
    assert r["probabilities"]["recurrence"] == pytest.approx(want, abs=1e-6)
    assert r["probabilities_uncalibrated"]["recurrence"] == pytest.approx(raw[:, 1].mean(),
                                                                      abs=1e-6)
    assert r["calibration"]["temperature"] == CAL.temperature
    assert isinstance(r["uncertainty"]["uncertain"], bool)
    assert "calibrated: temperature 2.50" in stdout
    assert ("UNCERTAIN" in stdout) == r["uncertainty"]["uncertain"]
    (sr_file,) = out.iterdir()
    assert sr_file.name.startswith("SR_") and sr_file.suffix == ".dcm"
    ds = pydicom.dcmread(sr_file)
    src = pydicom.dcmread(next(dicom_event.glob("*.dcm")))
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
    assert ds.ContentSequence  # TID 1500 tree


@pytest.mark.slow
def test_explain_writes_sr_and_parametric_map(tmp_path, calibrated_model, synthetic_case,
                                              dicom_event):
    from ricecli.outputs.parametric_map import read_parametric_map

    out, dcm = tmp_path / "maps", tmp_path / "dcm"
    code, _, _ = run_cli(["explain", *_case_args(synthetic_case, dicom_event, calibrated_model,
                                                 "--out", str(out), "--cube-mm", "36",
                                                 "--stride-mm", "36", "--dicom-out",
                                                 str(dcm))])
    assert code == 0
    assert sorted(p.name[:3] for p in dcm.iterdir()) == ["PM_", "SR_"]
    occ = sitk.ReadImage(str(out / "occlusion.nii.gz"))
    back = read_parametric_map(next(dcm.glob("PM_*.dcm")))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dicom_event)))
    event = reader.Execute()
    assert back.GetSize() == event.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), event.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(back.GetSpacing(), event.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), event.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(occ),
                               atol=1e-6)


def test_nifti_event_with_dicom_out_exits_2(tmp_path, calibrated_model, synthetic_case,
                                            capsys):
    out = tmp_path / "dcm"
    code, _, err = run_cli(["classify", *_case_args(synthetic_case, synthetic_case["event"],
                                                    calibrated_model, "--dicom-out",
                                                    str(out))], capsys)
    assert code == 2 and not out.exists()
    line = err.strip().splitlines()[-1]
    assert "is not a DICOM series, so --dicom-out has no study or series to reference" in line
    assert str(synthetic_case["event"]) in line and "Fix:" in line


@pytest.mark.slow
def test_batch_marks_uncertain_and_writes_dicom(tmp_path, calibrated_model, synthetic_case,
                                                dicom_event):
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "post_op", "event", "dose", "label"])
        w.writerow(["c1", synthetic_case["post_op"], dicom_event, synthetic_case["dose"],
                    "recurrence"])
    results, dcm = tmp_path / "results.csv", tmp_path / "dcm"
    code, _, _ = run_cli(["batch", str(manifest), "--out", str(results), "--model",
                          str(calibrated_model), "--device", "cpu", "--dicom-out", str(dcm)])
    assert code == 0
    (row,) = list(csv.DictReader(open(results, newline="")))
    assert row["status"] == "ok" and row["uncertain"] in ("0", "1")
    assert "p_recurrence_raw" not in row  # the CSV shows one p: the calibrated one
    assert len(list((dcm / "c1").glob("SR_*.dcm"))) == 1
    loaded = load_model(calibrated_model)
    assert loaded.spec.calibration == CAL

"""`ricecli study IN_DIR --out OUT_DIR` on one patient's studies built by tests/cohort_tree.py:
SR + parametric map + result.json for a labelled case (read back with pydicom and highdicom),
and exit 2 with an SR-free result.json naming what is missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from cohort_tree import P1, P3, P4
from model_fixtures import run_cli

hd = pytest.importorskip("highdicom")


def one_patient(truth, patient: str, dest: Path, planning_only: bool = False) -> Path:
    """A study folder as a router hands it over: one patient's studies (or only the planning
    study), copied from the shared export tree (NBIA layout: patient/study/series)."""
    source = truth.root / patient
    for name in sorted(p.name for p in source.iterdir()):
        if planning_only and "PLANNING" not in name:
            continue
        shutil.copytree(source / name, dest / patient / name)
    return dest


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and mtime: an input must stay untouched."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def check_dicom_outputs(out: Path, record: dict, event_series_uid: str) -> None:
    """The SR (and PM when written) are valid DICOM, say research use only and reference the
    event series; highdicom reads both back."""
    names = record["dicom_files"]
    assert sorted(p.name for p in out.glob("*.dcm")) == sorted(names)
    sr_path = next(out / n for n in names if n.startswith("SR_"))
    sr = pydicom.dcmread(sr_path)
    assert sr.Modality == "SR" and "RESEARCH USE ONLY" in sr.SeriesDescription
    assert sr.StudyInstanceUID == record["study"]["event"]["study_uid"]
    referenced = {s.SeriesInstanceUID for st in sr.CurrentRequestedProcedureEvidenceSequence
                  for s in st.ReferencedSeriesSequence}
    assert referenced == {event_series_uid}
    (group,) = hd.sr.srread(sr_path).content.get_image_measurement_groups()
    values = {m.name.value: m.value for m in group.get_measurements()}
    assert values["RN001"] == pytest.approx(record["probabilities"]["recurrence"])
    for name in names:
        if name.startswith("PM_"):
            pm = pydicom.dcmread(out / name)
            assert "RESEARCH USE ONLY" in pm.SeriesDescription
            assert {s.SeriesInstanceUID for s in pm.ReferencedSeriesSequence} == \
                {event_series_uid}
            assert hd.imread(out / name).get_volume().spatial_shape[0] > 1


@pytest.mark.slow
def test_study_folder_to_sr_and_map(nbia_tree, tmp_path, capsys):
    """P4: planned on its MR, one usable follow-up (the second is a tie): exit 0, the SR and
    the occlusion map on the event series, result.json, overview.png, the status line."""
    in_dir = one_patient(nbia_tree, P4, tmp_path / "in")
    before = snapshot(in_dir)
    out = tmp_path / "out"
    code, text, err = run_cli(["study", str(in_dir), "--out", str(out), "--device", "cpu"],
                              capsys)
    assert code == 0, err
    record = json.loads((out / "result.json").read_text())
    truth = nbia_tree.patients[P4]
    assert record["status"] == "labelled" and record["label"] in ("recurrence", "RICE")
    assert record["study"]["post_op"]["series_uid"] == truth.post_op_series_uid
    assert record["study"]["event"]["series_uid"] == truth.event_series_uids[0]
    assert record["study"]["dose_frame_series_uid"] is None  # planned on the post-op MR
    assert len(record["dicom_files"]) == 2  # SR + parametric map
    check_dicom_outputs(out, record, truth.event_series_uids[0])
    names = {p.name for p in out.iterdir()}
    assert names == {*record["dicom_files"], "result.json", "overview.png", "status.txt"}
    status = (out / "status.txt").read_text().strip()
    assert text.splitlines()[0] == status and status.startswith(f"ricecli study: {record['label']}")
    assert snapshot(in_dir) == before


@pytest.mark.parametrize(("patients", "planning_only", "code"), [
    ([P3], False, "no_dose"),  # two MR studies, no RT objects
    ([P4], True, "no_event"),  # the planning study only
    ([P1, P4], False, "several_patients"),
])
def test_missing_input_exit_2_and_result_json(nbia_tree, tmp_path, capsys, patients,
                                              planning_only, code):
    in_dir = tmp_path / "in"
    for patient in patients:
        one_patient(nbia_tree, patient, in_dir, planning_only)
    out = tmp_path / "out"
    exit_code, text, _ = run_cli(["study", str(in_dir), "--out", str(out)], capsys)
    assert exit_code == 2
    record = json.loads((out / "result.json").read_text())
    assert record["status"] == "missing_input" and record["label"] is None
    assert record["missing"]["code"] == code and record["missing"]["reason"]
    assert sorted(p.name for p in out.iterdir()) == ["result.json", "status.txt"]  # no SR
    assert f"missing input {code}" in text.splitlines()[0]


def test_refused_folders_write_nothing(nbia_tree, tmp_path, capsys):
    in_dir = one_patient(nbia_tree, P3, tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")
    code, _, err = run_cli(["study", str(in_dir), "--out", str(out)], capsys)
    assert code == 2 and "not an empty folder" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    code, _, err = run_cli(["study", str(in_dir), "--out", str(in_dir / "x")], capsys)
    assert code == 2 and not (in_dir / "x").exists()
    code, _, err = run_cli(["study", str(in_dir)], capsys)
    assert code == 2 and "--out" in err


@pytest.mark.slow
def test_qa_failure_exit_3_without_sr(nbia_tree, tmp_path, capsys):
    """P4 with its dose scaled to 1.2 Gy (a wrong unit, say): QA fails, no label, no SR."""
    in_dir = one_patient(nbia_tree, P4, tmp_path / "in")
    for path in in_dir.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        if ds.Modality == "RTDOSE":
            ds.DoseGridScaling = float(ds.DoseGridScaling) * 0.02
            ds.save_as(path)
    out = tmp_path / "out"
    code, text, _ = run_cli(["study", str(in_dir), "--out", str(out), "--device", "cpu"], capsys)
    assert code == 3
    record = json.loads((out / "result.json").read_text())
    assert record["status"] == "qa_failed" and record["label"] is None
    assert record["dicom_files"] == [] and not list(out.glob("*.dcm"))
    assert not (out / "overview.png").exists()  # nothing explained without a label
    assert "QA failed" in text.splitlines()[0]


def test_case_inputs_give_each_series_alone(nbia_tree, tmp_path):
    """A router's flat folder (every file of every study side by side): each series reaches the
    pipeline as a folder of links to its own files, so the reader reads only those headers."""
    from ricecli.study import case_inputs, choose_case

    source, flat = one_patient(nbia_tree, P4, tmp_path / "in"), tmp_path / "flat"
    flat.mkdir()
    for k, path in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        shutil.copyfile(path, flat / f"{k:05d}.dcm")
    case = choose_case(flat)
    assert not hasattr(case, "code"), case
    inputs = case_inputs(flat, case, tmp_path / "work")
    for folder, series in ((inputs.post_op, case.post_op.t1c), (inputs.event, case.event.t1c)):
        assert Path(folder).is_dir()
        linked = sorted(Path(p).resolve() for p in Path(folder).iterdir())
        assert linked == sorted((flat / f).resolve() for f in series.files)

"""Sanity of the DICOM export trees the `ricecli cohort` tests build (tests/cohort_tree.py):
the files read back, series are consistent, the truth agrees with the headers, the layouts hold
the same instances and the REG matrix agrees with the images."""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import cohort_tree
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from cohort_tree import P1, P2, P3, P4, SKIP_CODES, TreeTruth, build_tree, write_labels_csv
from pydicom.errors import InvalidDicomError

from ricecli.io.dicom import read_dicom_series


@pytest.fixture(scope="module")
def nbia(nbia_tree: TreeTruth) -> TreeTruth:
    """The NBIA-layout tree the cohort tests share (conftest.py: built once a session)."""
    return nbia_tree


@pytest.fixture(scope="module")
def files(nbia: TreeTruth) -> Files:
    return read_tree(nbia, pixels=True)


Files = tuple[dict[str, tuple[Path, pydicom.Dataset]], dict[str, list[pydicom.Dataset]]]


def read_tree(truth: TreeTruth, pixels: bool = False) -> Files:
    """Every readable file of the tree: by SOPInstanceUID, and series -> datasets."""
    by_sop: dict[str, tuple[Path, pydicom.Dataset]] = {}
    series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in sorted(p for p in truth.root.rglob("*") if p.is_file()):
        if path in truth.broken_files:
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
        assert ds.SOPInstanceUID not in by_sop, f"{path}: SOPInstanceUID used twice"
        by_sop[ds.SOPInstanceUID] = (path, ds)
        series[ds.SeriesInstanceUID].append(ds)
    return by_sop, series


def test_every_file_reads_back_and_series_are_consistent(nbia: TreeTruth, files: Files) -> None:
    by_sop, series = files
    on_disk = [p for p in nbia.root.rglob("*") if p.is_file()]
    assert len(on_disk) == nbia.n_files == len(by_sop) + len(nbia.broken_files)
    assert len(nbia.patients) >= 3
    for path, ds in by_sop.values():
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        if "PixelData" in ds:
            assert ds.pixel_array.shape[-2:] == (ds.Rows, ds.Columns)
        # NBIA layout: Patient/MM-DD-YYYY-NA-Study-N/Number.000000-Description-N/1-NN.dcm
        assert path.parent.parent.parent.name == ds.PatientID
        study_date = path.parent.parent.name[:10]
        assert study_date == f"{ds.StudyDate[4:6]}-{ds.StudyDate[6:]}-{ds.StudyDate[:4]}"
        assert path.parent.name.startswith(f"{ds.SeriesNumber}.000000-")
    for uid, slices in series.items():
        for keyword in ("PatientID", "StudyInstanceUID", "SeriesNumber", "Modality",
                        "FrameOfReferenceUID", "ImageOrientationPatient"):
            assert len({str(s.get(keyword)) for s in slices}) == 1, (uid, keyword)
        assert len({p.parent for p, _ in (by_sop[s.SOPInstanceUID] for s in slices)}) == 1
        if slices[0].Modality in ("MR", "CT"):
            assert sorted(int(s.InstanceNumber) for s in slices) == list(range(1, len(slices) + 1))


def test_the_truth_agrees_with_the_headers(nbia: TreeTruth, files: Files) -> None:
    by_sop, series = files
    first = {uid: slices[0] for uid, slices in series.items()}
    rt = defaultdict(list)
    for _, ds in by_sop.values():
        if ds.Modality in ("RTPLAN", "RTSTRUCT", "RTDOSE", "REG"):
            rt[(ds.PatientID, ds.Modality)].append(ds)
    for pid, t in nbia.patients.items():
        if t.no_case_reason is not None:
            assert t.no_case_reason == "no_dose" and pid == P3
            assert not [k for k in rt if k[0] == pid]
            continue
        post_op = first[t.post_op_series_uid]
        assert post_op.PatientID == pid and post_op.Modality == "MR"
        assert "ORIGINAL" in post_op.ImageType
        for date, uid in zip(t.event_dates, t.event_series_uids, strict=True):
            assert first[uid].StudyDate == date > post_op.StudyDate
            assert first[uid].PatientID == pid and first[uid].ImageType[0] == "ORIGINAL"
        assert list(t.event_dates) == sorted(t.event_dates)
        plan = rt[(pid, "RTPLAN")][0]
        struct = rt[(pid, "RTSTRUCT")][0]
        assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == \
            struct.SOPInstanceUID
        ref_series = (struct.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
                      .RTReferencedSeriesSequence[0].SeriesInstanceUID)
        planning_image = t.dose_frame_series_uid or t.post_op_series_uid
        assert ref_series == planning_image
        for sop in (t.dose_sop_uid, *t.beam_dose_sop_uids):
            if sop is None:
                continue
            dose = by_sop[sop][1]
            assert dose.Modality == "RTDOSE" and dose.PatientID == pid
            assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID
            assert dose.FrameOfReferenceUID == first[planning_image].FrameOfReferenceUID
            assert dose.DoseSummationType == ("PLAN" if sop == t.dose_sop_uid else "BEAM")
        if t.dose_frame_series_uid is not None:
            assert first[t.dose_frame_series_uid].Modality == "CT"
            assert first[t.dose_frame_series_uid].FrameOfReferenceUID != post_op.FrameOfReferenceUID
        for uid, code in t.skip_codes.items():
            assert code in SKIP_CODES
            ds = first[uid]
            same_day = {first[u].StudyDate for u in t.event_series_uids} | {post_op.StudyDate}
            ties = [u for u, c in t.skip_codes.items() if c == "tie"]
            expected = header_says(code, ds, same_day, [first[u] for u in ties])
            assert expected, (pid, ds.SeriesDescription, code)
    p1, p2, p4 = (nbia.patients[p] for p in (P1, P2, P4))
    assert p1.dose_sop_uid and p1.beam_dose_sop_uids and p1.reg_matrix and p1.dose_frame_series_uid
    assert p2.dose_sop_uid is None and len(p2.beam_dose_sop_uids) == 2 and p2.reg_matrix is None
    assert p4.dose_frame_series_uid is None and list(p4.skip_codes.values()).count("tie") == 2


def header_says(code: str, ds: pydicom.Dataset, t1c_dates: set[str],
                ties: list[pydicom.Dataset]) -> bool:
    """Whether the headers of a skipped series show its expected skip code."""
    image_type = [str(v) for v in ds.get("ImageType", [])]
    marks = {"localizer": "LOCALIZER", "mpr": "MPR", "subtraction": "SUBTRACTION"}
    if code in marks:
        return marks[code] in image_type
    if code == "derived":
        return image_type[:1] == ["DERIVED"] and "MPR" not in image_type
    if code == "beam_dose":
        return ds.get("DoseSummationType") == "BEAM"
    if code == "precontrast":
        return not ds.get("ContrastBolusAgent") and ds.StudyDate in t1c_dates
    if code == "not_t1c":  # long TR (T2) or a long inversion (FLAIR)
        return float(ds.RepetitionTime) > 2000 or float(ds.get("InversionTime") or 0) > 1500
    if code == "tie":
        return len(ties) == 2 and all(
            (s.StudyInstanceUID, s.SeriesDescription, s.ImageType, s.SliceThickness)
            == (ds.StudyInstanceUID, ds.SeriesDescription, ds.ImageType, ds.SliceThickness)
            for s in ties)
    return False


def dose_gy(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.DoseGridScaling)


def test_beam_doses_of_one_plan_sum_to_the_plan_dose(nbia: TreeTruth, files: Files) -> None:
    by_sop, _ = files
    p1, p2 = nbia.patients[P1], nbia.patients[P2]
    beams = [by_sop[s][1] for s in p2.beam_dose_sop_uids]
    assert all(b.ImagePositionPatient == beams[0].ImagePositionPatient for b in beams)
    total = sum(dose_gy(b) for b in beams)
    assert 59.0 < total.max() < 61.5  # the 60 Gy plan, split 55/45 over two beams
    plan = dose_gy(by_sop[p1.dose_sop_uid][1])
    assert 59.0 < plan.max() < 61.5
    assert np.allclose(dose_gy(by_sop[p1.beam_dose_sop_uids[0]][1]), 0.55 * plan, atol=0.01)


def test_messy_headers_are_there(nbia: TreeTruth, files: Files) -> None:
    _, series = files
    first = {uid: slices[0] for uid, slices in series.items()}
    p2_event = first[nbia.patients[P2].event_series_uids[0]]
    assert "SeriesDate" not in p2_event and p2_event.ContrastBolusAgent == ""
    assert any(ds.get("ProtocolName") == "" and ds.PatientID == P1 for ds in first.values())
    assert {ds.PatientSex for ds in first.values() if ds.PatientID == P3} == {"0000"}


def test_broken_files_are_unreadable(nbia: TreeTruth) -> None:
    truncated, text = nbia.broken_files
    ds = pydicom.dcmread(truncated, stop_before_pixels=True)  # pydicom does not complain ...
    assert "SOPInstanceUID" not in ds and "PatientID" not in ds  # ... but nothing is left
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(text)


def test_reg_object_links_ct_frame_to_mr_frame(nbia: TreeTruth, files: Files) -> None:
    by_sop, series = files
    truth = nbia.patients[P1]
    (reg,) = [ds for _, ds in by_sop.values() if ds.Modality == "REG"]
    assert reg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.1" and reg.PatientID == P1
    mr_frame = series[truth.post_op_series_uid][0].FrameOfReferenceUID
    ct_frame = series[truth.dose_frame_series_uid][0].FrameOfReferenceUID
    assert reg.FrameOfReferenceUID == mr_frame  # the registered frame
    matrices = {}
    for registration in reg.RegistrationSequence:
        (matrix,) = registration.MatrixRegistrationSequence[0].MatrixSequence
        assert matrix.FrameOfReferenceTransformationMatrixType == "RIGID"
        matrices[registration.FrameOfReferenceUID] = np.array(
            [float(v) for v in matrix.FrameOfReferenceTransformationMatrix]).reshape(4, 4)
    assert set(matrices) == {mr_frame, ct_frame}
    assert np.allclose(matrices[mr_frame], np.eye(4))
    m = matrices[ct_frame]
    assert tuple(m.ravel()) == truth.reg_matrix
    assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-9)
    assert np.allclose(m[3], [0, 0, 0, 1])
    referenced = {s.SeriesInstanceUID for s in reg.ReferencedSeriesSequence}
    assert referenced == {truth.post_op_series_uid, truth.dose_frame_series_uid}
    # the matrix carries the CT's brain onto the MR's brain (centroids in world mm)
    folder = {uid: by_sop[s[0].SOPInstanceUID][0].parent for uid, s in series.items()}
    ct = read_dicom_series(folder[truth.dose_frame_series_uid]).image
    mri = read_dicom_series(folder[truth.post_op_series_uid]).image
    centroids = []
    for image, high in ((ct, 100.0), (mri, np.inf)):  # the CT's brain: 0-100 HU
        values = sitk.GetArrayFromImage(image)
        low = 0.0 if image is ct else 0.1 * values.max()
        zyx = np.argwhere((values > low) & (values < high)).mean(axis=0)
        centroids.append(np.array(image.TransformContinuousIndexToPhysicalPoint(
            zyx[::-1].tolist())))
    moved = m[:3, :3] @ centroids[0] + m[:3, 3]
    assert np.linalg.norm(moved - centroids[1]) < 4.0
    assert np.linalg.norm(centroids[0] - centroids[1]) > 8.0  # the frames differ


def comparable(truth: TreeTruth) -> TreeTruth:
    return replace(truth, root=Path("."), broken_files=())


@pytest.mark.slow
def test_layouts_hold_the_same_instances(nbia: TreeTruth, files: Files, tmp_path: Path) -> None:
    sops = set(files[0])
    for layout in ("flat", "one_per_folder"):
        truth = build_tree(tmp_path / layout, layout)
        assert comparable(truth) == comparable(nbia)
        assert set(read_tree(truth)[0]) == sops
        paths = [p for p in truth.root.rglob("*") if p.is_file()]
        assert len({p.parent for p in paths}) == (1 if layout == "flat" else len(paths))


@pytest.mark.slow
def test_mutual_information_finds_the_reg_matrix(nbia: TreeTruth, files: Files) -> None:
    """`ricecli batch` registers the dose frame (CT) to the post-op MR: it must work here."""
    from ricecli.geometry.register import register_rigid
    from ricecli.geometry.resample import affine_matrix

    by_sop, series = files
    truth = nbia.patients[P1]
    folder = {uid: by_sop[s[0].SOPInstanceUID][0].parent for uid, s in series.items()}
    mri = read_dicom_series(folder[truth.post_op_series_uid]).image
    ct = read_dicom_series(folder[truth.dose_frame_series_uid]).image
    found = affine_matrix(register_rigid(mri, ct, same_contrast=False).transform)  # MR -> CT
    reg = np.array(truth.reg_matrix).reshape(4, 4)  # CT -> MR
    points = np.array([mri.TransformContinuousIndexToPhysicalPoint([i, j, k])
                       for i in (20, 44) for j in (20, 44) for k in (6, 18)])
    back = (reg @ found @ np.c_[points, np.ones(len(points))].T).T[:, :3]
    assert np.abs(back - points).max() < 2.0


def test_labels_csv_names_every_event_of_patients_with_a_case(nbia: TreeTruth,
                                                             tmp_path: Path) -> None:
    path = write_labels_csv(nbia, tmp_path / "labels.csv",
                            extra_rows=[(P1, "19990101", "progression")])
    rows = list(csv.DictReader(path.open()))
    events = {(p.patient_id, d) for p in nbia.patients.values() for d in p.event_dates}
    assert {(r["patient_id"], r["event_date"]) for r in rows[:-1]} == events
    assert {r["label"] for r in rows} <= {"progression", "pseudoprogression", "response"}
    assert not any(r["patient_id"] == P3 for r in rows)


@pytest.mark.slow
def test_without_shared_data_the_simulator_gives_the_heads(nbia: TreeTruth, files: Files,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cohort_tree, "SHARED_MRI", tmp_path / "absent")
    cohort_tree.load_head.cache_clear()
    try:
        truth = build_tree(tmp_path / "export", "nbia")
    finally:
        cohort_tree.load_head.cache_clear()
    by_sop, series = read_tree(truth, pixels=True)
    assert set(by_sop) == set(files[0])  # UIDs do not depend on the voxels
    for pid, t in truth.patients.items():  # the REG matrix does (a rotation about the brain)
        assert replace(t, reg_matrix=None) == replace(nbia.patients[pid], reg_matrix=None)
    post_op = series[truth.patients[P1].post_op_series_uid]
    assert max(float(np.percentile(s.pixel_array, 99)) for s in post_op) > 0

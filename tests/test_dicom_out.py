"""outputs/dicom.py, dicom_sr.py, parametric_map.py: the SR and Parametric Map read back with
pydicom, highdicom, SimpleITK."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ricecli.errors import InputError, OutputError
from ricecli.io.dicom_write import write_mr_series
from ricecli.io.volume import read_scan

hd = pytest.importorskip("highdicom")
from ricecli.outputs.dicom import check_dicom_out, write_dicom_outputs  # noqa: E402
from ricecli.outputs.parametric_map import read_parametric_map  # noqa: E402

OBLIQUE = sitk.VersorTransform((0.3, 0.2, 1.0), 0.4).GetMatrix()
SHA = "ab" * 32


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    """An oblique anisotropic MR series (5 slices) and the image it was written from."""
    image = sitk.GetImageFromArray(
        (np.random.default_rng(2).random((5, 7, 9)) * 400).astype(np.float32))
    image.SetSpacing((0.9, 1.1, 3.0))
    image.SetOrigin((-40.0, 25.5, 12.25))
    image.SetDirection(OBLIQUE)
    folder = write_mr_series(image, tmp_path_factory.mktemp("event") / "series",
                             series_description="event T1c")
    return folder, image, read_scan(folder).series


def _result(p_rec: float = 0.7, verdict: str | None = "pass") -> dict:
    """A labelled result record as the writers get it (ricecli.result.to_record): calibrated
    and raw p, members' spread; verdict None: a record from before QA existed."""
    from ricecli.result import CaseResult, QAReport, to_record

    probs = {"RICE": 1 - p_rec, "recurrence": p_rec}
    record = to_record(CaseResult(
        label=max(probs, key=probs.__getitem__), probabilities=probs,
        probabilities_uncalibrated={"RICE": 0.95 - p_rec, "recurrence": p_rec + 0.05},
        decision="argmax", votes={"RICE": 0, "recurrence": 1}, members=[],
        uncertainty={"member_sd_p_recurrence": 0.1, "agreement": 1.0,
                     "uncertain": abs(p_rec - 0.5) < 0.25},
        calibration={"applied": True, "method": "temperature"}, qa=QAReport(verdict or ""),
        timings_s={}, model={"name": "ricenet-test", "version": "0.1.0", "sha256": SHA,
                             "path": "m"}, engine={"name": "cpu"}, inputs={}))
    return record if verdict else {**record, "qa": {}}


def _occlusion(image: sitk.Image) -> sitk.Image:
    values = np.linspace(-0.2, 0.5, int(np.prod(image.GetSize())), dtype=np.float32)
    occ = sitk.GetImageFromArray(values.reshape(sitk.GetArrayViewFromImage(image).shape))
    occ.CopyInformation(image)
    return occ


def test_sr_round_trip(tmp_path, event):
    folder, _, series = event
    result = _result(0.8)
    (path,) = write_dicom_outputs(tmp_path / "dcm", result, series)
    src = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
    ds = pydicom.dcmread(path)
    assert path.name == f"SR_{ds.SOPInstanceUID}.dcm"
    assert ds.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage and ds.Modality == "SR"
    for tag in ("PatientID", "PatientName", "StudyInstanceUID", "StudyID", "StudyDate"):
        assert ds[tag].value == src[tag].value
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert ds.SOPInstanceUID != src.SOPInstanceUID
    assert "RESEARCH USE ONLY" in ds.SeriesDescription and ds.VerificationFlag == "UNVERIFIED"
    referenced = {
        sop.ReferencedSOPInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence for sop in series.ReferencedSOPSequence}
    assert referenced == {pydicom.dcmread(f).SOPInstanceUID for f in folder.glob("*.dcm")}
    sr = hd.sr.srread(path)
    (group,) = sr.content.get_image_measurement_groups()
    values = {m.name.value: m.value for m in group.get_measurements()}
    assert values["RN001"] == pytest.approx(result["probabilities"]["recurrence"])
    assert values["RN002"] == pytest.approx(result["probabilities_uncalibrated"]["recurrence"])
    assert values["RN003"] == pytest.approx(
        result["uncertainty"]["member_sd_p_recurrence"])
    coded = {q.name.value: q.value for q in group.get_qualitative_evaluations()}
    assert (coded["RN100"].value, coded["RN100"].scheme_designator) == ("111338", "DCM")
    assert coded["RN010"].meaning == ("Yes" if result["uncertainty"]["uncertain"] else "No")
    assert coded["RN011"].meaning == "QA pass"
    assert coded["RN012"].value == "RN-RESEARCH"
    assert group.finding_type.value == "301766008"
    texts = dict(_texts(ds))
    assert texts["111001"] == "ricenet-test" and texts["111003"] == "0.1.0"  # name, version
    assert f"sha256={SHA}" in [v for k, v in _texts(ds) if k == "111002"]  # parameters


def _texts(item) -> list[tuple[str, str]]:
    """(concept code, text) of every TEXT content item in the SR tree."""
    out = []
    for child in item.get("ContentSequence", []):
        if child.ValueType == "TEXT":
            out.append((child.ConceptNameCodeSequence[0].CodeValue, child.TextValue))
        out += _texts(child)
    return out


def test_sr_rice_not_assessed_and_stable_uids(tmp_path, event):
    folder, _, series = event
    result = _result(0.2, verdict=None)
    (a,) = write_dicom_outputs(tmp_path / "a", result, series)
    (b,) = write_dicom_outputs(tmp_path / "b", result, read_scan(folder).series)
    (c,) = write_dicom_outputs(tmp_path / "a", _result(0.25, verdict=None), series)
    da, db, dc = (pydicom.dcmread(p) for p in (a, b, c))
    assert da.SOPInstanceUID == db.SOPInstanceUID  # same inputs and answer: same object
    for ds in (da, dc):  # valid UIDs (<= 64 characters, digits and dots), none of the input's
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID):
            assert pydicom.uid.UID(uid).is_valid and uid not in {s.SeriesInstanceUID
                                                                 for s in series}
    assert dc.SOPInstanceUID != da.SOPInstanceUID and a.name == b.name
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted([a.name, c.name])
    group = hd.sr.srread(a).content.get_image_measurement_groups()[0]
    coded = {q.name.value: q.value for q in group.get_qualitative_evaluations()}
    assert coded["RN100"].value == "RN101" and coded["RN011"].meaning == "QA not assessed"


def test_parametric_map_on_the_event_grid(tmp_path, event):
    folder, image, series = event
    occ = _occlusion(image)
    sr_path, pm_path = write_dicom_outputs(tmp_path / "dcm", _result(), series, occ)
    ds = pydicom.dcmread(pm_path)
    assert pm_path.name == f"PM_{ds.SOPInstanceUID}.dcm"
    assert ds.SOPClassUID == pydicom.uid.ParametricMapStorage
    assert ds.ContentQualification == "RESEARCH" and "RESEARCH USE ONLY" in ds.SeriesDescription
    assert ds.FrameOfReferenceUID == series[0].FrameOfReferenceUID
    assert ds.StudyInstanceUID == series[0].StudyInstanceUID
    assert ds.PatientID == series[0].PatientID
    assert ds.SeriesInstanceUID not in {series[0].SeriesInstanceUID,
                                        pydicom.dcmread(sr_path).SeriesInstanceUID}
    assert "FloatPixelData" in ds and int(ds.NumberOfFrames) == len(series)
    shared = ds.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose([float(v) for v in
                                shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                               [float(v) for v in series[0].ImageOrientationPatient], atol=1e-6)
    measures = shared.PixelMeasuresSequence[0]
    np.testing.assert_allclose([float(v) for v in measures.PixelSpacing],
                               [float(v) for v in series[0].PixelSpacing], atol=1e-6)
    assert float(measures.SpacingBetweenSlices) == pytest.approx(
        float(series[0].SpacingBetweenSlices))
    frames = sorted([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
                    for f in ds.PerFrameFunctionalGroupsSequence)
    np.testing.assert_allclose(  # one frame per event slice, at that slice's position
        frames, sorted([float(v) for v in src.ImagePositionPatient] for src in series),
        atol=1e-4)
    # as a volume: the event series read by SimpleITK (GDCM) and the map share one grid
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ev = reader.Execute()
    back = read_parametric_map(pm_path)
    assert back.GetSize() == ev.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), ev.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), ev.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), ev.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(occ))
    # highdicom's own reader: same values, same world positions
    volume = hd.imread(pm_path).get_volume().to_simpleitk()
    same = sitk.Resample(volume, back, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_allclose(sitk.GetArrayFromImage(same), sitk.GetArrayFromImage(occ),
                               atol=1e-6)


def test_the_writers_take_the_scan_headers_and_never_read_the_series(tmp_path, event):
    folder, image, _ = event
    copy = shutil.copytree(folder, tmp_path / "event")
    series = read_scan(copy).series
    assert all("PixelData" not in ds for ds in series)  # headers only are kept
    shutil.rmtree(copy)  # gone: the writers can only use the headers the reader kept
    sr_path, pm_path = write_dicom_outputs(tmp_path / "dcm", _result(), series, _occlusion(image))
    assert int(pydicom.dcmread(pm_path).NumberOfFrames) == len(series) == image.GetSize()[2]
    assert pydicom.dcmread(sr_path).StudyInstanceUID == series[0].StudyInstanceUID


@pytest.mark.slow
def test_classify_dicom_out_reads_each_event_file_once(tmp_path, tiny_model, synthetic_case,
                                                        capsys, monkeypatch):
    """ricecli classify --dicom-out: every event slice's header is read once (by the reader,
    the SR takes its headers from the scan) and its pixels once."""
    from model_fixtures import run_cli

    image = sitk.ReadImage(str(synthetic_case["event"]), sitk.sitkFloat32)
    event = write_mr_series(image, tmp_path / "event", series_description="event T1c")
    reads: Counter = Counter()
    dcmread = pydicom.dcmread

    def counted(fp, *args, **kwargs):  # pydicom's own reader, each call on the event counted
        if isinstance(fp, str | Path) and Path(fp).parent == event:
            reads[Path(fp).name, bool(kwargs.get("stop_before_pixels"))] += 1
        return dcmread(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counted)
    code, _, stderr = run_cli(
        ["classify", "--t1", str(synthetic_case["post_op"]), "--t1", str(event), "--dose",
         str(synthetic_case["dose"]), "--model", str(tiny_model), "--device", "cpu",
         "--json", str(tmp_path / "r.json"), "--dicom-out", str(tmp_path / "dcm")], capsys)
    assert code == 0, stderr
    assert len(list((tmp_path / "dcm").glob("SR_*.dcm"))) == 1
    names = sorted(f.name for f in event.iterdir())
    assert reads == Counter({(n, headers): 1 for n in names for headers in (True, False)})


def test_nifti_event_is_refused(tmp_path, event):
    _, image, _ = event
    nifti = tmp_path / "event.nii.gz"
    sitk.WriteImage(image, str(nifti))
    with pytest.raises(InputError) as err:
        check_dicom_out(tmp_path / "out", nifti, [nifti])
    assert err.value.one_line().startswith(
        f"{nifti}: is not a DICOM series, so --dicom-out has no study or series to reference")
    scan = read_scan(nifti)
    assert scan.series == ()  # a NIfTI has no headers to reference
    with pytest.raises(InputError, match="not a DICOM series"):
        write_dicom_outputs(tmp_path / "out", _result(), scan.series)
    assert not (tmp_path / "out").exists()


def test_dicom_out_inside_an_input_is_refused(tmp_path, event):
    folder, _, _ = event
    with pytest.raises(OutputError, match="is an input or lies inside one"):
        check_dicom_out(folder / "results", folder, [folder])
    check_dicom_out(tmp_path / "fine", folder, [folder])  # no error, nothing written
    assert not (tmp_path / "fine").exists()

"""outputs/dicom_header.py: real DICOM headers broken in many ways never crash --dicom-out.

The sweep writes the SR and the Parametric Map over event series built from pydicom's bundled
test files and from a real scan (../shared/data), each with its header broken as real exports
break them (bytes written raw, as a file would hold them), and reads every output back with
pydicom and highdicom.
"""

from __future__ import annotations

import json
import shutil
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.valuerep import validate_value

from ricecli.io.base import read_header
from ricecli.io.dicom_write import write_mr_series

hd = pytest.importorskip("highdicom")
from test_dicom_out import _occlusion, _result  # noqa: E402

from ricecli.outputs.dicom import write_dicom_outputs  # noqa: E402
from ricecli.outputs.dicom_header import GROUPS, clean_series  # noqa: E402

# name: (header values written raw; None removes the attribute), a note expected (or None)
BREAKS = {
    "sex_0000": ({"PatientSex": "0000"}, "PatientSex '0000' is not a valid CS: left empty"),
    "sex_word": ({"PatientSex": "female"}, "normalised to 'F'"),
    "name_one_part": ({"PatientName": "Anonymous"}, "PatientName normalised"),
    "name_too_long": ({"PatientName": "X" * 70 + "^Given"}, "PatientName normalised"),
    "name_control": ({"PatientName": "Doe\x01^Jane\\Other"}, "PatientName normalised"),
    "dates_dashed": ({"StudyDate": "2026-01-31", "StudyTime": "09:30:00"},
                     "normalised to '20260131'"),
    "dates_garbage": ({"StudyDate": "20261399", "PatientBirthDate": "unknown",
                       "StudyTime": "25h"}, "StudyDate '20261399' is not a valid DA"),
    "uid_too_long": ({"StudyInstanceUID": "1." + "2" * 70}, "replaced by a valid UID"),
    "uid_letters": ({"SeriesInstanceUID": "1.2.03.abc"}, "replaced by a valid UID"),
    "ids_too_long": ({"AccessionNumber": "A" * 20, "StudyID": "S" * 20},
                     "AccessionNumber is not a valid SH (20 characters): left empty"),
    "age_weight": ({"PatientAge": "45", "PatientWeight": "70kg"}, "normalised to '045Y'"),
    "missing": ({"PatientSex": None, "PatientName": None, "AccessionNumber": None,
                 "StudyID": None, "StudyDate": None, "StudyTime": None,
                 "ReferringPhysicianName": None}, None),
    "charset": ({"SpecificCharacterSet": "ISO_IR 999"}, "written as UTF-8"),
    "everything": ({"PatientSex": "0000", "PatientName": "Anonymous", "StudyDate": "0",
                    "StudyInstanceUID": "1.2.abc", "AccessionNumber": "B" * 17,
                    "StudyDescription": "D" * 80}, "StudyDescription"),
}
SOURCES = ("MR_small", "CT_small", "real")


def _set_raw(ds: pydicom.Dataset, keyword: str, value: str | None) -> None:
    """Put the value's bytes in the dataset unchecked, as a broken export would."""
    tag = pydicom.tag.Tag(tag_for_keyword(keyword))
    if value is None:
        ds._dict.pop(tag, None)
        return
    data = value.encode("latin-1")
    data += b" " * (len(data) % 2)
    ds._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(data), data, 0, False, True)


def _broken_copy(src: Path, dst: Path, changes: dict[str, str | None]) -> Path:
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        for keyword, value in changes.items():
            _set_raw(ds, keyword, value)
        ds.save_as(dst / f.name)
    return dst


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path | None]:
    """Event series folders: pydicom's MR_small and CT_small (one slice each), and a crop of
    the real oblique skull-on TCGA scan written as an MR series (None without the samples)."""
    from pydicom.data import get_testdata_file

    root = tmp_path_factory.mktemp("sources")
    out: dict[str, Path | None] = {}
    for name in ("MR_small", "CT_small"):
        (root / name).mkdir()
        shutil.copy(get_testdata_file(f"{name}.dcm"), root / name / f"{name}.dcm")
        out[name] = root / name
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # as conftest.py
    real = shared / "mri" / "TCGA-FG-6692" / "TCGA-FG-6692_t1c.nii.gz"
    out["real"] = None
    if real.is_file():
        image = sitk.ReadImage(str(real), sitk.sitkFloat32)[100:112, 100:110, 10:14]
        out["real"] = write_mr_series(image, root / "real", series_description="TCGA t1c")
    return out


def _event_series(folder: Path) -> list[pydicom.Dataset]:
    """The headers of a (maybe single-slice) event series, sorted along the slice normal."""
    return [read_header(Path(f)) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(
        str(folder))]


def _occlusion_for(series: list[pydicom.Dataset]) -> sitk.Image:
    """A signed map on the series' own grid (as the reader stacks it)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(ds.filename) for ds in series])
    return _occlusion(sitk.Cast(reader.Execute(), sitk.sitkFloat32))


def _assert_valid(ds: pydicom.Dataset) -> None:
    """Every patient/study/reference value the output copied is valid for its VR."""
    for elem in ds:
        if elem.tag.group not in GROUPS or elem.VR in ("SQ", "UN", "US", "SS", "UL", "SL",
                                                       "FL", "FD") or elem.tag.is_private:
            continue
        values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) \
            else [elem.value]
        for value in (v for v in values if v not in (None, "")):
            validate_value(elem.VR, str(value) if elem.VR in ("DS", "IS") else value,
                           pydicom.config.RAISE)
            if elem.VR == "DA" and value:
                datetime.strptime(str(value), "%Y%m%d")
            if elem.VR == "UI" and value:
                assert pydicom.uid.UID(str(value)).is_valid, (elem.keyword, value)
    assert ds.PatientSex in ("", "M", "F", "O")
    assert "^" in str(ds.PatientName) or str(ds.PatientName) == ""


@pytest.mark.filterwarnings("ignore:Unknown encoding 'ISO_IR 999'")  # reading the broken input
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("broken", list(BREAKS))
def test_broken_headers_give_valid_outputs(tmp_path, sources, source, broken):
    if sources[source] is None:
        pytest.skip("real sample files not found (../shared/data)")
    changes, note = BREAKS[broken]
    folder = _broken_copy(sources[source], tmp_path / "event", changes)
    result = _result(0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns as it reads the broken values
        series = _event_series(folder)
        sr_path, pm_path = write_dicom_outputs(tmp_path / "dcm", result, series,
                                               _occlusion_for(series))
    notes = result["dicom_header_notes"]
    assert note is None or any(note in n for n in notes), notes
    assert not any("Anonymous" in n or "Doe" in n or "XXXX" in n for n in notes)  # no names
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the outputs read back without a single warning
        sr, pm = pydicom.dcmread(sr_path), pydicom.dcmread(pm_path)
        _assert_valid(sr)
        _assert_valid(pm)
    hd.sr.srread(sr_path)
    assert hd.imread(pm_path).get_volume().spatial_shape[2] == int(pm.Columns)
    for keyword in ("PatientID", "PatientName", "PatientSex", "StudyInstanceUID",
                    "StudyDate", "AccessionNumber"):
        assert sr.get(keyword) == pm.get(keyword), keyword  # one patient, one study
    assert clean_series([sr, pm])[1] == []  # nothing left to clean


def test_the_cleaned_values(tmp_path, sources):
    changes = {**BREAKS["everything"][0], "StudyTime": "09:30:00", "PatientSex": "MALE"}
    folder = _broken_copy(sources["MR_small"], tmp_path / "event", changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series, notes = clean_series(_event_series(folder))
        again, _ = clean_series(_event_series(folder))
    ds = series[0]
    assert (ds.PatientSex, str(ds.PatientName), ds.StudyDate, ds.StudyTime) == (
        "M", "Anonymous^", "", "093000")
    assert ds.AccessionNumber == "" and len(ds.StudyDescription) == 64
    assert pydicom.uid.UID(ds.StudyInstanceUID).is_valid  # the bad '1.2.abc' replaced
    assert again[0].StudyInstanceUID == ds.StudyInstanceUID  # same bad UID, same replacement
    assert pydicom.dcmread(next(folder.iterdir())).PatientSex == "MALE"  # input untouched
    assert len(notes) == len(set(notes)) >= 6


@pytest.mark.slow
def test_cli_dicom_out_with_a_broken_header(tmp_path, tiny_model, synthetic_case, capsys):
    """ricecli classify --dicom-out on an event series with PatientSex '0000' and a one-part
    name: exit 0, the SR written and readable, the JSON and the console say what was cleaned."""
    from model_fixtures import run_cli

    image = sitk.ReadImage(str(synthetic_case["event"]), sitk.sitkFloat32)
    clean = write_mr_series(image, tmp_path / "clean", series_description="event T1c")
    event = _broken_copy(clean, tmp_path / "event", {"PatientSex": "0000",
                                                     "PatientName": "Anonymous"})
    out = tmp_path / "dcm"
    code, stdout, stderr = run_cli(
        ["classify", "--t1", str(synthetic_case["post_op"]), "--t1", str(event), "--dose",
         str(synthetic_case["dose"]), "--model", str(tiny_model), "--device", "cpu",
         "--json", str(tmp_path / "r.json"), "--dicom-out", str(out)], capsys)
    assert code == 0, stderr
    record = json.loads((tmp_path / "r.json").read_text())
    assert "PatientSex '0000' is not a valid CS: left empty" in record["dicom_header_notes"]
    assert "DICOM header: PatientSex '0000'" in stdout
    (sr_path,) = out.iterdir()
    sr = pydicom.dcmread(sr_path)
    assert (sr.PatientSex, str(sr.PatientName)) == ("", "Anonymous^")
    hd.sr.srread(sr_path)
    assert np.isclose(float(hd.sr.srread(sr_path).content.get_image_measurement_groups()[0]
                            .get_measurements()[0].value),
                      record["probabilities"]["recurrence"])


def test_extra_values_and_an_unknown_charset(tmp_path, sources):
    """Two values where DICOM allows one keep only the first (a two-valued StudyInstanceUID
    would reach highdicom otherwise); text under an unknown charset keeps its letters; a tag
    missing from pydicom's dictionary is no error."""
    from pydicom.tag import Tag

    ds = pydicom.dcmread(next(sources["MR_small"].iterdir()), stop_before_pixels=True)
    for keyword, data in (("StudyInstanceUID", b"1.2.3\\1.2.4"), ("PatientSex", b"M\\F"),
                          ("SpecificCharacterSet", b"ISO_IR 999"),
                          ("PatientName", "Müller^José".encode("latin-1"))):
        tag = Tag(tag_for_keyword(keyword))
        data += b" " * (len(data) % 2)
        ds._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(data), data, 0, False, True)
    unknown = Tag(0x0010, 0x9999)  # a public tag pydicom's dictionary does not know, 2 values
    ds._dict[unknown] = RawDataElement(unknown, "LO", 4, b"a\\b", 0, False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (clean,), notes = clean_series([ds])
    assert (clean.StudyInstanceUID, clean.PatientSex) == ("1.2.3", "M")
    assert str(clean.PatientName) == "Müller^José" and clean.SpecificCharacterSet == "ISO_IR 192"
    assert "StudyInstanceUID holds 2 values where DICOM allows one: the first is kept" in notes
    assert clean_series([clean])[1] == []

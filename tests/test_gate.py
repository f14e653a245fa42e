"""ricecli.gate: each input plays its role (MR for --t1, a dose for --dose, visits in order, one
patient, two different scans) or the command stops with exit 2 and writes nothing."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from model_fixtures import run_cli
from prepare_fixtures import EVENT_POSE, POST_POSE, dose_in, grid, pose, scan

from ricecli.errors import DoseError, InputError
from ricecli.gate import (
    check_dose,
    check_dose_patient,
    check_t1,
    check_visits,
    check_volume,
    texture,
)
from ricecli.io.base import tag_image
from ricecli.io.dicom_write import write_mr_series, write_rtdose
from ricecli.io.volume import read_mr
from ricecli.qa import LIMITS

MIN_VOXELS, TEXTURE_SPLIT = LIMITS.min_voxels, LIMITS.texture_split


@pytest.fixture(scope="module")
def mr() -> sitk.Image:
    return scan(pose(*EVENT_POSE), grid((80, 96, 80), 2.0))


@pytest.fixture(scope="module")
def dose() -> sitk.Image:
    return dose_in(pose(*POST_POSE), size=(48, 56, 48), spacing=3.0)


def ct_from(mr: sitk.Image) -> sitk.Image:
    """A CT-like volume in Hounsfield units: air -1000, soft tissue ~40, a bright bone rim."""
    values = sitk.GetArrayFromImage(mr)
    head = values > 50
    rim = head & ~(sitk.GetArrayFromImage(sitk.BinaryErode(sitk.GetImageFromArray(
        head.astype(np.uint8)), [3, 3, 3])) > 0)
    hu = np.where(head, 40.0 + values / 50.0, -1000.0)
    hu[rim] = 1200.0
    out = sitk.GetImageFromArray(hu.astype(np.float32))
    out.CopyInformation(mr)
    return out


def test_texture_separates_anatomy_from_dose(mr, dose):
    assert texture(mr) > TEXTURE_SPLIT + 0.05
    assert texture(dose) < TEXTURE_SPLIT - 0.1
    assert texture(mr * 0.01) == pytest.approx(texture(mr), rel=1e-3)  # unit-free


def test_mr_passes_as_t1_and_dose_as_dose(mr, dose):
    assert check_t1(mr, "event.nii.gz", "event")["texture"] > TEXTURE_SPLIT
    assert check_dose(dose, "dose.nii.gz")["texture"] < TEXTURE_SPLIT


def test_dose_as_t1_is_refused(dose):
    with pytest.raises(InputError, match="looks like a dose map, not an MR scan") as err:
        check_t1(dose, "dose.nii.gz", "post-op (first)")
    assert "the first --t1 is the post-op scan" in err.value.one_line()


def test_t1_as_dose_is_refused_whatever_the_unit(mr):
    for scaled in (mr, mr * 0.01):  # as given, and as --dose-unit cGy would scale it
        with pytest.raises(DoseError, match="looks like an MR scan, not a dose map"):
            check_dose(scaled, "event.nii.gz")


def test_ct_is_refused_by_intensities_and_by_modality(mr):
    with pytest.raises(InputError, match="looks like a CT"):
        check_t1(ct_from(mr), "ct.nii.gz", "event")
    tagged = tag_image(sitk.Image(mr), {"Modality": "CT"})
    with pytest.raises(InputError, match=r"is a CT \(Modality CT\), not an MR scan"):
        check_t1(tagged, "ct_series", "event")
    z_scored = (mr - 300.0) / 300.0  # MR with a negative background is still MR
    check_t1(z_scored, "z.nii.gz", "event")


def test_phantom_cube_at_30_mm_is_refused():
    cube = sitk.GetImageFromArray(np.pad(np.full((4, 4, 4), 500.0, np.float32), 2))
    cube.SetSpacing((30.0, 30.0, 30.0))
    with pytest.raises(InputError, match="too coarse for a T1c"):
        check_t1(cube, "phantom.nii.gz", "event")


def test_same_scan_twice(mr, tmp_path):
    with pytest.raises(InputError, match="given as both --t1"):
        check_visits(mr, mr, tmp_path / "a.nii.gz", tmp_path / "a.nii.gz")
    with pytest.raises(InputError, match="same scan as the post-op"):
        check_visits(mr, sitk.Image(mr), tmp_path / "a.nii.gz", tmp_path / "copy.nii.gz")
    moved = scan(pose(*POST_POSE), grid((80, 96, 80), 2.0))
    check_visits(moved, mr, tmp_path / "a.nii.gz", tmp_path / "b.nii.gz")  # a real pair


def _dicom_visit(image: sitk.Image, folder, **tags) -> sitk.Image:
    """A real DICOM MR series with the given header values; read back through ricecli."""
    write_mr_series(image, folder)
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(f)
    return read_mr(folder)


def test_dicom_dates_order_and_patient(mr, tmp_path):
    moved = scan(pose(*POST_POSE), grid((40, 48, 40), 4.0))
    small = sitk.Resample(mr, moved)
    post = _dicom_visit(moved, tmp_path / "post", StudyDate="20250301", SeriesDate="20250301")
    event = _dicom_visit(small, tmp_path / "event", StudyDate="20251120")
    check_visits(post, event, tmp_path / "post", tmp_path / "event")  # in order
    with pytest.raises(InputError, match="visits look swapped") as err:
        check_visits(event, post, tmp_path / "event", tmp_path / "post")
    assert "Fix: the first --t1 is the post-op scan" in err.value.one_line()
    other = _dicom_visit(small, tmp_path / "other", PatientID="SOMEONE-ELSE")
    with pytest.raises(InputError, match="is of patient 'SOMEONE-ELSE'"):
        check_visits(post, other, tmp_path / "post", tmp_path / "other")
    rd = write_rtdose(dose_in(pose(*POST_POSE), size=(20, 24, 20), spacing=6.0),
                      tmp_path / "RD.dcm")
    ds = pydicom.dcmread(rd)
    ds.PatientID = "SOMEONE-ELSE"
    ds.save_as(rd)
    from ricecli.io.dose import read_dose

    with pytest.raises(DoseError, match="dose of patient 'SOMEONE-ELSE'"):
        check_dose_patient(post, read_dose(rd), rd)


# --- through the CLI: exit 2, one line, nothing written ----------------------------------------

def _classify(case: dict, model, out, *extra: str) -> list[str]:
    return ["classify", "--t1", str(case["post_op"]), "--t1", str(case["event"]), "--dose",
            str(case["dose"]), "--model", str(model), "--device", "cpu", "--json", str(out),
            *extra]


@pytest.mark.parametrize("wrong", ["dose_as_t1", "t1_as_dose_cgy", "same_scan_twice"])
def test_wrong_inputs_exit_2_nothing_written(wrong, tiny_model, synthetic_case, tmp_path,
                                              capsys):
    case = dict(synthetic_case)
    extra: list[str] = []
    if wrong == "dose_as_t1":
        case["post_op"] = synthetic_case["dose"]
        case["dose"] = tmp_path / "dose.nii.gz"
        sitk.WriteImage(sitk.ReadImage(str(synthetic_case["dose"])), str(case["dose"]))
    elif wrong == "t1_as_dose_cgy":
        case["dose"] = synthetic_case["event"]
        extra = ["--dose-unit", "cGy"]
    else:
        case["post_op"] = synthetic_case["event"]
    out = tmp_path / "result.json"
    code, _, err = run_cli(_classify(case, tiny_model, out, *extra), capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert lines[-1].startswith("error: ") and len(lines) == 1, err
    assert not out.exists() and list(tmp_path.iterdir()) in ([], [case["dose"]])


# --- slivers: fewer than 4 voxels along an axis is refused, not an ITK internal error ---------

@pytest.mark.parametrize("slices", [1, 3])
def test_a_sliver_of_a_dose_is_refused(dose, slices):
    n = dose.GetSize()
    sliver = sitk.RegionOfInterest(dose, [n[0], n[1], slices], [0, 0, n[2] // 2])
    with pytest.raises(InputError) as err:
        check_volume(sliver, "dose.nii.gz", "--dose")
    line = err.value.one_line()
    assert line.startswith(f"dose.nii.gz: has only {slices} voxel")
    assert f"along its z axis ({n[0]}x{n[1]}x{slices} voxels, {3.0 * slices:g} mm)" in line
    assert "given as the --dose. Fix: give the plan's whole dose grid" in line
    check_volume(sitk.RegionOfInterest(dose, [n[0], n[1], MIN_VOXELS], [0, 0, 0]),
                 "dose.nii.gz", "--dose")  # four is a volume


def test_texture_of_a_thin_volume_is_measured(mr, dose):
    """A 1 mm scan of 10 slices shrinks to 3 voxels at 3 mm: the texture keeps 4 (no ITK
    error) and still tells anatomy from dose."""
    fine = sitk.Resample(mr, grid((80, 96, 10), 1.0), sitk.Transform(), sitk.sitkLinear)
    fine.SetOrigin(mr.TransformContinuousIndexToPhysicalPoint([0, 0, 30]))
    fine = sitk.Resample(mr, fine, sitk.Transform(), sitk.sitkLinear)
    n = dose.GetSize()
    thin_dose = sitk.RegionOfInterest(dose, [n[0], n[1], 5], [0, 0, n[2] // 2])
    assert texture(fine) > TEXTURE_SPLIT > texture(thin_dose)


def test_a_dose_sliver_through_the_cli_exits_2(tiny_model, synthetic_case, tmp_path, capsys):
    dose = sitk.ReadImage(str(synthetic_case["dose"]))
    n = dose.GetSize()
    sliver = tmp_path / "sliver.nii.gz"
    sitk.WriteImage(sitk.RegionOfInterest(dose, [n[0], n[1], 3], [0, 0, n[2] // 2]), str(sliver))
    out = tmp_path / "result.json"
    code, stdout, err = run_cli(_classify({**synthetic_case, "dose": sliver}, tiny_model, out),
                                capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {sliver}: has only 3 voxels along its z axis ({n[0]}x{n[1]}x3 voxels, 15 mm): "
        "the dose grid covers a sliver, not a volume (at least 4 voxels along every axis are "
        "needed); given as the --dose. Fix: give the plan's whole dose grid (DICOM RTDOSE, or an "
        "image file in Gy) with --dose"], err
    assert not out.exists() and "engine:" not in stdout


def test_a_dose_beside_the_brain_is_refused_before_resampling(tiny_model, synthetic_case,
                                                              tmp_path, capsys):
    """A dose grid that ends just short of the brain: refused with its coverage (exit 2), not
    a crash in the smoothing of a cropped sliver."""
    dose = sitk.ReadImage(str(synthetic_case["dose"]))
    n = dose.GetSize()
    beside = sitk.RegionOfInterest(dose, [n[0], n[1], 5], [0, 0, 0])
    beside.SetOrigin(dose.TransformContinuousIndexToPhysicalPoint([0, 0, -8]))
    path = tmp_path / "beside.nii.gz"
    sitk.WriteImage(beside, str(path))
    code, _, err = run_cli(_classify({**synthetic_case, "dose": path}, tiny_model,
                                     tmp_path / "r.json"), capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {path}: the dose grid does not overlap the post-op "
                               "scan's brain (0.0% covered)"), lines

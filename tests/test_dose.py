"""Dose reading: units and summation rules, RTDOSE round trips, image-file doses."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ricecli.errors import DoseError, InputError
from ricecli.io.dicom_write import write_rtdose
from ricecli.io.dose import read_dose

OBLIQUE = sitk.VersorTransform((0.1, 0.4, 1.0), 0.5).GetMatrix()


def plan_dose(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), peak: float = 60.0) -> sitk.Image:
    """A small anisotropic dose: a smooth peak plus a ramp, so every voxel differs."""
    k, j, i = np.meshgrid(np.arange(7), np.arange(9), np.arange(11), indexing="ij")
    ramp = 0.01 * (i + 2 * j + 5 * k)
    values = np.exp(-((i - 6) ** 2 + (j - 4) ** 2 + (k - 3) ** 2) / 20.0) + ramp
    image = sitk.GetImageFromArray((peak * values / values.max()).astype(np.float32))
    image.SetSpacing((2.5, 3.0, 2.0))
    image.SetOrigin((-12.5, 30.0, -52.0))
    image.SetDirection(direction)
    return image


def assert_same_dose(got: sitk.Image, want: sitk.Image, atol: float) -> None:
    """Same values at the same world points, whatever the frame order of either grid."""
    for c in np.array(np.meshgrid(*[[0, n - 1] for n in want.GetSize()])).reshape(3, -1).T:
        idx = got.TransformPhysicalPointToContinuousIndex(
            want.TransformIndexToPhysicalPoint([int(v) for v in c]))
        assert np.allclose(idx, np.round(idx), atol=1e-3)
    resampled = sitk.Resample(got, want, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(want),
                               atol=atol)


# ------------------------------------------------------------- real headers and files


def test_geometry_only_header_is_not_a_dose(shared_data):
    path = shared_data / "rtdose/orientation/RD.DICOMORIENT.Dose_HFS.dcm"
    with pytest.raises(InputError, match="no pixel data"):
        read_dose(path)


def test_pinnacle_dose_reads_in_gy(shared_data):
    path = shared_data / "rtdose/pinnacle/RD.pinnacle.dcm"
    dose = read_dose(path)
    values = sitk.GetArrayViewFromImage(dose)
    assert dose.GetPixelID() == sitk.sitkFloat32
    assert dose.GetSize() == (150, 90, 50)
    assert float(values.max()) == pytest.approx(49.87, abs=0.005)
    np.testing.assert_allclose(dose.GetOrigin(), (-200.0, -2.5, -52.5))
    np.testing.assert_allclose(dose.GetSpacing(), (2.5, 2.5, 2.5))
    np.testing.assert_allclose(dose.GetDirection(), np.eye(3).ravel())
    raw = sitk.ReadImage(str(path))  # SimpleITK alone: no DoseGridScaling (why pydicom)
    assert sitk.GetArrayViewFromImage(raw).max() > 1000


def test_pinnacle_plan_is_not_a_dose(shared_data):
    with pytest.raises(InputError, match="RTPLAN"):
        read_dose(shared_data / "rtdose/pinnacle/RP.pinnacle.dcm")


def test_relative_units_refused_without_a_scale(shared_data):
    with pytest.raises(DoseError) as err:
        read_dose(shared_data / "rtdose/pydicom/rtdose_relative_units.dcm")
    assert "RELATIVE" in str(err.value) and "--dose-relative-scale GY" in str(err.value)


# ------------------------------------------------------------- round trips


@pytest.mark.parametrize("options", [{}, {"big_endian": True}, {"bits": 16}])
@pytest.mark.parametrize("name", ["lps", "ras", "oblique", "left_handed"])
def test_rtdose_round_trip(tmp_path, name, options):
    direction = {"lps": (1, 0, 0, 0, 1, 0, 0, 0, 1), "ras": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                 "oblique": OBLIQUE, "left_handed": (0, 1, 0, 1, 0, 0, 0, 0, 1)}[name]
    dose = plan_dose(direction)
    path = write_rtdose(dose, tmp_path / "rd.dcm", **options)
    got = read_dose(path)
    quantum = 60.0 / (2 ** options.get("bits", 32) - 1)
    assert_same_dose(got, dose, atol=quantum + 60.0 * 2.0**-24)  # + float32 rounding


def test_absolute_grid_frame_offsets(tmp_path):
    dose = plan_dose()
    path = write_rtdose(dose, tmp_path / "rd.dcm")
    ds = pydicom.dcmread(path)
    z0 = float(ds.ImagePositionPatient[2])
    ds.GridFrameOffsetVector = [z0 + float(v) for v in ds.GridFrameOffsetVector]
    ds.save_as(path)
    assert_same_dose(read_dose(path), dose, atol=1e-6)


def test_uneven_frames_are_resampled(tmp_path):
    dose = plan_dose()
    ds = pydicom.dcmread(write_rtdose(dose, tmp_path / "rd.dcm"))
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    keep = [0, 1, 2, 4, 5, 6]  # frame 3 missing: a 4 mm gap among 2 mm
    stored = ds.pixel_array[keep]
    ds.NumberOfFrames = len(keep)
    ds.GridFrameOffsetVector = [offsets[k] for k in keep]
    ds.PixelData = stored.tobytes()
    ds.save_as(tmp_path / "uneven.dcm")
    notes: list[str] = []
    got = read_dose(tmp_path / "uneven.dcm", notes=notes)
    assert got.GetSize() == dose.GetSize() and got.GetSpacing()[2] == pytest.approx(2.0)
    want = sitk.GetArrayFromImage(dose)
    values = sitk.GetArrayFromImage(got)
    np.testing.assert_allclose(values[keep], want[keep], atol=1e-6)
    np.testing.assert_allclose(values[3], (want[2] + want[4]) / 2, atol=1e-5)
    assert any("resampled" in n for n in notes)


def test_fraction_dose_needs_the_number_of_fractions(tmp_path):
    path = write_rtdose(plan_dose(peak=2.0), tmp_path / "rd.dcm", summation="FRACTION")
    with pytest.raises(DoseError) as err:
        read_dose(path)
    assert "--dose-fractions" in str(err.value) and str(path) in str(err.value)
    got = read_dose(path, fractions=30)
    assert sitk.GetArrayViewFromImage(got).max() == pytest.approx(60.0, rel=1e-6)


def test_relative_dose_with_a_scale(tmp_path):
    path = write_rtdose(plan_dose(peak=1.1), tmp_path / "rd.dcm", units="RELATIVE")
    notes: list[str] = []
    got = read_dose(path, relative_scale_gy=54.0, notes=notes)
    assert sitk.GetArrayViewFromImage(got).max() == pytest.approx(1.1 * 54.0, rel=1e-6)
    assert notes


def test_beam_dose_is_refused(tmp_path):
    path = write_rtdose(plan_dose(), tmp_path / "rd.dcm", summation="BEAM")
    with pytest.raises(DoseError, match="BEAM"):
        read_dose(path)


def test_plan_dose_ignores_fractions_and_unit_with_notes(tmp_path):
    path = write_rtdose(plan_dose(), tmp_path / "rd.dcm")
    notes: list[str] = []
    got = read_dose(path, unit="cGy", fractions=30, notes=notes)
    assert sitk.GetArrayViewFromImage(got).max() == pytest.approx(60.0, rel=1e-6)
    assert len(notes) == 2


def test_rtdose_folder_with_one_dose(tmp_path):
    write_rtdose(plan_dose(), tmp_path / "export" / "RD.1.dcm")
    (tmp_path / "export" / "readme.txt").write_text("plan export")
    assert sitk.GetArrayViewFromImage(read_dose(tmp_path / "export")).max() == pytest.approx(60.0)
    write_rtdose(plan_dose(), tmp_path / "export" / "RD.2.dcm")
    with pytest.raises(InputError, match="2 RTDOSE"):
        read_dose(tmp_path / "export")


def test_truncated_rtdose(tmp_path):
    path = write_rtdose(plan_dose(), tmp_path / "rd.dcm")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])
    with pytest.raises(InputError) as err:
        read_dose(path)
    assert str(path) in str(err.value) and "Fix:" in str(err.value)


# ------------------------------------------------------------- image-file doses


def test_nifti_dose_in_gy_and_cgy(tmp_path):
    dose = plan_dose(OBLIQUE)
    sitk.WriteImage(dose, str(tmp_path / "dose.nii.gz"))
    assert_same_dose(read_dose(tmp_path / "dose.nii.gz"), dose, atol=1e-5)
    sitk.WriteImage(dose * 100.0, str(tmp_path / "dose_cgy.nrrd"))
    with pytest.raises(DoseError) as err:
        read_dose(tmp_path / "dose_cgy.nrrd")
    assert "looks like cGy" in str(err.value) and "--dose-unit cGy" in str(err.value)
    assert_same_dose(read_dose(tmp_path / "dose_cgy.nrrd", unit="cGy"), dose, atol=1e-4)


def test_image_dose_per_fraction(tmp_path):
    sitk.WriteImage(plan_dose(peak=2.0), str(tmp_path / "dose.mha"))
    got = read_dose(tmp_path / "dose.mha", fractions=30)
    assert sitk.GetArrayViewFromImage(got).max() == pytest.approx(60.0, rel=1e-6)


@pytest.mark.parametrize(
    "change, error, words",
    [
        (lambda a: a * 0.0, DoseError, "zero everywhere"),
        (lambda a: a - 30.0, DoseError, "negative"),
        (lambda a: np.where(a > 50, np.nan, a), InputError, "NaN"),
    ],
)
def test_bad_image_doses(tmp_path, change, error, words):
    values = change(sitk.GetArrayFromImage(plan_dose())).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "dose.nii.gz"))
    with pytest.raises(error, match=words):
        read_dose(tmp_path / "dose.nii.gz")


def test_tiny_negative_values_are_clipped(tmp_path):
    values = sitk.GetArrayFromImage(plan_dose())
    values[0, 0, 0] = -0.05  # interpolation ringing from a resampled dose
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "dose.nii.gz"))
    notes: list[str] = []
    got = read_dose(tmp_path / "dose.nii.gz", notes=notes)
    assert sitk.GetArrayViewFromImage(got).min() == 0.0 and notes


def test_bad_arguments_and_files(tmp_path):
    sitk.WriteImage(plan_dose(), str(tmp_path / "dose.nii.gz"))
    with pytest.raises(DoseError, match="unknown dose unit"):
        read_dose(tmp_path / "dose.nii.gz", unit="mSv")
    with pytest.raises(DoseError, match="whole number"):
        read_dose(tmp_path / "dose.nii.gz", fractions=0)
    with pytest.raises(InputError, match="not found"):
        read_dose(tmp_path / "missing.dcm")
    (tmp_path / "dose.txt").write_text("60 Gy")
    with pytest.raises(InputError, match="not an image"):
        read_dose(tmp_path / "dose.txt")


def _strip_preamble(path):
    """Rewrite a file as a raw dataset (no preamble, no file meta), as old exporters do."""
    ds = pydicom.dcmread(path)
    ds.preamble = None
    del ds.file_meta
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert not pydicom.misc.is_dicom(path)
    return path


def test_rtdose_without_preamble_still_goes_through_pydicom(tmp_path):
    dose = plan_dose(OBLIQUE)
    path = _strip_preamble(write_rtdose(dose, tmp_path / "RD.dcm"))
    assert_same_dose(read_dose(path), dose, atol=1e-5)


def test_all_negative_dose_says_negative_not_zero(tmp_path):
    img = sitk.GetImageFromArray(-np.linspace(1, 60, 8 * 9 * 10, dtype=np.float32)
                                 .reshape(8, 9, 10))
    sitk.WriteImage(img, str(tmp_path / "neg.nii.gz"))
    with pytest.raises(DoseError, match="negative everywhere") as err:
        read_dose(tmp_path / "neg.nii.gz")
    assert "zero" not in err.value.one_line()

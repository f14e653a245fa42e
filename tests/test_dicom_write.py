"""The DICOM writers produce files that pydicom and GDCM (SimpleITK) read back as written."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ricecli.io.dicom_write import write_mr_series, write_rtdose

OBLIQUE = sitk.VersorTransform((0.3, 0.2, 1.0), 0.4).GetMatrix()
DIRECTIONS = {
    "lps": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "ras": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "oblique": OBLIQUE,
}


def _volume(direction, scale: float = 1000.0) -> sitk.Image:
    """A small anisotropic volume whose every voxel differs (detects any flip or transpose)."""
    rng = np.random.default_rng(7)
    image = sitk.GetImageFromArray((rng.random((6, 9, 11)) * scale).astype(np.float32))
    image.SetSpacing((0.9, 1.1, 3.0))
    image.SetOrigin((-40.0, 25.5, 12.25))
    image.SetDirection(direction)
    return image


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_mr_series_round_trip_through_gdcm(tmp_path, name):
    image = _volume(DIRECTIONS[name])
    folder = write_mr_series(image, tmp_path / name, series_description="T1c post-op")
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 6
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    back = reader.Execute()
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    quantum = 1000.0 / 65534
    diff = sitk.GetArrayFromImage(back) - sitk.GetArrayFromImage(image)
    assert np.abs(diff).max() <= quantum / 2 + 1e-3
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "MR" and ds.SeriesDescription == "T1c post-op"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_integer_image_is_written_exactly(tmp_path):
    values = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 50
    image = sitk.GetImageFromArray(values.astype(np.float32))
    folder = write_mr_series(image, tmp_path / "ct", modality="CT")
    ds = pydicom.dcmread(sorted(folder.glob("*.dcm"))[1])
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
    assert ds.Modality == "CT"
    np.testing.assert_array_equal(ds.pixel_array, values[1])


def test_shared_uids_are_kept(tmp_path):
    image = _volume(DIRECTIONS["lps"])
    folder = write_mr_series(
        image, tmp_path / "s", study_uid="1.2.3.4", frame_of_reference_uid="1.2.3.5"
    )
    dose = write_rtdose(image * 0.01, tmp_path / "rd.dcm", frame_of_reference_uid="1.2.3.5")
    slice_ds = pydicom.dcmread(next(folder.glob("*.dcm")))
    assert slice_ds.StudyInstanceUID == "1.2.3.4"
    assert slice_ds.FrameOfReferenceUID == pydicom.dcmread(dose).FrameOfReferenceUID == "1.2.3.5"


@pytest.mark.parametrize(
    "options, syntax",
    [
        ({}, pydicom.uid.ExplicitVRLittleEndian),
        ({"big_endian": True}, pydicom.uid.ExplicitVRBigEndian),
        ({"bits": 16}, pydicom.uid.ExplicitVRLittleEndian),
        ({"bits": 16, "big_endian": True}, pydicom.uid.ExplicitVRBigEndian),
    ],
)
def test_rtdose_pixels_decode_with_pydicom(tmp_path, options, syntax):
    dose = _volume(DIRECTIONS["lps"], scale=62.0)
    arr = sitk.GetArrayFromImage(dose)
    path = write_rtdose(dose, tmp_path / "rd.dcm", **options)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.Modality == "RTDOSE" and ds.DoseUnits == "GY" and ds.DoseSummationType == "PLAN"
    assert int(ds.BitsAllocated) == options.get("bits", 32)
    values = ds.pixel_array * float(ds.DoseGridScaling)
    assert values.shape == arr.shape
    assert np.abs(values - arr).max() <= float(ds.DoseGridScaling) * 0.5 + 1e-7
    assert int(ds.pixel_array.max()) >= 0.999 * (2 ** options.get("bits", 32) - 1)  # full range


def test_rtdose_frames_run_along_row_cross_column(tmp_path):
    dose = _volume(DIRECTIONS["oblique"], scale=50.0)
    ds = pydicom.dcmread(write_rtdose(dose, tmp_path / "rd.dcm"))
    iop = np.asarray(ds.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    last = np.asarray(ds.ImagePositionPatient, float) + float(ds.GridFrameOffsetVector[-1]) * normal
    np.testing.assert_allclose(last, dose.TransformIndexToPhysicalPoint((0, 0, 5)), atol=1e-4)
    assert float(ds.GridFrameOffsetVector[0]) == 0.0


def test_rtdose_left_handed_grid_gets_negative_offsets(tmp_path):
    dose = _volume((1, 0, 0, 0, 1, 0, 0, 0, -1), scale=50.0)
    ds = pydicom.dcmread(write_rtdose(dose, tmp_path / "rd.dcm"))
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    assert offsets == pytest.approx([-3.0 * k for k in range(6)])


def test_writers_refuse_what_dicom_cannot_hold(tmp_path):
    with pytest.raises(ValueError):
        write_rtdose(_volume(DIRECTIONS["lps"]) - 2000.0, tmp_path / "neg.dcm")
    with pytest.raises(ValueError):
        write_mr_series(sitk.Image(4, 4, sitk.sitkFloat32), tmp_path / "2d")

"""Write real DICOM files with pydicom: MR/CT image series and RTDOSE, for the simulator and tests.

Geometry follows the standard: ImagePositionPatient is the centre of the first voxel of each
slice/frame, ImageOrientationPatient holds the row (along columns, +x index) and column (+y index)
cosines, and frames of an RTDOSE lie along row x column at GridFrameOffsetVector (relative: first
offset 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RTDOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"


def _ds(value: float) -> str:
    """A DICOM decimal string (<= 16 characters) that keeps as much precision as fits."""
    for digits in range(10, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot write {value} as a DICOM DS")


def _axes(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row cosine, column cosine, slice-normal (row x column) and the image's third axis."""
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)
    row, col, third = d[:, 0], d[:, 1], d[:, 2]
    normal = np.cross(row, col)
    if abs(abs(float(normal @ third)) - 1.0) > 1e-4:
        raise ValueError("image axes are not orthogonal: cannot write as DICOM slices")
    return row, col, normal, third


def _base(sop_class: str, modality: str, study_uid: str, for_uid: str, series_uid: str) -> Dataset:
    """Patient/study/series/frame-of-reference modules shared by every file we write."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UID(sop_class)
    ds.file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.PatientName = "Simulated^Ricenet"
    ds.PatientID = "RICENET-SIM"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "ricenet"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def _int16_rescale(values: np.ndarray) -> tuple[float, float]:
    """Slope and intercept so that values fit int16; exact (1, 0) for int16-valued data."""
    lo, hi = float(values.min()), float(values.max())
    if np.all(values == np.round(values)) and lo >= -32768 and hi <= 32767:
        return 1.0, 0.0
    slope = (hi - lo) / 65534.0 if hi > lo else 1.0
    return slope, lo + 32767.0 * slope


def write_mr_series(
    image: sitk.Image,
    folder: str | Path,
    series_description: str = "T1c",
    series_number: int = 1,
    modality: str = "MR",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_uid: str | None = None,
    headers: Mapping[str, Any] | None = None,
) -> Path:
    """Write a 3D scalar image as one DICOM file per slice (int16 + rescale) into `folder`.

    With `series_uid` the SOPInstanceUIDs derive from it (same inputs, same files); `headers`
    (keyword -> value) are set on every slice last, overriding the defaults.
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("write_mr_series needs a 3D scalar image")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    row, col, _, _ = _axes(image)
    values = sitk.GetArrayFromImage(image).astype(np.float64)
    slope, intercept = _int16_rescale(values)
    stored = np.clip(np.round((values - intercept) / slope), -32768, 32767).astype("<i2")
    study_uid = study_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    fixed_uids = series_uid is not None
    series_uid = series_uid or generate_uid()
    sop_class = CT_STORAGE if modality.upper() == "CT" else MR_STORAGE
    sx, sy, sz = image.GetSpacing()
    nx, ny, nz = image.GetSize()
    for k in range(nz):
        ds = _base(sop_class, modality.upper(), study_uid, for_uid, series_uid)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(k)]) if fixed_uids \
            else generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = series_description
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ImagePositionPatient = [_ds(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.SliceThickness = _ds(sz)
        ds.SpacingBetweenSlices = _ds(sz)
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = _ds(intercept)
        if modality.upper() == "CT":
            ds.RescaleType = "HU"
        ds.PixelData = stored[k].tobytes()
        for keyword, value in (headers or {}).items():
            setattr(ds, keyword, value)
        ds.save_as(folder / f"slice_{k:04d}.dcm", enforce_file_format=True)
    return folder


def write_rtdose(
    dose_gy: sitk.Image,
    path: str | Path,
    summation: str = "PLAN",
    units: str = "GY",
    frame_of_reference_uid: str | None = None,
    big_endian: bool = False,
    bits: int = 32,
    study_uid: str | None = None,
    sop_uid: str | None = None,
    headers: Mapping[str, Any] | None = None,
) -> Path:
    """Write a non-negative 3D dose as one multi-frame RTDOSE (uint32/uint16 x DoseGridScaling).

    With `sop_uid` the series UID derives from it; `headers` (keyword -> value) are set last.
    """
    if dose_gy.GetDimension() != 3 or dose_gy.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("write_rtdose needs a 3D scalar image")
    if bits not in (16, 32):
        raise ValueError("bits must be 16 or 32")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    row, col, normal, third = _axes(dose_gy)
    values = sitk.GetArrayFromImage(dose_gy).astype(np.float64)
    if not np.isfinite(values).all() or values.min() < -0.01 * max(values.max(), 0.0) - 1e-6:
        raise ValueError("dose must be finite and non-negative")
    values = np.maximum(values, 0.0)  # interpolation ringing of a few cGy below zero
    top = float(2**bits - 1)
    # a hair above max/top so that the DS rounding (10 digits) never pushes max past `top`
    scaling = float(_ds(values.max() / top * (1 + 1e-8))) if values.max() > 0 else 1.0
    stored = np.round(values / scaling).astype(np.uint32 if bits == 32 else np.uint16)
    nx, ny, nz = dose_gy.GetSize()
    sx, sy, sz = dose_gy.GetSpacing()
    sign = 1.0 if float(normal @ third) > 0 else -1.0
    ds = _base(RTDOSE_STORAGE, "RTDOSE", study_uid or generate_uid(),
               frame_of_reference_uid or generate_uid(),
               generate_uid(entropy_srcs=[sop_uid, "series"]) if sop_uid else generate_uid())
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SeriesDescription = "Dose"
    ds.ImagePositionPatient = [_ds(v) for v in dose_gy.GetOrigin()]
    ds.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
    ds.PixelSpacing = [_ds(sy), _ds(sx)]
    ds.SliceThickness = _ds(sz)
    ds.Rows, ds.Columns = ny, nx
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x3004, 0x000C)
    ds.GridFrameOffsetVector = [_ds(sign * sz * k) for k in range(nz)]
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.DoseUnits = units.upper()
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation.upper()
    ds.DoseGridScaling = _ds(scaling)
    for keyword, value in (headers or {}).items():
        setattr(ds, keyword, value)
    if big_endian:
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.PixelData = stored.astype(stored.dtype.newbyteorder(">")).tobytes()
        ds["PixelData"].VR = "OW"
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)
    return path

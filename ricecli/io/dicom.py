"""Read DICOM image series (one file per slice) into a 3D volume with LPS world geometry.

Slices are grouped by series and orientation, sorted along row x column (the slice normal), checked
for repeated positions and shear, and unevenly spaced stacks are resampled to a regular grid.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from ricecli.errors import InputError
from ricecli.io.base import (
    FORMATS_FIX,
    READ_ERRORS,
    Scan,
    check_dicom_geometry,
    dicom_facts,
    is_dicom_file,
    note,
    read_header,
    regular_stack,
    tag_image,
)

NOT_IMAGE_MODALITIES = {"RTDOSE", "RTPLAN", "RTSTRUCT", "RTRECORD", "SR", "PR", "REG", "SEG", "KO"}


def read_dicom_file(path: Path, notes: list[str] | None, what: str) -> Scan:
    """One DICOM file: refuse non-images (RTDOSE/RTPLAN); an image slice -> its whole series."""
    try:
        ds = read_header(path)
    except READ_ERRORS:
        raise InputError("is a damaged DICOM file", path, fix="export the file again") from None
    modality = str(ds.get("Modality", "")).upper()
    if modality in NOT_IMAGE_MODALITIES:
        fix = "pass the dose with --dose" if modality == "RTDOSE" else f"give {what}"
        raise InputError(f"is a DICOM {modality}, not {what}", path, fix=fix)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(
            "is a multi-frame (enhanced) DICOM image, which is not supported",
            path,
            fix="export classic single-frame images, or convert with dcm2niix to NIfTI",
        )
    uid = str(ds.get("SeriesInstanceUID", ""))
    try:
        scan = read_dicom_series(path.parent, notes, series_uid=uid)
    except InputError as err:  # name the file the user gave, not only its folder
        raise InputError(f"its series in {path.parent}: {err.problem}", path, fix=err.fix) \
            from None
    note(notes, f"{path.name}: read its whole series from {path.parent}")
    return scan


def _headers(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    """Headers (no pixels) of every DICOM file in the folder, or below it when it has none."""
    files = [f for f in sorted(folder.iterdir()) if f.is_file()]
    if not any(is_dicom_file(f) for f in files[:50]):
        files = [f for f in sorted(folder.rglob("*")) if f.is_file()]
    out = []
    for f in files:
        try:
            if is_dicom_file(f):
                out.append((f, read_header(f)))
        except READ_ERRORS:
            continue
    return out


def _series_key(ds: pydicom.Dataset) -> tuple | None:
    """Slices that can stack into one volume share this key; None for non-image files."""
    if str(ds.get("Modality", "")).upper() in NOT_IMAGE_MODALITIES:
        return None
    needed = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows")
    if any(ds.get(k) is None for k in needed):
        return None
    iop = tuple(round(float(v), 4) for v in ds.ImageOrientationPatient)
    spacing = tuple(round(float(v), 4) for v in ds.PixelSpacing)
    return (str(ds.get("SeriesInstanceUID", "")), iop, int(ds.Rows), int(ds.Columns), spacing)


def read_dicom_series(
    folder: Path, notes: list[str] | None = None, series_uid: str | None = None
) -> Scan:
    """The series with the most slices in a folder, sorted along the slice normal."""
    headers = _headers(folder)
    if not headers:
        raise InputError("holds no DICOM files", folder, fix=FORMATS_FIX)
    groups: dict[tuple, list] = defaultdict(list)
    for f, ds in headers:
        key = _series_key(ds)
        if key is not None and (series_uid is None or key[0] == series_uid):
            groups[key].append((f, ds))
    if not groups:
        kinds = sorted({str(ds.get("Modality", "?")) for _, ds in headers})
        raise InputError(
            f"holds no DICOM image series (only {', '.join(kinds)})",
            folder,
            fix="give the folder of the MR series; pass an RTDOSE with --dose",
        )
    key, slices = max(groups.items(), key=lambda kv: (len(kv[1]), kv[0][0]))
    if len(groups) > 1:
        ds = slices[0][1]
        note(
            notes,
            f"{folder.name}: folder held {len(groups)} series; took "
            f"{ds.get('SeriesDescription', '')!s} ({key[0]}, series {ds.get('SeriesNumber', '?')}) "
            f"with {len(slices)} slices",
        )
    return _stack(folder, slices, notes)


def _stack(folder: Path, slices: list, notes: list[str] | None) -> Scan:
    """Sort slices along row x column, check the stack, read pixels, regularise uneven gaps."""
    ds0 = slices[0][1]
    iop = np.asarray([float(v) for v in ds0.ImageOrientationPatient])
    ps = [float(v) for v in ds0.PixelSpacing]
    check_dicom_geometry(iop, ps, folder)
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, col)
    ipp = np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, ds in slices])
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    slices, ipp, along = [slices[i] for i in order], ipp[order], along[order]
    if len(slices) < 2:
        raise InputError("holds a single slice (2D)", folder,
                         fix="give the folder with the whole 3D series")
    gaps = np.diff(along)
    if gaps.min() < 1e-3:
        raise InputError(
            "holds several images at the same slice position (multi-echo, dynamic or repeated)",
            folder,
            fix="split the series into one folder per volume (e.g. with dcm2niix)",
        )
    drift = (ipp - ipp[0]) - np.outer(along - along[0], normal)
    if np.abs(drift).max() > 0.01 + 0.05 * float(min(ds0.PixelSpacing)):
        raise InputError(
            "slices are shifted in-plane along the stack (gantry tilt / sheared volume)",
            folder,
            fix="resample the series to an orthogonal grid (e.g. dcm2niix) and give the NIfTI",
        )
    volume = np.stack([_slice_pixels(f, folder) for f, _ in slices])
    step = float(np.median(gaps))
    if np.abs(gaps - step).max() > 0.01 * step:
        volume, along = regular_stack(volume, along, step)
        note(
            notes,
            f"{folder.name}: slice gaps vary from {gaps.min():.3g} to {gaps.max():.3g} mm; "
            f"resampled linearly to a regular {step:.4g} mm grid ({len(along)} slices)",
        )
    image = sitk.GetImageFromArray(volume.astype(np.float32, copy=False))
    image.SetSpacing((ps[1], ps[0], step))
    image.SetOrigin(tuple(float(v) for v in ipp[0]))
    image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return Scan(tag_image(image, dicom_facts(ds0)), tuple(ds for _, ds in slices))


def _slice_pixels(path: Path, folder: Path) -> np.ndarray:
    """One slice in real values (slope/intercept of that file), via pydicom or else GDCM."""
    try:
        ds = read_header(path, pixels=True)
        pixels = ds.pixel_array.astype(np.float32)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        return pixels * slope + intercept if (slope, intercept) != (1.0, 0.0) else pixels
    except Exception:  # a transfer syntax pydicom cannot decode here: let GDCM try
        try:
            return sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkFloat32))[0]
        except RuntimeError:
            raise InputError(
                f"slice {path.name} could not be decoded (damaged or truncated)",
                folder,
                fix="export the series again",
            ) from None

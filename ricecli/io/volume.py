"""Read MR volumes (NIfTI, NRRD, MHA/MHD, DICOM series folders) with LPS world geometry.

Every reader returns a validated 3D scalar float32 image, or raises InputError with one line
that names the file and the fix: geometry errors here would silently misplace the dose later.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ricecli.errors import InputError
from ricecli.io.base import (
    FORMATS_FIX,
    Scan,
    check_geometry,
    existing_path,
    image_facts,
    is_dicom_file,
    note,
    tag_image,
)
from ricecli.io.dicom import read_dicom_file, read_dicom_series

__all__ = ["read_mr", "read_scan", "read_mask", "read_volume", "geometry_summary"]


def read_mr(path: str | Path, notes: list[str] | None = None) -> sitk.Image:
    """The image of `read_scan`, for callers that need no DICOM headers."""
    return read_scan(path, notes).image


def read_scan(path: str | Path, notes: list[str] | None = None) -> Scan:
    """A validated 3D scalar float32 MR image in LPS world geometry, with its DICOM series'
    headers when it is one; `notes` gets what was done."""
    path = existing_path(path)
    scan = read_volume(path, notes, what="an MR image")
    check_values(scan.image, path)
    return scan


def read_mask(path: str | Path, notes: list[str] | None = None) -> sitk.Image:
    """A 3D binary mask (uint8, 0/1): every voxel above zero is inside."""
    path = existing_path(path)
    image = read_volume(path, notes, what="a mask").image
    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        raise InputError("mask holds NaN or infinite values", path, fix="give a 0/1 mask")
    mask = sitk.Cast(image > 0, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(mask).any():
        raise InputError("mask is empty (no voxel above 0)", path, fix="give a non-empty 0/1 mask")
    if not ((values == 0) | (values == 1)).all():
        note(notes, f"{path.name}: mask is not 0/1; took every voxel above 0 as inside")
    return mask


def read_volume(path: Path, notes: list[str] | None = None, what: str = "an image") -> Scan:
    """Any supported 3D scalar volume as float32 (shape checks only, values unchecked)."""
    if path.is_dir():
        scan = read_dicom_series(path, notes)
    elif is_dicom_file(path):
        scan = read_dicom_file(path, notes, what)
    else:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_payload(path)
        scan = Scan(_read_image_file(path))
    facts = image_facts(scan.image)  # DICOM header facts for the gate survive the checks below
    image = check_shape(scan.image, path, notes)
    check_geometry(image, path)
    return Scan(tag_image(image, facts), scan.series)


def _read_image_file(path: Path) -> sitk.Image:
    """A non-DICOM image file through SimpleITK (NIfTI qform/sform -> LPS is done by ITK)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        if "orthonormal" in str(err):
            raise InputError("has a singular orientation matrix (no orthonormal direction "
                             "found in its header)", path,
                             fix="export the scan again with its real orientation") from None
        raise InputError("is not an image file that can be read", path, fix=FORMATS_FIX) from None
    spacing = reader.GetSpacing()
    if not all(math.isfinite(v) and v > 0 for v in spacing):
        raise InputError(f"has voxel spacing {'x'.join(f'{v:g}' for v in spacing)} mm in its "
                         "header (zero, negative or not a number)", path,
                         fix="export the scan again with its real spacing (or fix the header)")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(
            f"has {reader.GetNumberOfComponents()} components per voxel (colour/vector image)",
            path,
            fix="give a single-channel (grayscale) 3D scan",
        )
    try:
        reader.SetOutputPixelType(sitk.sitkFloat32)
        return reader.Execute()
    except RuntimeError:
        raise InputError(
            "could not be read: the file is damaged or truncated",
            path,
            fix="copy or export the file again",
        ) from None


NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _check_nifti_payload(path: Path) -> None:
    """Truncation and NaN/inf checks ITK skips: it reads short NIfTI files and zeroes NaNs."""
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            header = f.read(348)
    except (OSError, EOFError, zlib.error):
        return  # not gzip/NIfTI at all: the image reader names the problem
    if len(header) < 348:
        return
    endian = next((e for e in "<>" if struct.unpack(e + "i", header[:4])[0] == 348), None)
    if endian is None:
        return  # NIfTI-2 or not NIfTI: leave it to ITK
    dims = struct.unpack(endian + "8h", header[40:56])
    _check_nifti_geometry(header, endian, dims, path)
    datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
    offset = int(struct.unpack(endian + "f", header[108:112])[0])
    count = int(np.prod([max(d, 1) for d in dims[1 : 1 + max(0, min(dims[0], 7))]]))
    expected = offset + count * bitpix // 8
    damaged = InputError("is truncated or damaged (shorter than its header says)", path,
                         fix="copy or export the file again")
    if not gz:
        if path.stat().st_size < expected:
            raise damaged
    else:
        with open(path, "rb") as raw:
            raw.seek(-4, 2)
            isize = struct.unpack("<I", raw.read(4))[0]
        if isize != expected % 2**32:
            try:
                with gzip.open(path, "rb") as f:
                    while f.read(1 << 24):
                        pass
            except (OSError, EOFError, zlib.error):
                raise damaged from None
    if datatype in NIFTI_FLOATS:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            f.seek(offset)
            values = np.frombuffer(f.read(count * bitpix // 8), endian + NIFTI_FLOATS[datatype])
        if not np.isfinite(values).all():
            raise InputError("holds NaN or infinite values", path,
                             fix="give the original scan, not a derived map")


def _check_nifti_geometry(header: bytes, endian: str, dims: tuple, path: Path) -> None:
    """pixdim 0 (ITK silently reads 1 mm) and a singular sform (ITK: 'not an image')."""
    pixdim = struct.unpack(endian + "8f", header[76:108])
    spatial = pixdim[1 : 1 + max(1, min(dims[0], 3))]
    if not all(math.isfinite(v) and v != 0 for v in spatial):
        raise InputError(f"its header gives voxel spacing (pixdim) "
                         f"{' '.join(f'{v:g}' for v in spatial)}: a zero or invalid spacing "
                         "(read as 1 mm it would misplace the scan)", path,
                         fix="export the scan again with its real voxel size")
    sform_code = struct.unpack(endian + "h", header[254:256])[0]
    if sform_code > 0:
        srow = np.asarray(struct.unpack(endian + "12f", header[280:328]), float).reshape(3, 4)
        m = srow[:, :3]
        scale = float(np.prod(np.linalg.norm(m, axis=0))) if np.isfinite(m).all() else 0.0
        if scale == 0.0 or abs(float(np.linalg.det(m))) < 1e-3 * scale:
            raise InputError("its sform matrix (srow_x/y/z) is singular: the scan's orientation "
                             "and voxel size are undefined", path,
                             fix="export the scan again, or set sform_code 0 to use its qform")


def check_shape(image: sitk.Image, path: Path, notes: list[str] | None = None) -> sitk.Image:
    """3D and scalar, or InputError; a 4D image with a single volume is squeezed to 3D."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            "has several components per voxel (colour/vector image)",
            path,
            fix="give a single-channel (grayscale) 3D scan",
        )
    size = image.GetSize()
    if image.GetDimension() == 4:
        if size[3] != 1:
            raise InputError(
                f"is 4D ({size[3]} volumes)",
                path,
                fix="extract the one 3D volume you mean (e.g. with fslroi or SimpleITK)",
            )
        image = sitk.Extract(image, (*size[:3], 0), (0, 0, 0, 0))
        note(notes, f"{path.name}: 4D file with a single volume, read as 3D")
        size = image.GetSize()
    if image.GetDimension() != 3 or min(size) < 2:
        extended = sum(n >= 2 for n in size)
        kind = {0: "a single voxel", 1: "a single line of voxels"}.get(extended, "2D")
        raise InputError(
            f"is {kind} (size {'x'.join(map(str, size))}), not a 3D volume",
            path,
            fix="give the whole 3D scan (all slices), not a single slice",
        )
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    return image


def check_values(image: sitk.Image, path: Path) -> None:
    """InputError for NaN/inf anywhere or a constant (empty) image."""
    values = sitk.GetArrayViewFromImage(image)
    lo, hi = float(values.min()), float(values.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(
            "holds NaN or infinite values", path, fix="give the original scan, not a derived map"
        )
    if lo == hi:
        raise InputError(f"is constant (every voxel is {lo:g}): an empty image", path,
                         fix="give the scan itself; this file holds no image data")


def geometry_summary(image: sitk.Image) -> dict:
    """Size, spacing, origin, direction (plus axis codes and extent) for qa.json and reports."""
    size = image.GetSize()
    corner = image.TransformIndexToPhysicalPoint([s - 1 for s in size])
    direction = image.GetDirection()
    return {
        "size": list(size),
        "spacing_mm": [round(s, 4) for s in image.GetSpacing()],
        "origin_mm": [round(o, 3) + 0.0 for o in image.GetOrigin()],
        "direction": [round(d, 5) for d in direction],
        "axes": sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(direction),
        "oblique": bool(np.abs(np.abs(np.asarray(direction)) - 0.5).min() < 0.5 - 1e-4),
        "last_voxel_mm": [round(c, 3) + 0.0 for c in corner],
    }

"""Helpers every reader shares: paths, notes, DICOM headers, header facts and geometry checks.

The readers (io/dicom.py, io/volume.py, io/rtdose.py, io/dose.py) import from here and from
readers below them only, so a scan's way from the command line to an image runs one direction.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from ricecli.errors import InputError

FORMATS_FIX = "give a NIfTI (.nii/.nii.gz), NRRD, MHA/MHD file or a DICOM series folder"
READ_ERRORS = (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError,
               KeyError, IndexError, struct.error)
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ""}
# header facts kept on the returned image (sitk metadata) for the input gate (ricecli.gate)
FACT_TAGS = ("Modality", "PatientID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime",
             "AcquisitionDate", "AcquisitionTime", "SeriesInstanceUID", "StudyInstanceUID")
FACT_PREFIX = "ricenet:"


@dataclass(frozen=True)
class Scan:
    """A scan as read: the image (header facts on its metadata, see `tag_image`) and, for a
    DICOM series, its slices' headers (no pixels) in stacking order, which --dicom-out
    references (read once, here)."""

    image: sitk.Image
    series: tuple[pydicom.Dataset, ...] = ()


def note(notes: list[str] | None, text: str) -> None:
    """Append a human-readable note when the caller collects them."""
    if notes is not None:
        notes.append(text)


def existing_path(path: str | Path) -> Path:
    """The path, or InputError when nothing is there."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path, fix="check the path and its spelling")
    return path


# --- DICOM headers


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM file: the 'DICM' preamble, or (.dcm/no suffix) a parseable header."""
    try:
        if not path.is_file():
            return False
        if pydicom.misc.is_dicom(path):
            return True
        if path.suffix.lower() not in DICOM_SUFFIXES:
            return False
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        return "SOPClassUID" in ds or "Modality" in ds
    except READ_ERRORS:
        return False


def read_header(path: Path, pixels: bool = False) -> pydicom.Dataset:
    """A DICOM dataset (headers only unless `pixels`); files without a preamble too."""
    ds = pydicom.dcmread(path, stop_before_pixels=not pixels, force=True)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):  # raw dataset: as it was read
        implicit, little = ds.original_encoding
        syntax = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                  pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
    return ds


# --- header facts for the gate, carried on the image


def dicom_facts(ds: pydicom.Dataset) -> dict[str, str]:
    """The header facts the gate checks (modality, patient, dates, series) that are present."""
    out = {}
    for tag in FACT_TAGS:
        value = ds.get(tag)
        if value is not None and str(value).strip():
            out[tag] = str(value).strip()
    return out


def tag_image(image: sitk.Image, facts: dict[str, str]) -> sitk.Image:
    """Store `facts` on the image's metadata (prefixed) and return the image."""
    for key, value in facts.items():
        image.SetMetaData(FACT_PREFIX + key, value)
    return image


def image_facts(image: sitk.Image) -> dict[str, str]:
    """The facts `tag_image` stored on an image (empty for non-DICOM sources)."""
    n = len(FACT_PREFIX)
    return {k[n:]: image.GetMetaData(k) for k in image.GetMetaDataKeys()
            if k.startswith(FACT_PREFIX)}


# --- geometry checks and regular grids


def check_geometry(image: sitk.Image, path: Path) -> None:
    """InputError for zero/non-finite voxel spacing or a singular direction matrix: with such a
    geometry the scan's size and place in the world are unknown."""
    spacing = image.GetSpacing()
    if not all(math.isfinite(v) and v > 0 for v in spacing):
        raise InputError(f"has voxel spacing {'x'.join(f'{v:g}' for v in spacing)} mm (zero, "
                         "negative or not a number): its real voxel size is unknown", path,
                         fix="export the scan again with its real spacing (or fix the header)")
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    if not np.isfinite(direction).all() or abs(float(np.linalg.det(direction))) < 1e-3:
        raise InputError("has a singular direction (orientation) matrix: its orientation in "
                         "the world is unknown", path,
                         fix="export the scan again with its real orientation")


def check_dicom_geometry(iop: np.ndarray, pixel_spacing: list[float], where: str | Path) -> None:
    """InputError for zero/non-finite PixelSpacing or a degenerate ImageOrientationPatient."""
    if len(pixel_spacing) != 2 or not all(math.isfinite(v) and v > 0 for v in pixel_spacing):
        raise InputError(f"PixelSpacing {pixel_spacing} is zero, negative or not a number",
                         where, fix="export the series again with its real pixel spacing")
    norms = [float(np.linalg.norm(iop[:3])), float(np.linalg.norm(iop[3:]))]
    if iop.size != 6 or not np.isfinite(iop).all() or min(norms) < 1e-3 or \
            abs(float(iop[:3] @ iop[3:])) > 1e-2 * norms[0] * norms[1]:
        raise InputError("ImageOrientationPatient is degenerate (zero or non-perpendicular "
                         "row/column directions)", where,
                         fix="export the series again with its real orientation")


def regular_stack(
    volume: np.ndarray, along: np.ndarray, step: float
) -> tuple[np.ndarray, np.ndarray]:
    """Linear resampling of slices at increasing positions `along` onto a regular `step` grid."""
    count = int(math.floor((along[-1] - along[0]) / step + 1e-6)) + 1
    grid = along[0] + step * np.arange(count)
    lower = np.clip(np.searchsorted(along, grid, side="right") - 1, 0, len(along) - 2)
    weight = ((grid - along[lower]) / (along[lower + 1] - along[lower])).astype(np.float32)
    w = weight[:, None, None]
    out = volume[lower].astype(np.float32) * (1 - w) + volume[lower + 1].astype(np.float32) * w
    return out, grid

"""Read a DICOM RTDOSE: its grid geometry, its stored values and the factor to plan Gy.

RTDOSE goes through pydicom, not SimpleITK, which ignores DoseGridScaling, fails on single-frame
files and misreads big-endian ones. Geometry follows PS3.3 C.8.8.3: frame k lies at
ImagePositionPatient + GridFrameOffsetVector[k] (relative form) along row x column cosines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from ricecli.errors import DoseError, InputError
from ricecli.io.base import (
    READ_ERRORS,
    check_dicom_geometry,
    dicom_facts,
    existing_path,
    is_dicom_file,
    note,
    read_header,
    regular_stack,
    tag_image,
)

PLAN_SUMS = {"PLAN", "MULTI_PLAN", "RECORD", "BRACHY"}  # whole-plan doses
PER_FRACTION = {"FRACTION", "FRACTION_SESSION", "BRACHY_SESSION"}  # x --dose-fractions


@dataclass(frozen=True)
class DoseGeometry:
    """World geometry of an RTDOSE grid; frames sorted by increasing position along the normal."""

    ipp: np.ndarray  # ImagePositionPatient: centre of the first stored voxel
    row: np.ndarray  # direction of increasing column index
    col: np.ndarray  # direction of increasing row index
    normal: np.ndarray  # row x col: the frame stacking direction
    pixel_spacing: tuple[float, float]  # (along row, along column) = (x, y) spacing
    offsets: np.ndarray  # stored frames' offsets along the normal, relative to ipp (mm)
    rows: int
    columns: int
    single_frame_step: float | None = None  # nominal thickness of a one-frame grid

    @property
    def order(self) -> np.ndarray:
        """Stored frame indices in increasing position along the normal."""
        return np.argsort(self.offsets, kind="stable")

    @property
    def frame_step(self) -> float:
        """The regular frame spacing (median gap; 1 frame: slice thickness or pixel spacing)."""
        if self.single_frame_step is not None:
            return self.single_frame_step
        gaps = np.diff(np.sort(self.offsets))
        return float(np.median(gaps)) if gaps.size else float(min(self.pixel_spacing))

    def reference(self) -> sitk.Image:
        """An empty (uint8 zeros) image on the regular grid the dose is returned on."""
        first = float(np.min(self.offsets))
        count = int(np.floor((np.max(self.offsets) - first) / self.frame_step + 1e-6)) + 1
        image = sitk.Image(self.columns, self.rows, count, sitk.sitkUInt8)
        image.SetSpacing((*self.pixel_spacing, self.frame_step))
        image.SetOrigin(tuple(float(v) for v in self.ipp + first * self.normal))
        image.SetDirection(tuple(np.column_stack([self.row, self.col, self.normal]).ravel()))
        return image


def rtdose_geometry(ds: pydicom.Dataset, path: str | Path = "RTDOSE") -> DoseGeometry:
    """Grid geometry from RTDOSE headers alone (works with empty PixelData)."""
    try:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        spacing = [float(v) for v in ds.PixelSpacing]
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise InputError(
            "RTDOSE lacks its geometry (ImagePositionPatient/Orientation, PixelSpacing, Rows)",
            path, fix="export the dose again from the planning system") from None
    check_dicom_geometry(iop, spacing, path)
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    gfov = ds.get("GridFrameOffsetVector")
    values = [] if gfov is None else [float(v) for v in (gfov if _multi(gfov) else [gfov])]
    step = None
    if frames == 1:
        offsets = np.zeros(1)
        gaps = np.abs(np.diff(values))
        step = float(np.median(gaps)) if gaps.size else float(ds.get("SliceThickness") or 0)
        step = step if step > 0 else float(min(spacing))
    elif len(values) < frames:
        raise InputError(f"GridFrameOffsetVector has {len(values)} entries for {frames} frames",
                         path, fix="export the dose again from the planning system")
    else:
        # relative form starts at 0; the absolute form starts at IPP's z (PS3.3 C.8.8.3.2):
        # both mean that frame k lies (offset[k] - offset[0]) mm from IPP along the normal
        offsets = np.asarray(values[:frames]) - values[0]
        if np.any(np.diff(np.sort(offsets)) < 1e-3):
            raise InputError("RTDOSE has two frames at the same position", path,
                             fix="export the dose again from the planning system")
    return DoseGeometry(ipp, row, col, np.cross(row, col), (spacing[1], spacing[0]), offsets,
                        rows, columns, step)


def _multi(value: object) -> bool:
    return isinstance(value, list | tuple | pydicom.multival.MultiValue)


def read_rtdose(
    path: str | Path, notes: list[str] | None = None
) -> tuple[sitk.Image, pydicom.Dataset]:
    """An RTDOSE as float32 stored values x DoseGridScaling (in its DoseUnits), and its header."""
    path = existing_path(path)
    try:
        ds = read_header(path, pixels=True)
    except READ_ERRORS:
        raise InputError("is not a readable DICOM file", path,
                         fix="give the RTDOSE file (RD*.dcm) from the planning system") from None
    modality = str(ds.get("Modality", "")).upper()
    if modality != "RTDOSE":
        raise InputError(f"is a DICOM {modality or 'file'} (not an RTDOSE)", path,
                         fix="give the RTDOSE file (RD*.dcm); an image-file dose must be NIfTI, "
                         "NRRD or MHA in Gy")
    geometry = rtdose_geometry(ds, path)
    if not ds.get("PixelData"):
        raise InputError("RTDOSE holds no pixel data (a geometry-only header)", path,
                         fix="export the dose grid itself from the planning system")
    try:
        stored = np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises several types for broken pixel data
        raise InputError(f"RTDOSE pixel data cannot be decoded ({type(exc).__name__})", path,
                         fix="export the dose again (the file looks damaged)") from None
    frames = len(geometry.offsets)
    if stored.size != frames * geometry.rows * geometry.columns:
        raise InputError("RTDOSE pixel data does not match Rows x Columns x NumberOfFrames", path,
                         fix="export the dose again (the file looks damaged or truncated)")
    stored = stored.reshape(frames, geometry.rows, geometry.columns)
    scaling = float(ds.get("DoseGridScaling", 1.0) or 1.0)
    order = geometry.order
    values = (stored[order] * scaling).astype(np.float32)  # float64 product: uint32 exact
    along = geometry.offsets[order]
    if frames > 1:
        step = geometry.frame_step
        if np.abs(np.diff(along) - step).max() > 0.01 * step:
            values, along = regular_stack(values, along, step)
            note(notes, f"{path.name}: dose frames unevenly spaced; resampled linearly to "
                  f"{step:.4g} mm")
    image = sitk.GetImageFromArray(np.ascontiguousarray(values, dtype=np.float32))
    image.CopyInformation(geometry.reference())
    return tag_image(image, dicom_facts(ds)), ds


def single_rtdose(folder: Path) -> Path:
    """The one RTDOSE file in a folder (an export folder given as --dose)."""
    found = []
    for f in sorted(p for p in folder.iterdir() if is_dicom_file(p)):
        ds = read_header(f)
        if str(ds.get("Modality", "")).upper() == "RTDOSE":
            found.append(f)
    if len(found) != 1:
        raise InputError(f"folder holds {len(found)} RTDOSE files", folder,
                         fix="give the RTDOSE file itself (the plan-sum RD*.dcm)")
    return found[0]


def rtdose_factor(ds: pydicom.Dataset, path: Path, unit_key: str, fractions: int | None,
                  relative_scale_gy: float | None, notes: list[str] | None) -> float:
    """Multiplier from stored-scaled values to absolute plan Gy, by the header's own units.
    Every problem of the header (unit and summation) is named in one refusal, not one per run."""
    units = str(ds.get("DoseUnits", "")).strip().upper()
    summation = str(ds.get("DoseSummationType", "PLAN")).strip().upper() or "PLAN"
    problems: list[str] = []
    fixes: list[str] = []
    factor = 1.0
    if unit_key == "cgy":
        note(notes, f"{path.name}: --dose-unit ignored: RTDOSE says DoseUnits {units}")
    if units == "GY":
        if relative_scale_gy is not None:
            note(notes, f"{path.name}: relative scale ignored: DoseUnits is GY")
    elif units == "RELATIVE":
        if relative_scale_gy is None:
            problems.append("DoseUnits RELATIVE: the dose is not in Gy")
            fixes.append("export the dose in GY, or give the Gy value of relative 1.0 with "
                         "--dose-relative-scale GY (Gy per stored unit)")
        else:
            factor = float(relative_scale_gy)
            note(notes, f"{path.name}: RELATIVE dose x {factor:g} Gy")
    elif units == "CGY":
        factor = 0.01
        note(notes, f"{path.name}: non-standard DoseUnits CGY, divided by 100")
    else:
        problems.append(f"unknown DoseUnits {units!r}")
        fixes.append("export the dose in GY")
    if summation in PER_FRACTION:
        if fractions is None:
            problems.append(f"DoseSummationType {summation}: the dose of one fraction")
            fixes.append("give the number of fractions with --dose-fractions N")
        else:
            factor *= fractions
            note(notes, f"{path.name}: per-fraction dose x {fractions} fractions")
    elif summation not in PLAN_SUMS:
        problems.append(f"DoseSummationType {summation}: only part of the plan's dose")
        fixes.append("export the plan dose (DoseSummationType PLAN) from the planning system")
    elif fractions is not None:
        note(notes, f"{path.name}: --dose-fractions ignored: the RTDOSE is a {summation} dose")
    if problems:
        raise DoseError("; and ".join(problems), path, fix="; and ".join(fixes))
    return factor

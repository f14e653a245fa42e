"""The input gate: each input must play its role before any work is done on it.

`check_case` runs right after reading, for every command (prepare, classify, explain, batch
rows, demo): an MR scan for each --t1, a dose map for --dose, the two visits in order, two
different scans, one patient. Geometry (spacing, direction) is checked by the readers. A
refusal is an InputError/DoseError: one line, exit 2, nothing written. The thresholds are
ricecli.qa.LIMITS (measured on the data listed in docs/qa.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import SimpleITK as sitk

from ricecli.errors import DoseError, InputError
from ricecli.io.base import image_facts
from ricecli.qa import LIMITS

TEXTURE_MM = 3.0  # texture: fine detail left by a Gaussian of this width, on a grid this coarse
T1_FIX = "give the T1c MR scans: --t1 POSTOP --t1 EVENT (the first --t1 is the post-op scan)"
DOSE_FIX = "give the plan's dose (DICOM RTDOSE, or an image file in Gy) with --dose"


def texture(image: sitk.Image) -> float:
    """Fine detail relative to contrast: ~0 for a smooth dose, 0.25+ for anatomy."""
    # shrunk to ~3 mm, but never below LIMITS.min_voxels along an axis (the Gaussian needs them)
    factors = [max(1, min(int(round(TEXTURE_MM / s)), n // LIMITS.min_voxels))
               for s, n in zip(image.GetSpacing(), image.GetSize(), strict=True)]
    work = sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), factors)
    values = sitk.GetArrayFromImage(work).astype(np.float64)
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(work, TEXTURE_MM))
    lo, hi = np.percentile(values, [0.5, 99.5])
    foreground = smooth > lo + 0.1 * (hi - lo)
    if foreground.sum() < 10:
        return 0.0
    spread = float(values[foreground].std())
    return float((values - smooth)[foreground].std() / spread) if spread > 0 else 0.0


def ct_like(image: sitk.Image) -> float:
    """Share of voxels at air in Hounsfield units when the image also holds bone; else 0."""
    values = sitk.GetArrayViewFromImage(image)
    if float(np.percentile(values, 99.5)) < LIMITS.ct_min_bone_hu:
        return 0.0
    return float((values <= LIMITS.ct_air_hu).mean())


def _visit_time(facts: dict[str, str]) -> str | None:
    """YYYYMMDD[HHMMSS] of the acquisition (else series, else study), if the header has one."""
    for date_key, time_key in (("AcquisitionDate", "AcquisitionTime"),
                               ("SeriesDate", "SeriesTime"), ("StudyDate", "StudyTime")):
        date = facts.get(date_key, "").strip()
        if len(date) == 8 and date.isdigit():
            clock = "".join(c for c in facts.get(time_key, "") if c.isdigit())[:6]
            return date + clock.ljust(6, "0") if clock else date
    return None


def _pretty(stamp: str) -> str:
    text = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}"
    return text + (f" {stamp[8:10]}:{stamp[10:12]}" if len(stamp) > 8 else "")


def check_volume(image: sitk.Image, path: str | Path, role: str) -> None:
    """Refuse an input with fewer than LIMITS.min_voxels voxels along an axis: a slice, or a
    dose grid that covers a sliver of the head, cannot be registered or smoothed."""
    size = image.GetSize()
    for axis, n in zip("xyz", size, strict=False):
        if n < LIMITS.min_voxels:
            extent = n * image.GetSpacing()["xyz".index(axis)]
            dose = role == "--dose"
            fix = ("give the plan's whole dose grid (DICOM RTDOSE, or an image file in Gy) "
                   "with --dose") if dose else f"{T1_FIX}, as 3D volumes"
            raise InputError(f"has only {n} voxel{'s' * (n != 1)} along its {axis} axis "
                             f"({'x'.join(map(str, size))} voxels, {extent:g} mm): "
                             f"{'the dose grid' if dose else 'the scan'} covers a sliver, not "
                             f"a volume (at least {LIMITS.min_voxels} voxels along every axis are "
                             f"needed); given as the {role}", path, fix=fix)


def check_t1(image: sitk.Image, path: str | Path, role: str) -> dict:
    """Refuse a --t1 that is not an MR scan (DICOM modality, CT intensities, a dose map, a
    phantom-coarse grid); return what was measured."""
    facts = image_facts(image)
    modality = facts.get("Modality", "").upper()
    if modality and modality != "MR":
        kind = "a CT" if modality == "CT" else f"a DICOM {modality} image"
        raise InputError(f"is {kind} (Modality {modality}), not an MR scan; given as the "
                         f"{role} --t1", path, fix=T1_FIX)
    air = ct_like(image)
    if air >= LIMITS.ct_min_air_share:
        raise InputError(f"looks like a CT, not an MR scan ({air:.0%} of voxels at air in "
                         f"Hounsfield units, with bone); given as the {role} --t1", path,
                         fix=T1_FIX)
    spacing = sorted(image.GetSpacing())
    finest, thickest = LIMITS.max_finest_spacing_mm, LIMITS.max_thickest_spacing_mm
    if spacing[0] > finest or spacing[-1] > thickest:
        raise InputError(f"has {'x'.join(f'{s:g}' for s in image.GetSpacing())} mm voxels, too "
                         f"coarse for a T1c scan (finest axis at most {finest:g} "
                         f"mm, slices at most {thickest:g} mm); given as the "
                         f"{role} --t1", path, fix=T1_FIX)
    detail = texture(image)
    if detail < LIMITS.texture_split:
        raise InputError(f"looks like a dose map, not an MR scan (smooth and featureless: "
                         f"texture {detail:.2f} < {LIMITS.texture_split}); given as the "
                         f"{role} --t1",
                         path, fix=T1_FIX)
    return {"texture": round(detail, 3), "modality": modality or None}


def check_dose(dose: sitk.Image, path: str | Path) -> dict:
    """Refuse an image dose that shows anatomy (an MR given as --dose, whatever its unit)."""
    facts = image_facts(dose)
    if facts.get("Modality", "").upper() == "RTDOSE":
        return {"texture": None, "modality": "RTDOSE"}
    detail = texture(dose)
    if detail > LIMITS.texture_split:
        raise DoseError(f"looks like an MR scan, not a dose map (anatomical detail: texture "
                        f"{detail:.2f} > {LIMITS.texture_split}), whatever --dose-unit says", path,
                        fix=DOSE_FIX)
    return {"texture": round(detail, 3), "modality": facts.get("Modality") or None}


def _same_pixels(a: sitk.Image, b: sitk.Image) -> bool:
    if a.GetSize() != b.GetSize() or not np.allclose(a.GetSpacing(), b.GetSpacing()):
        return False
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3):
        return False
    return bool(np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)))


def check_visits(post_op: sitk.Image, event: sitk.Image, post_path: str | Path,
                 event_path: str | Path) -> None:
    """Two different scans, in order (DICOM dates), of one patient (DICOM PatientID)."""
    if Path(post_path).resolve() == Path(event_path).resolve():
        raise InputError("is given as both --t1 scans (post-op and event)", event_path,
                         fix="give the post-op scan first and the event scan second")
    a, b = image_facts(post_op), image_facts(event)
    uid = a.get("SeriesInstanceUID")
    if (uid and uid == b.get("SeriesInstanceUID")) or _same_pixels(post_op, event):
        raise InputError(f"is the same scan as the post-op --t1 {post_path}", event_path,
                         fix="give the event scan (the new enhancing lesion) as the second --t1")
    pid_a, pid_b = a.get("PatientID"), b.get("PatientID")
    if pid_a and pid_b and pid_a != pid_b:
        raise InputError(f"is of patient {pid_b!r}, the post-op --t1 of patient {pid_a!r}",
                         event_path, fix="give both scans of the same patient")
    t_post, t_event = _visit_time(a), _visit_time(b)
    if t_post and t_event and t_post[:len(t_event)] > t_event[:len(t_post)]:
        raise InputError(f"the post-op scan ({_pretty(t_post)}) is later than the event scan "
                         f"{event_path} ({_pretty(t_event)}): the visits look swapped", post_path,
                         fix="the first --t1 is the post-op scan, the second the event scan")


def check_dose_patient(post_op: sitk.Image, dose: sitk.Image, dose_path: str | Path) -> None:
    """The RTDOSE's PatientID, when it and the post-op scan have one, must match."""
    pid_scan = image_facts(post_op).get("PatientID")
    pid_dose = image_facts(dose).get("PatientID")
    if pid_scan and pid_dose and pid_scan != pid_dose:
        raise DoseError(f"is the dose of patient {pid_dose!r}, the scans are of patient "
                        f"{pid_scan!r}", dose_path, fix="give the dose plan of this patient")


class CasePaths(Protocol):
    """The input paths the gate names in its refusals (ricecli.prepare.CaseInputs has them)."""

    @property
    def post_op(self) -> str | Path: ...
    @property
    def event(self) -> str | Path: ...
    @property
    def dose(self) -> str | Path: ...


def check_case(inputs: CasePaths, post_op: sitk.Image, event: sitk.Image,
               dose_gy: sitk.Image) -> dict:
    """Every role check of one case, cheapest first; the measurements for qa.json."""
    check_visits(post_op, event, inputs.post_op, inputs.event)
    check_dose_patient(post_op, dose_gy, inputs.dose)
    check_volume(post_op, inputs.post_op, "post-op (first) --t1")
    check_volume(event, inputs.event, "event (second) --t1")
    check_volume(dose_gy, inputs.dose, "--dose")
    dose_path = Path(inputs.dose).resolve()
    for t1_path in (inputs.post_op, inputs.event):
        if Path(t1_path).resolve() == dose_path:
            raise InputError("is given both as a --t1 scan and as the --dose", inputs.dose,
                             fix=DOSE_FIX)
    found = {"post_op": check_t1(post_op, inputs.post_op, "post-op (first)"),
             "event": check_t1(event, inputs.event, "event (second)"),
             "dose": check_dose(dose_gy, inputs.dose)}
    return found

"""Read the radiotherapy dose in absolute Gy: a DICOM RTDOSE (io/rtdose.py) or an image file.

Whatever the source, the dose is checked once here: finite, not negative, not zero, plausible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ricecli.errors import DoseError, InputError
from ricecli.io.base import existing_path, image_facts, is_dicom_file, note, tag_image
from ricecli.io.rtdose import read_rtdose, rtdose_factor, single_rtdose
from ricecli.io.volume import read_volume
from ricecli.qa import LIMITS


def read_dose(
    path: str | Path,
    unit: str = "Gy",
    fractions: int | None = None,
    relative_scale_gy: float | None = None,
    notes: list[str] | None = None,
) -> sitk.Image:
    """Absolute dose in Gy as a float32 image in the world frame the file defines."""
    path = existing_path(path)
    unit_key = str(unit).strip().lower()
    if unit_key not in ("gy", "cgy"):
        raise DoseError(f"unknown dose unit {unit!r}", path, fix="use --dose-unit Gy or cGy")
    if fractions is not None and (int(fractions) != fractions or fractions < 1):
        raise DoseError(f"--dose-fractions must be a whole number >= 1, not {fractions}", path,
                        fix="give the number of fractions, e.g. --dose-fractions 30")
    if path.is_dir():
        path = single_rtdose(path)
    if is_dicom_file(path):
        image, ds = read_rtdose(path, notes)
        factor = rtdose_factor(ds, path, unit_key, fractions, relative_scale_gy, notes)
        hint = "check the planning-system export and --dose-fractions"
    else:
        image = read_volume(path, notes, what="a dose").image
        factor = 0.01 if unit_key == "cgy" else 1.0
        if fractions is not None:
            factor *= fractions
            note(notes, f"{path.name}: image dose taken per fraction, x {fractions} fractions")
        if relative_scale_gy is not None:
            note(notes, f"{path.name}: relative scale ignored: an image dose is in Gy or cGy")
        hint = "pass --dose-unit cGy" if unit_key == "gy" else "check the dose file's unit"
    facts = image_facts(image)
    dose = image * factor if factor != 1.0 else image
    return tag_image(_checked(dose, path, hint, notes), facts)


def _checked(dose: sitk.Image, path: Path, hint: str, notes: list[str] | None) -> sitk.Image:
    """Refuse non-finite, negative, all-zero or implausibly high doses; clip tiny negatives."""
    values = sitk.GetArrayViewFromImage(dose)
    lo, hi = float(values.min()), float(values.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError("dose holds NaN or infinite values", path, fix="export the dose again")
    if hi <= 0:
        if lo < 0:
            raise DoseError(f"dose is negative everywhere (max {hi:.3g} Gy, min {lo:.3g} Gy)",
                            path, fix="give an absolute dose map in Gy (not a difference or "
                            "an inverted map)")
        raise DoseError("dose is zero everywhere", path, fix="give the plan's dose distribution")
    if hi > LIMITS.max_plausible_dose_gy:
        looks = "looks like cGy" if "cGy" in hint else "is implausible"
        raise DoseError(f"maximum dose {hi:.1f} Gy {looks}", path, fix=hint)
    if lo < 0:
        if lo < -0.01 * hi - 0.01:
            raise DoseError(f"dose has negative values (min {lo:.3g} Gy)", path,
                            fix="give an absolute dose map (no differences or residuals)")
        dose = sitk.Clamp(dose, sitk.sitkFloat32, 0.0, hi)
        note(notes, f"{path.name}: tiny negative dose values ({lo:.2g} Gy) set to 0")
    return sitk.Cast(dose, sitk.sitkFloat32)

"""Read the radiotherapy dose in Gy: DICOM RTDOSE (pydicom) or an image file.

PLACEHOLDER until the dose work lands: the signature below is the contract.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk


def read_dose(
    path: str | Path,
    unit: str = "Gy",
    fractions: int | None = None,
    relative_scale_gy: float | None = None,
) -> sitk.Image:
    """Absolute dose in Gy as a float32 image in the world frame the file defines."""
    img = sitk.ReadImage(str(path), sitk.sitkFloat32)
    return img / 100.0 if unit.lower() == "cgy" else img

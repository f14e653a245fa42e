"""Read MR volumes (NIfTI, NRRD, MHA/MHD, DICOM series folders) with world geometry.

PLACEHOLDER until the reading work lands: the signatures below are the contract.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk


def read_mr(path: str | Path) -> sitk.Image:
    """A validated 3D scalar float32 image in LPS world geometry."""
    return sitk.ReadImage(str(path), sitk.sitkFloat32)


def read_mask(path: str | Path) -> sitk.Image:
    """A 3D binary mask (uint8, 0/1)."""
    return sitk.ReadImage(str(path), sitk.sitkUInt8) > 0


def geometry_summary(image: sitk.Image) -> dict:
    """Size, spacing, origin, direction as plain lists, for qa.json and reports."""
    return {
        "size": list(image.GetSize()),
        "spacing_mm": [round(s, 4) for s in image.GetSpacing()],
        "origin_mm": [round(o, 3) for o in image.GetOrigin()],
        "direction": [round(d, 5) for d in image.GetDirection()],
    }

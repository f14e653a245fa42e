"""The brain template (MNI ICBM152 2009a, shipped compact) and the model-space grid built on it.

Model space is an axis-aligned grid (identity direction) in the template's LPS world frame, so
the template images and the model-space grid share world coordinates: no transform between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ricecli.spec import ModelSpace

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "data" / "template"
BRAIN_THRESHOLD = 0.2  # nilearn's rule for the MNI152 brain mask: T1 > 0.2 of its maximum


@dataclass(frozen=True)
class Template:
    """Template T1 (skull-stripped), brain mask (uint8) and GM/WM probabilities (float32 0..1;
    read on first use: only the simulator needs them)."""

    t1: sitk.Image
    mask: sitk.Image

    @cached_property
    def gm(self) -> sitk.Image:
        """Grey-matter probability."""
        return _read_unit("gm")

    @cached_property
    def wm(self) -> sitk.Image:
        """White-matter probability."""
        return _read_unit("wm")


def _read_unit(name: str) -> sitk.Image:
    """One shipped uint8 image (value/255) as float32 in 0..1."""
    image = sitk.ReadImage(str(TEMPLATE_DIR / f"{name}.nii.gz"))
    return sitk.Cast(sitk.Cast(image, sitk.sitkFloat32) / 255.0, sitk.sitkFloat32)


@lru_cache(maxsize=1)
def load_template() -> Template:
    """Read the template once per process (it is small: ~4.6 M voxels per image)."""
    t1 = _read_unit("t1")
    mask = sitk.BinaryFillhole(sitk.Cast(t1 > BRAIN_THRESHOLD, sitk.sitkUInt8))
    return Template(t1=t1, mask=mask)


def model_space_grid(space: ModelSpace) -> sitk.Image:
    """An empty uint8 image with the model-space geometry, to resample onto."""
    grid = sitk.Image([int(n) for n in space.size_xyz], sitk.sitkUInt8)
    grid.SetSpacing([float(s) for s in space.spacing_mm])
    grid.SetOrigin([float(o) for o in space.origin_mm])
    grid.SetDirection(np.eye(3).ravel().tolist())
    return grid

"""Synthetic heads (a brain-like ellipsoid, with or without scalp, skull and noisy air) and rigid
motions, for the brain-extraction and skull-stripped tests."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

TCGA = "mri/TCGA-FG-6692"


def make_image(voxels_zyx: np.ndarray, spacing=(1.0, 1.0, 1.0), direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(voxels_zyx.astype(np.float32))
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    return image


def rigid_motion(image: sitk.Image, angle_deg: float, shift_mm: tuple) -> sitk.Transform:
    """A rotation about an oblique axis through the image centre, then a shift."""
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    t = sitk.VersorRigid3DTransform()
    t.SetCenter(centre)
    t.SetRotation((1.0, 1.0, 0.0), float(np.deg2rad(angle_deg)))
    t.SetTranslation(shift_mm)
    return t


def moved(image: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """The same head after a rigid motion, on a zero-padded grid (nothing cut off)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    grid = sitk.ConstantPad(image, [30, 30, 4], [30, 30, 4], 0.0)
    return sitk.Resample(image, grid, transform, sitk.sitkLinear, 0.0)


def synthetic_head(skull_on: bool, noisy_air: bool, shape=(40, 48, 44), seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=float)
    c = [(n - 1) / 2 for n in shape]

    def ellipsoid(scale):
        return (((z - c[0]) / (0.30 * shape[0] * scale)) ** 2
                + ((y - c[1]) / (0.30 * shape[1] * scale)) ** 2
                + ((x - c[2]) / (0.30 * shape[2] * scale)) ** 2) <= 1

    voxels = np.zeros(shape)
    if skull_on:
        voxels[ellipsoid(1.45)] = 220.0  # scalp fat: bright on T1
        voxels[ellipsoid(1.3)] = 25.0  # skull: dark
    voxels[ellipsoid(1.0)] = 100.0 + 10 * rng.standard_normal(ellipsoid(1.0).sum())
    if noisy_air:
        voxels += np.abs(3.0 * rng.standard_normal(shape))  # Rician-like air noise
    return make_image(voxels, spacing=(2.0, 2.0, 2.0))

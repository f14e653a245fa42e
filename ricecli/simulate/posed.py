"""The same scan in another pose, and a plain dose for it: the material of pose-invariance checks
(tests/test_pose.py, benchmarks/pose.py). A posed copy holds the same voxels resampled after a
rigid motion, on a grid padded so that nothing is cut off, as a scanner would store the head
had it lain differently."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk


def posed_copy(image: sitk.Image, angles_deg: Sequence[float], shift_mm: Sequence[float],
               pad_mm: float = 40.0) -> sitk.Image:
    """The same voxels after a rigid motion about the image centre, on a padded grid of the
    image's own direction and spacing (the anatomy moves in the world; nothing is cut off)."""
    size = np.asarray(image.GetSize())
    spacing = np.asarray(image.GetSpacing())
    centre = image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist())
    motion = sitk.Euler3DTransform()  # new-grid point -> original point
    motion.SetCenter(centre)
    motion.SetRotation(*np.radians(angles_deg))
    motion.SetTranslation([float(t) for t in shift_mm])
    pad = np.ceil(pad_mm / spacing).astype(int)
    new_size = size + 2 * pad
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    new_centre = np.asarray(motion.GetInverse().TransformPoint(centre))
    origin = new_centre - direction @ (spacing * (new_size - 1) / 2.0)
    grid = sitk.Image([int(n) for n in new_size], sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin(origin.tolist())
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, motion, sitk.sitkLinear, 0.0)


def gaussian_dose(post_op: sitk.Image, peak_gy: float = 60.0, sigma_mm: float = 30.0,
                  spacing_mm: float = 2.5) -> sitk.Image:
    """A smooth dose in the post-op frame: a Gaussian field centred a little off the head's
    centroid (so that it is not symmetric), on a 2.5 mm axis-aligned grid over the scan."""
    arr = sitk.GetArrayViewFromImage(post_op)
    head = sitk.Cast(post_op > float(np.percentile(arr[arr > 0], 20)) if np.any(arr > 0)
                     else post_op > 0, sitk.sitkUInt8)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(head)
    centre = np.asarray(stats.GetCentroid(1)) + np.array([20.0, 10.0, 10.0])
    lo = np.asarray(post_op.TransformIndexToPhysicalPoint((0, 0, 0)))
    hi = np.asarray(post_op.TransformIndexToPhysicalPoint([n - 1 for n in post_op.GetSize()]))
    low, high = np.minimum(lo, hi) - 20, np.maximum(lo, hi) + 20
    size = np.ceil((high - low) / spacing_mm).astype(int) + 1
    zyx = np.indices(size[::-1]).reshape(3, -1)[::-1].T
    world = low + zyx * spacing_mm
    r2 = ((world - centre) ** 2).sum(1)
    values = (peak_gy * np.exp(-r2 / (2 * sigma_mm**2))).reshape(size[::-1]).astype(np.float32)
    dose = sitk.GetImageFromArray(values)
    dose.SetSpacing([spacing_mm] * 3)
    dose.SetOrigin(low.tolist())
    return dose


def centred_dose(image: sitk.Image, peak_gy: float = 60.0, sigma_mm: float = 30.0) -> sitk.Image:
    """A Gaussian dose at the image's centre, on a ~3 mm grid of its own frame (QA checks on
    real scans: scripts/qa_calibration.py, tests/test_qa.py)."""
    ref = sitk.BinShrink(image, [max(1, int(round(3 / s))) for s in image.GetSpacing()])
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in image.GetSize()]))
    zyx = np.indices(ref.GetSize()[::-1]).reshape(3, -1)[::-1].T
    world = np.asarray(ref.GetOrigin()) + (zyx * np.asarray(ref.GetSpacing())) @ \
        np.asarray(ref.GetDirection()).reshape(3, 3).T
    values = peak_gy * np.exp(-((world - centre) ** 2).sum(1) / (2 * sigma_mm**2))
    out = sitk.GetImageFromArray(values.reshape(ref.GetSize()[::-1]).astype(np.float32))
    out.CopyInformation(ref)
    return out

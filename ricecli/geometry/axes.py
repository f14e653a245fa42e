"""Where a rigid registration starts: the principal axes of two brain masks, or their centroids.

The template registration defines model space, so it must not depend on how the head lay in the
scanner: starting from the principal axes of the two brain masks (template, event), which follow
the anatomy whatever the pose, it lands in the same optimum (MI from a centroid start fell into
different optima: 2-22 mm apart).
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

from ricecli.geometry.resample import foreground_mask

# principal axes give the start only when they are this close to upright: beyond it the axes
# of a nearly round brain may have swapped, and the centred upright start is safer
MAX_AXES_START_DEG = 45.0


def principal_axes(mask: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """World centroid and principal axes (columns, largest spread first) of a binary mask.

    numpy sums in a fixed order (ITK's label statistics are threaded). An empty mask gives the
    image centre and the identity.
    """
    zyx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
    if len(zyx) < 4:
        centre = [(n - 1) / 2 for n in mask.GetSize()]
        return np.asarray(mask.TransformContinuousIndexToPhysicalPoint(centre)), np.eye(3)
    direction = np.asarray(mask.GetDirection()).reshape(3, 3)
    points = np.asarray(mask.GetOrigin()) + (zyx[:, ::-1] * mask.GetSpacing()) @ direction.T
    centroid = points.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((points - centroid).T))
    return centroid, vectors[:, ::-1]


def axes_are_clear(mask: sitk.Image) -> bool:
    """Whether a mask's principal axes are well defined: each spread at least 15 % above the
    next (a brain whose two smaller spreads are alike has no stable second axis)."""
    zyx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
    if len(zyx) < 4:
        return False
    direction = np.asarray(mask.GetDirection()).reshape(3, 3)
    points = (zyx[:, ::-1] * mask.GetSpacing()) @ direction.T
    spreads = np.linalg.eigvalsh(np.cov((points - points.mean(axis=0)).T))[::-1]
    return bool(spreads[0] > 1.15 * spreads[1] and spreads[1] > 1.15 * spreads[2])


def principal_axes_start(fixed_region: sitk.Image, moving_region: sitk.Image,
                         use_axes: bool = True) -> sitk.Euler3DTransform:
    """Rotation about the fixed region's centroid that lays its principal axes onto the moving
    region's, translation onto the moving centroid: a start that follows the anatomy.

    Each axis has two signs: of the proper rotations the one closest to upright is taken (heads
    lie within ~20 deg of upright, a flipped brain is not an option). Beyond MAX_AXES_START_DEG,
    or with `use_axes` off, only the centroids are matched.
    """
    c_fixed, axes_fixed = principal_axes(fixed_region)
    c_moving, axes_moving = principal_axes(moving_region)
    start = sitk.Euler3DTransform()
    start.SetCenter(c_fixed.tolist())
    start.SetTranslation((c_moving - c_fixed).tolist())
    if not use_axes:
        return start
    best_angle, best = 180.0, None
    for signs in itertools.product((1.0, -1.0), repeat=3):
        rotation = (axes_moving * np.asarray(signs)) @ axes_fixed.T  # fixed axis -> moving axis
        if np.linalg.det(rotation) < 0:
            continue
        angle = float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1))))
        if angle < best_angle:
            best_angle, best = angle, rotation
    if best is not None and best_angle <= MAX_AXES_START_DEG:
        start.SetMatrix(best.ravel().tolist())
    return start


def centred_start(fixed_region: sitk.Image, moving_w: sitk.Image) -> sitk.Euler3DTransform:
    """Rotation about the fixed region's centroid, translation onto the moving head's centroid.

    Centroids of binary masks, not intensity moments: bright scalp fat and enhancing vessels
    would pull intensity moments around. For a skull-on scan the head's centroid sits a little
    below and in front of the brain's; the coarse pyramid level absorbs that offset.
    """
    return principal_axes_start(fixed_region, foreground_mask(moving_w), use_axes=False)

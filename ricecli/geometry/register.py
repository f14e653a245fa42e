"""Rigid registration (Euler3D, Mattes MI, multi-resolution), deterministic, with QA numbers.

Two uses: post-op T1c -> event T1c (same patient) and event brain -> template brain (fixed =
template, sampled inside its brain mask). The template registration defines model space, so it
must not depend on how the head lay in the scanner: it samples the template's brain and starts
from the principal axes of the two brain masks (template, event), which follow the anatomy
whatever the pose (MI from a centroid start fell into different optima: 2-22 mm apart).
Both run at a 3 mm working resolution (model space is 3 mm) with every voxel of the region
sampled and ITK single-threaded, so the same inputs give the same bits (ITK's threaded metric
sums in a varying order; random sampling adds noise).
The returned transform maps FIXED points to MOVING points (ITK convention), so
`sitk.Resample(moving, fixed_grid, transform)` brings moving onto fixed.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

WORKING_SPACING_MM = 3.0
# the optimiser stops when its step falls below this (mm, and mm at the brain's edge for
# rotations): 1e-3 cost twice the iterations for < 0.1 mm (benchmarks/pose.py)
MIN_STEP = 0.01
ITERATIONS = 100
# step shrink on a direction change: 0.5 (the default) shrank the step before a 6-9 deg
# rotation was found on smooth anatomy (300 iterations); 0.7 converges in about half
RELAXATION = 0.7
BINS = 50
# principal axes give the start only when they are this close to upright: beyond it the axes
# of a nearly round brain may have swapped, and the centred upright start is safer
MAX_AXES_START_DEG = 45.0
# QA limits (see `registration_qa`)
MAX_ROTATION_DEG = 50.0
MAX_SHIFT_FROM_START_MM = 40.0
MIN_FOV_OVERLAP = 0.80
MIN_ON_HEAD = 0.80
MIN_BRAIN_DICE = 0.80
# same patient, T1 vs T1c measured 0.33-0.39 (docs/qa.md); other patients are caught by
# ricecli.qa's local agreement, which this global correlation cannot do (0.33-0.48 there)
MIN_NCC_SAME_CONTRAST = 0.25


@dataclass
class Registration:
    """A rigid transform (fixed -> moving points) and how the optimisation went."""

    transform: sitk.Euler3DTransform
    metric: float
    iterations: int
    seconds: float
    qa: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.qa.get("likely_failed", False))


@contextlib.contextmanager
def single_threaded_itk() -> Iterator[None]:
    """ITK on one thread inside the block: its reductions (the metric) then sum in one order."""
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def working_image(image: sitk.Image, spacing_mm: float = WORKING_SPACING_MM) -> sitk.Image:
    """About `spacing_mm` isotropic, in the image's own orientation: block-average (BinShrink)
    fine axes, then interpolate thick slices to `spacing_mm` so the pyramid's shrink factors
    mean the same on every axis (a 5.5 mm slice shrunk by 4 would leave a handful of slices)."""
    factors = [max(1, int(round(spacing_mm / s))) for s in image.GetSpacing()]
    img = sitk.Cast(image, sitk.sitkFloat32)
    if max(factors) > 1:
        img = sitk.BinShrink(img, factors)
    spacing = np.asarray(img.GetSpacing())
    if spacing.max() <= 1.5 * spacing_mm:
        return img
    target = np.minimum(spacing, spacing_mm)
    extent = spacing * np.asarray(img.GetSize())
    size = [int(n) for n in np.maximum(1, np.round(extent / target))]
    # keep the first and last voxel centres' span: shift the origin by the half-voxel change
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    origin = np.asarray(img.GetOrigin()) + direction @ ((target - spacing) / 2.0)
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(target.tolist())
    ref.SetDirection(img.GetDirection())
    ref.SetOrigin(origin.tolist())
    return sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 0.0)


def foreground_mask(image: sitk.Image) -> sitk.Image:
    """Head (or brain) voxels: above 10 % of the robust range over the background, holes filled;
    uint8 0/1. The range, not `> 0`: z-scored or offset images have a negative background."""
    arr = sitk.GetArrayViewFromImage(image)
    lo, hi = (float(v) for v in np.percentile(arr, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(arr.min()), float(arr.max())
    return sitk.BinaryFillhole(sitk.Cast(image > lo + 0.1 * (hi - lo), sitk.sitkUInt8))


def on_grid(mask: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """A binary mask resampled (nearest neighbour) onto another image's grid; uint8 0/1."""
    out = sitk.Resample(sitk.Cast(mask > 0, sitk.sitkUInt8), grid, sitk.Transform(),
                        sitk.sitkNearestNeighbor, 0)
    return sitk.Cast(out, sitk.sitkUInt8)


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


def _make_method(sample_region: sitk.Image, shrink: list[int], smooth: list[float],
                 iterations: int) -> sitk.ImageRegistrationMethod:
    """Mattes MI (50 bins) over every voxel of the region, regular-step descent, pyramid."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=BINS)
    reg.SetMetricSamplingStrategy(reg.NONE)  # every voxel: no sampling noise, no seed
    reg.SetMetricFixedMask(sample_region)
    # gradients at the sample points only, not a gradient image of the whole moving volume
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetMetricUseFixedImageGradientFilter(False)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=MIN_STEP, numberOfIterations=iterations,
        gradientMagnitudeTolerance=1e-8, relaxationFactor=RELAXATION,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(smooth)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def register_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    fixed_mask: sitk.Image | None = None,
    same_contrast: bool = True,
    spacing_mm: float = WORKING_SPACING_MM,
    moving_mask: sitk.Image | None = None,
) -> Registration:
    """Rigidly register `moving` onto `fixed` (both 3D, LPS world) at ~`spacing_mm`.

    `fixed_mask` is the region to sample (with a 3 mm rim; default: the fixed head).
    `moving_mask`, the same structure in the moving scan (the brain of both, say), gives a
    principal-axes start; without it the start matches centroids. The moving scan is not
    masked: its brain mask's edge varies with the pose (extracted masks by a few %), the
    anatomy's edge does not (TCGA, 3 poses: 0.4-0.8 mm apart unmasked, 0.8-1.3 mm masked).
    `same_contrast` says both are T1 of one patient, so correlation after registration is a
    fair check (not for template T1 vs T1c, nor CT vs MR). Deterministic: same inputs, same bits.
    """
    t0 = time.perf_counter()
    with single_threaded_itk():
        fixed_w = working_image(fixed, spacing_mm)
        moving_w = working_image(moving, spacing_mm)
        region_w = on_grid(fixed_mask, fixed_w) if fixed_mask is not None \
            else foreground_mask(fixed_w)
        moving_region_w = None
        if moving_mask is not None:
            moving_region_w = on_grid(moving_mask, moving_w)
            start = principal_axes_start(region_w, moving_region_w)
        else:
            start = centred_start(region_w, moving_w)
        # sample the region and its rim: the head/brain boundary carries much of the signal
        sample_w = sitk.BinaryDilate(region_w, [1, 1, 1])
        starts = {"principal axes" if moving_mask is not None else "centroids": start}
        if moving_region_w is not None and not (axes_are_clear(region_w)
                                                and axes_are_clear(moving_region_w)):
            # axes ill-defined: also start from the centroids, keep the better metric (same
            # images and samples, so the values compare)
            starts["centroids"] = centred_start(region_w, moving_w)
        best = None
        for name, first in starts.items():
            transform = sitk.Euler3DTransform(first)
            reg = _make_method(sample_w, [2, 1], [float(spacing_mm), 0.0], ITERATIONS)
            reg.SetInitialTransform(transform, inPlace=True)
            iterations = [0]
            reg.AddCommand(sitk.sitkIterationEvent,
                           lambda it=iterations: it.__setitem__(0, it[0] + 1))
            reg.Execute(fixed_w, moving_w)
            metric = float(reg.GetMetricValue())
            if best is None or metric < best[0]:
                best = (metric, name, first, transform, iterations[0],
                        reg.GetOptimizerStopConditionDescription())
        metric, name, start, transform, count, stop = best
        qa = registration_qa(fixed_w, moving_w, transform, start, region_w, same_contrast,
                             moving_region=moving_region_w)
    qa.update(metric=round(metric, 4), iterations=count, start=name, starts=list(starts),
              stop=stop)
    return Registration(transform, metric, count, time.perf_counter() - t0, qa)


def register_to_template(template_t1: sitk.Image, template_mask: sitk.Image, event: sitk.Image,
                         event_brain: sitk.Image | None, skull_on: bool) -> Registration:
    """The event scan onto the template (which defines model space), from its brain's axes.

    A skull-on scan is registered twice, whole and masked to its brain plus 6 mm, and the
    result whose brain overlaps the template's best is kept: scalp and neck can hold MI in a
    wrong optimum (a simulated skull-on case: 18 mm off in one of three poses, Dice 0.91 vs
    0.95), the brain mask's edge can (TCGA: 5 mm off masked); one of the two is right.
    """
    whole = register_rigid(template_t1, event, fixed_mask=template_mask,
                           moving_mask=event_brain, same_contrast=False)
    if event_brain is None or not skull_on:
        return whole
    rim = sitk.BinaryDilate(on_grid(event_brain, event),
                            [max(1, int(round(6.0 / s))) for s in event.GetSpacing()])
    masked = register_rigid(template_t1, sitk.Mask(event, rim), fixed_mask=template_mask,
                            moving_mask=event_brain, same_contrast=False)
    best = whole if whole.qa["brain_dice"] >= masked.qa["brain_dice"] else masked
    best.qa["candidates"] = {"whole_head": whole.qa["brain_dice"],
                             "brain_and_6mm": masked.qa["brain_dice"]}
    best.seconds = whole.seconds + masked.seconds
    return best


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def registration_qa(
    fixed_w: sitk.Image,
    moving_w: sitk.Image,
    transform: sitk.Euler3DTransform,
    start: sitk.Euler3DTransform,
    region: sitk.Image,
    same_contrast: bool,
    moving_region: sitk.Image | None = None,
) -> dict:
    """Flag a likely failed registration; any one rule is enough.

    - rotation: any Euler angle beyond 50 deg (heads lie within ~30 deg of upright in scanners:
      the TCGA scan of ../shared/data is pitched 28 deg from the template; MI drifting into a
      flipped or tilted optimum shows up here);
    - shift: the optimiser moved the centre more than 40 mm from its start (centroids or
      principal axes: a correct answer lies within ~15-20 mm; larger means it slid off);
    - fov: under 80 % of the fixed region (template brain, or fixed head) lands inside the moving
      image (a scan that misses much of the brain, or a transform that pushed it out of view);
    - on_head: under 80 % of the fixed region lands on the moving image's foreground (the
      template brain must fall inside the head, or inside a skull-stripped brain);
    - brain_dice: with `moving_region` (the moving brain), the Dice overlap of the two brains
      after registration is below 0.80 (on the real scans and poses of benchmarks/pose.py:
      0.88-0.95; a tilted or shifted brain loses it fast);
    - ncc: for same-contrast pairs (post-op T1 to event T1c), the normalised cross-correlation
      over the fixed region after registration is below MIN_NCC_SAME_CONTRAST.
    Mattes MI values and the template NCC depend on content (template T1 vs T1c measures
    0.05-0.35 even when right) and are reported, not judged.
    """
    resampled = sitk.Resample(moving_w, fixed_w, transform, sitk.sitkLinear, 0.0)
    ones = sitk.Image(moving_w.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving_w)
    inside = sitk.Resample(ones, fixed_w, transform, sitk.sitkNearestNeighbor, 0)
    m = sitk.GetArrayViewFromImage(region) > 0
    fov = float((sitk.GetArrayViewFromImage(inside)[m] > 0).mean()) if m.any() else 0.0
    sel = m & (sitk.GetArrayViewFromImage(inside) > 0)
    moving_fg = moving_region if moving_region is not None else foreground_mask(moving_w)
    head = sitk.Resample(moving_fg, fixed_w, transform, sitk.sitkNearestNeighbor, 0)
    head_arr = sitk.GetArrayViewFromImage(head) > 0
    on_head = float(head_arr[m].mean()) if m.any() else 0.0
    brain_dice = None
    if moving_region is not None:
        brain_dice = float(2 * (head_arr & m).sum() / max(1, head_arr.sum() + m.sum()))
    ncc = _ncc(sitk.GetArrayViewFromImage(fixed_w)[sel].astype(np.float64),
               sitk.GetArrayViewFromImage(resampled)[sel].astype(np.float64)) if sel.any() else 0.0
    angles = np.degrees(np.abs(transform.GetParameters()[:3]))
    shift = float(np.linalg.norm(np.subtract(transform.GetTranslation(), start.GetTranslation())))
    reasons = []
    if float(angles.max()) > MAX_ROTATION_DEG:
        reasons.append(f"rotation {angles.max():.0f} deg > {MAX_ROTATION_DEG:.0f}")
    if shift > MAX_SHIFT_FROM_START_MM:
        reasons.append(f"moved {shift:.0f} mm from its start")
    if fov < MIN_FOV_OVERLAP:
        reasons.append(f"only {fov:.0%} of the fixed region is inside the moving scan")
    if brain_dice is None and on_head < MIN_ON_HEAD:
        reasons.append(f"only {on_head:.0%} of the fixed region lands on the moving head")
    if brain_dice is not None and brain_dice < MIN_BRAIN_DICE:
        reasons.append(f"the brains overlap only {brain_dice:.2f} (Dice) after registration")
    if same_contrast and ncc < MIN_NCC_SAME_CONTRAST:
        reasons.append(f"correlation after registration {ncc:.2f} < {MIN_NCC_SAME_CONTRAST}")
    return {
        "rotation_deg": [round(float(a), 2) for a in angles],
        "translation_mm": [round(float(t), 2) for t in transform.GetTranslation()],
        "shift_from_start_mm": round(shift, 2),
        "fov_overlap": round(fov, 4),
        "on_head": round(on_head, 4),
        "ncc": round(ncc, 4),
        **({} if brain_dice is None else {"brain_dice": round(brain_dice, 4)}),
        "likely_failed": bool(reasons),
        "reasons": reasons,
    }

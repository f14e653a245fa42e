"""Rigid registration (Euler3D, Mattes MI, multi-resolution), deterministic, with QA numbers.

Two uses: post-op T1c -> event T1c (same patient) and event brain -> template brain (fixed =
template, sampled inside its brain mask), started from the principal axes of the two brains
(geometry/axes.py) and checked by geometry/register_qa.py.
Both run at a 3 mm working resolution (model space is 3 mm) with every voxel of the region
sampled and ITK single-threaded, so the same inputs give the same bits (ITK's threaded metric
sums in a varying order; random sampling adds noise).
The returned transform maps FIXED points to MOVING points (ITK convention), so
`sitk.Resample(moving, fixed_grid, transform)` brings moving onto fixed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from ricecli.geometry.axes import axes_are_clear, centred_start, principal_axes_start
from ricecli.geometry.register_qa import registration_qa
from ricecli.geometry.resample import WORKING_SPACING_MM, foreground_mask, on_grid, working_image
from ricecli.geometry.template import load_template

# the optimiser stops when its step falls below this (mm, and mm at the brain's edge for
# rotations): 1e-3 cost twice the iterations for < 0.1 mm (benchmarks/pose.py)
MIN_STEP = 0.01
ITERATIONS = 100
# step shrink on a direction change: 0.5 (the default) shrank the step before a 6-9 deg
# rotation was found on smooth anatomy (300 iterations); 0.7 converges in about half
RELAXATION = 0.7
BINS = 50
PITCHED_STARTS_DEG = (-30.0, 30.0)  # extra starts (about left-right) when the axes are unclear
# ... towards the template, on thick-slab scans only: there upright MI stopped 30 deg short (a
# 6 mm copy of TCGA). Not between two visits of one patient: on a demo case they doubled that
# registration's time (4.9 -> 11.8 s for both) for no better fit.
PITCHED_STARTS_FROM_SLAB_MM = 3.0
PITCHED_STARTS_BELOW_DICE = 0.90  # ... and only when the brain then overlaps the template less


@dataclass
class Registration:
    """A rigid transform (fixed -> moving points) and how the optimisation went."""

    transform: sitk.Euler3DTransform
    metric: float
    iterations: int
    seconds: float
    qa: dict = field(default_factory=dict)


# How many blocks run single-threaded ITK now (prepare runs registrations side by side),
# and the thread count to restore when the last one ends.
_ITK_LOCK = threading.Lock()
_itk_state = {"inside": 0, "before": 0}


@contextlib.contextmanager
def single_threaded_itk() -> Iterator[None]:
    """ITK on one thread inside the block: its reductions (the metric) then sum in one order.

    Safe when blocks overlap on several Python threads: the first in sets one thread, the last
    out restores the count (a plain save/restore per block would let one block restore the
    count while another still registers, or leave ITK single-threaded for good)."""
    with _ITK_LOCK:
        if _itk_state["inside"] == 0:
            _itk_state["before"] = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        _itk_state["inside"] += 1
    try:
        yield
    finally:
        with _ITK_LOCK:
            _itk_state["inside"] -= 1
            if _itk_state["inside"] == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_itk_state["before"])


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


@lru_cache(maxsize=2)
def template_working_grid(spacing_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """The template T1 and its brain on the working grid, made once per process (a skull-on
    case registers to the template twice, a batch once per case)."""
    template = load_template()
    fixed_w = working_image(template.t1, spacing_mm)
    return fixed_w, on_grid(template.mask, fixed_w)


def register_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    fixed_mask: sitk.Image | None = None,
    same_contrast: bool = True,
    spacing_mm: float = WORKING_SPACING_MM,
    moving_mask: sitk.Image | None = None,
    pitched_starts: bool = False,
) -> Registration:
    """Rigidly register `moving` onto `fixed` (both 3D, LPS world) at ~`spacing_mm`.

    `fixed_mask` is the region to sample (with a 3 mm rim; default: the fixed head).
    `moving_mask`, the same structure in the moving scan (the brain of both, say), gives a
    principal-axes start; without it the start matches centroids. The moving scan is not
    masked: its brain mask's edge varies with the pose (extracted masks by a few %), the
    anatomy's edge does not (TCGA, 3 poses: 0.4-0.8 mm apart unmasked, 0.8-1.3 mm masked).
    `same_contrast` says both are T1 of one patient, so correlation after registration is a
    fair check (not for template T1 vs T1c, nor CT vs MR). `pitched_starts`: when the axes are
    unclear, try only the centroid start pitched +-30 deg (see `_to_template`). Deterministic:
    same inputs, same bits.
    """
    t0 = time.perf_counter()
    with single_threaded_itk():
        template = load_template()
        if fixed is template.t1 and fixed_mask is template.mask:
            fixed_w, region_w = template_working_grid(spacing_mm)
        else:
            fixed_w = working_image(fixed, spacing_mm)
            region_w = on_grid(fixed_mask, fixed_w) if fixed_mask is not None \
                else foreground_mask(fixed_w)
        moving_w = working_image(moving, spacing_mm)
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
            # axes ill-defined: also start from the centroids, upright and nodded forward and
            # back (heads lie up to ~30 deg pitched: TCGA 28 deg; from upright MI stopped 30 deg
            # short on a 6 mm copy of it), keep the best metric (same images and samples, so
            # the values compare)
            starts["centroids"] = centred_start(region_w, moving_w)
            if pitched_starts:  # only these: the caller has tried the two above
                upright = starts["centroids"]
                starts = {}
                for pitch in PITCHED_STARTS_DEG:
                    pitched = sitk.Euler3DTransform(upright)
                    pitched.SetRotation(float(np.radians(pitch)), 0.0, 0.0)
                    starts[f"centroids, pitched {pitch:+.0f} deg"] = pitched
        best: tuple[float, str, sitk.Euler3DTransform, sitk.Euler3DTransform, int, str] | None \
            = None
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
        assert best is not None  # `starts` is never empty
        metric, name, start, transform, count, stop = best
        qa = registration_qa(fixed_w, moving_w, transform, start, region_w, same_contrast,
                             moving_region=moving_region_w)
    qa.update(metric=round(metric, 4), iterations=count, start=name, starts=list(starts),
              stop=stop)
    return Registration(transform, metric, count, time.perf_counter() - t0, qa)


def _to_template(template_t1: sitk.Image, template_mask: sitk.Image, event: sitk.Image,
                 event_brain: sitk.Image | None) -> Registration:
    """One registration to the template; when a thick-slab scan's principal axes were unclear
    and its brain then overlaps the template's poorly, the pitched starts are tried too and
    the best metric of all starts wins (the same images and samples: the values compare)."""
    first = register_rigid(template_t1, event, fixed_mask=template_mask,
                           moving_mask=event_brain, same_contrast=False)
    thick = max(event.GetSpacing()) > PITCHED_STARTS_FROM_SLAB_MM
    axes_unclear = len(first.qa["starts"]) > 1
    if not (thick and axes_unclear) or first.qa["brain_dice"] >= PITCHED_STARTS_BELOW_DICE:
        return first
    pitched = register_rigid(template_t1, event, fixed_mask=template_mask,
                             moving_mask=event_brain, same_contrast=False, pitched_starts=True)
    best = pitched if pitched.metric < first.metric else first  # earlier starts win ties
    best.qa["starts"] = [*first.qa["starts"], *pitched.qa["starts"]]
    best.seconds = first.seconds + pitched.seconds
    return best


def register_to_template(template_t1: sitk.Image, template_mask: sitk.Image, event: sitk.Image,
                         event_brain: sitk.Image | None, skull_on: bool) -> Registration:
    """The event scan onto the template (which defines model space), from its brain's axes.

    A skull-on scan is registered twice, whole and masked to its brain plus 6 mm, and the
    result whose brain overlaps the template's best is kept: scalp and neck can hold MI in a
    wrong optimum (a simulated skull-on case: 18 mm off in one of three poses, Dice 0.91 vs
    0.95), the brain mask's edge can (TCGA: 5 mm off masked); one of the two is right.
    The two run side by side (each on one ITK thread: two cores work).
    """
    if event_brain is None or not skull_on:
        return _to_template(template_t1, template_mask, event, event_brain)
    rim = sitk.BinaryDilate(on_grid(event_brain, event),
                            [max(1, int(round(6.0 / s))) for s in event.GetSpacing()])
    masked_event = sitk.Mask(event, rim)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="register") as pool:
        whole_future = pool.submit(_to_template, template_t1, template_mask, event, event_brain)
        try:
            masked = _to_template(template_t1, template_mask, masked_event, event_brain)
        finally:
            whole = whole_future.result()  # its error first, as when it ran first
    best = whole if whole.qa["brain_dice"] >= masked.qa["brain_dice"] else masked
    best.qa["candidates"] = {"whole_head": whole.qa["brain_dice"],
                             "brain_and_6mm": masked.qa["brain_dice"]}
    best.seconds = whole.seconds + masked.seconds
    return best

"""Case preparation: the ONE code path that training and inference share.

read -> register (post-op -> event, event -> template, optional dose frame -> post-op)
-> compose the rigid transforms -> resample each channel once into model space -> brain mask
-> normalise (T1 z-scored in the brain, dose / spec.dose_scale_gy) -> 0 outside the brain.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pydicom
import SimpleITK as sitk

from ricecli.errors import DoseError, InputError
from ricecli.gate import check_case as gate_case
from ricecli.geometry.brain import extract_brain
from ricecli.geometry.register import (
    Registration,
    register_rigid,
    register_to_template,
    template_working_grid,
)
from ricecli.geometry.resample import (
    WORKING_SPACING_MM,
    affine_matrix,
    brain_points,
    on_grid,
    points_inside,
    resample_to_grid,
    scan_support,
    template_soft_mask,
)
from ricecli.geometry.stripped import looks_skull_stripped, stripped_brain
from ricecli.geometry.template import load_template, model_space_grid
from ricecli.io.dose import read_dose
from ricecli.io.volume import geometry_summary, read_mask, read_mr, read_scan
from ricecli.qa import LIMITS, agreement, assess, high_dose_in_brain
from ricecli.result import QAReport, qa_record
from ricecli.spec import Spec

T = TypeVar("T")
U = TypeVar("U")

OUTPUT_FILES = {"post_op": "post_op.nii.gz", "event": "event.nii.gz", "dose": "dose.nii.gz"}


@dataclass(frozen=True)
class CaseInputs:
    """Paths and dose options of one case (what `ricecli prepare` takes on its command line)."""

    post_op: str | Path
    event: str | Path
    dose: str | Path
    mask: str | Path | None = None
    dose_unit: str = "Gy"
    dose_fractions: int | None = None
    dose_frame: str | Path | None = None
    dose_relative_scale_gy: float | None = None
    brain_extraction: bool = True
    dose_frame_transform: str | Path | None = None  # post-op -> dose frame (.tfm, e.g. a REG)

    def paths(self) -> list[Path]:
        """Every input path (outputs must never land in or on one of them)."""
        items = (self.post_op, self.event, self.dose, self.mask, self.dose_frame,
                 self.dose_frame_transform)
        return [Path(p) for p in items if p is not None]


@dataclass
class PreparedCase:
    """Model-space channels (normalised float32, z,y,x), brain mask, geometry, QA and the
    wall time of each preparation stage."""

    channels: dict[str, np.ndarray]
    brain_mask: np.ndarray
    reference: sitk.Image
    event_image: sitk.Image
    model_to_event: sitk.Transform
    qa: QAReport = field(default_factory=lambda: QAReport("not assessed"))
    event_series: tuple[pydicom.Dataset, ...] = ()  # the event DICOM headers, for --dicom-out
    timings_s: dict[str, float] = field(default_factory=dict)


def _zscore(values: np.ndarray, brain: np.ndarray, weight: np.ndarray, name: str,
            path: str | Path) -> np.ndarray:
    """z-scored with the mean and std of the brain voxels that hold data, times `weight` (the
    soft brain mask times the scan's support): 0, the mean and the fill value, elsewhere."""
    v = values[brain & (weight >= 0.5)].astype(np.float64)
    std = float(v.std()) if v.size else 0.0
    if v.size < 100 or std <= 0:
        raise InputError(f"the {name} scan is empty or constant inside the brain after "
                         "registration", path, fix="check that it is a brain T1c of this patient")
    return ((values.astype(np.float64) - v.mean()) / std * weight).astype(np.float32)


def read_frame_transform(path: str | Path | None) -> np.ndarray | None:
    """4x4 matrix of a rigid/affine transform file mapping post-op points to dose-frame points
    (ITK's resampling direction, as `ricecli cohort` writes it from a DICOM REG), or None."""
    if path is None:
        return None
    try:
        transform = sitk.ReadTransform(str(path)).Downcast()
    except RuntimeError:
        raise InputError("is not a readable transform file", path,
                         fix="give the .tfm that ricecli cohort wrote (or a rigid ITK "
                         "transform from post-op to dose-frame points)") from None
    if not isinstance(transform, (sitk.Euler3DTransform, sitk.AffineTransform)) or \
            transform.GetDimension() != 3:
        raise InputError(f"holds a {transform.GetName()}, not a 3-D rigid transform", path,
                         fix="give a rigid (Euler3DTransform) or affine 3-D transform")
    return affine_matrix(transform)


def _reg_qa(reg: Registration) -> dict:
    return {**reg.qa, "seconds": round(reg.seconds, 3)}


def side_by_side(pool: ThreadPoolExecutor, first: Callable[[], T],
                 second: Callable[[], U]) -> tuple[T, U]:
    """`first` on a pool thread while `second` runs here (SimpleITK, ONNX Runtime and most of
    numpy release the GIL: two cores work). Errors come as if run in order: `first`'s wins."""
    return beside(pool.submit(first), second)


def beside(future: Future[T], second: Callable[[], U]) -> tuple[T, U]:
    """`second` here while `future`'s step runs; errors as if that step ran first."""
    try:
        second_result = second()
    except BaseException:
        future.result()  # raises its error, if it had one; else second's, below
        raise
    return future.result(), second_result


def brain_regions(event: sitk.Image, post_op: sitk.Image, user_mask: sitk.Image | None,
                  inputs: CaseInputs, pool: ThreadPoolExecutor
                  ) -> tuple[sitk.Image | None, sitk.Image | None, str]:
    """The brain of the event and post-op scans on their own grids, and where it came from.

    Event: the user's mask, else the foreground of a skull-stripped scan, else deepbet's
    extraction (unless turned off: then none, and the template's mask is used in model space).
    Post-op: its foreground when skull-stripped, else extracted when the event's was.
    The two scans are judged, then extracted, side by side.
    """
    def own_brain(image: sitk.Image, path: str | Path,
                  stripped: bool) -> tuple[sitk.Image | None, str]:
        if stripped:
            return stripped_brain(image), "skull-stripped scan"
        if not inputs.brain_extraction:
            return None, "template (brain extraction off)"
        try:
            return extract_brain(image), "extracted (deepbet)"
        except InputError as err:
            raise InputError(err.problem, path, fix=err.fix) from None

    def event_brain(stripped: bool) -> tuple[sitk.Image | None, str]:
        if user_mask is None:
            return own_brain(event, inputs.event, stripped)
        region = on_grid(user_mask, event)
        if not sitk.GetArrayViewFromImage(region).any():
            raise InputError("the mask does not overlap the event scan", inputs.mask,
                             fix="give a brain mask in the event scan's frame (--t1 #2)")
        return region, "user"

    event_stripped, post_stripped = side_by_side(
        pool, lambda: user_mask is None and looks_skull_stripped(event),
        lambda: looks_skull_stripped(post_op))
    event_extracted = user_mask is None and not event_stripped and inputs.brain_extraction
    if not (post_stripped or event_extracted):
        event_region, source = event_brain(event_stripped)
        return event_region, None, source
    (event_region, source), (post_region, _) = side_by_side(
        pool, lambda: event_brain(event_stripped),
        lambda: own_brain(post_op, inputs.post_op, post_stripped))
    return event_region, post_region, source


def prepare_case(inputs: CaseInputs, spec: Spec) -> PreparedCase:
    """Read, register, resample once, mask and normalise one case into `spec`'s model space."""
    if spec.t1_normalisation != "zscore_in_brain":
        raise ValueError(f"unknown t1_normalisation {spec.t1_normalisation!r}")
    timings: dict[str, float] = {}
    # Independent steps run two at a time (two scans read, judged and extracted; the two
    # registrations; the event and post-op resamplings): the same steps on the same inputs, so
    # the same bits (each registration stays single-threaded inside: register.py).
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare") as pool:
        return _prepare(inputs, spec, timings, pool)


def _template_side(reference: sitk.Image) -> np.ndarray:
    """What no case changes (made once per process): the template read, on its working grid for
    registration, and its soft brain mask in model space (returned)."""
    template_working_grid(WORKING_SPACING_MM)
    return template_soft_mask(reference)


def _prepare(inputs: CaseInputs, spec: Spec, timings: dict[str, float],
             pool: ThreadPoolExecutor) -> PreparedCase:
    t0 = time.perf_counter()
    reference = model_space_grid(spec.model_space)
    template_side = pool.submit(_template_side, reference)  # while the scans are read and gated
    post_notes: list[str] = []
    notes: list[str] = []
    post_op, event_scan = side_by_side(pool, lambda: read_mr(inputs.post_op, post_notes),
                                       lambda: read_scan(inputs.event, notes))
    event = event_scan.image
    notes[:0] = post_notes
    dose_gy = read_dose(inputs.dose, unit=inputs.dose_unit, fractions=inputs.dose_fractions,
                        relative_scale_gy=inputs.dose_relative_scale_gy, notes=notes)
    user_mask = read_mask(inputs.mask, notes) if inputs.mask is not None else None
    # with a given transform (a DICOM REG) the dose frame's image is not needed: not read
    given = read_frame_transform(inputs.dose_frame_transform)
    frame = read_mr(inputs.dose_frame, notes) \
        if inputs.dose_frame is not None and given is None else None
    gate = gate_case(inputs, post_op, event, dose_gy)  # each input plays its role, or exit 2
    timings["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    event_region, post_region, brain_source = brain_regions(event, post_op, user_mask, inputs,
                                                            pool)
    timings["brain"] = time.perf_counter() - t0

    # "register" lasts until both registrations are done; the event scan's resampling, which
    # needs only the template registration, runs meanwhile, and the post-op scan's starts on
    # the pool as soon as its registration is done
    t0 = time.perf_counter()
    post_future = pool.submit(register_rigid, event, post_op, fixed_mask=event_region,
                              moving_mask=post_region, same_contrast=True)
    frame_future = pool.submit(register_rigid, post_op, frame, same_contrast=False) \
        if frame is not None else None
    try:
        # The channels fade out at the template's brain edge, a soft mask fixed in model space:
        # the patient's own mask (extracted ones vary by a few % with the pose) would move that
        # edge with the pose. The patient's brain picks the voxels the z-score statistics use.
        soft = template_side.result()
        template = load_template()
        # from the principal axes of both brains: model space follows the anatomy, not the
        # pose (without a brain of the event scan: from the centroids of template brain and head)
        reg_template = register_to_template(template.t1, template.mask, event, event_region,
                                            skull_on=brain_source != "skull-stripped scan")
        model_to_event = affine_matrix(reg_template.transform)
        brain = (soft >= 0.5).astype(np.uint8)
        stats_region = brain > 0
        if event_region is not None:
            stats_region &= resample_to_grid(event_region, reference, model_to_event,
                                             sitk.sitkNearestNeighbor) > 0
        if stats_region.sum() < 100:
            raise InputError("the event scan's brain does not overlap the template's brain "
                             "after registration", inputs.mask or inputs.event,
                             fix="check the brain mask (--mask) or that the event scan shows "
                             "a brain")

        def post_in_model_space() -> np.ndarray:
            model_to_post = affine_matrix(post_future.result().transform) @ model_to_event
            return resample_to_grid(post_op, reference, model_to_post, isotropic=True)

        post_resampled = pool.submit(post_in_model_space)
        # T1 scans blur alike in every direction (thick slices to their slab): pose invariance
        event_arr = resample_to_grid(event, reference, model_to_event, isotropic=True)
        event_support = scan_support(event, reference, model_to_event)
    except BaseException:
        post_future.result()  # its error first, as when it ran first
        raise
    reg_post = post_future.result()
    reg_frame = frame_future.result() if frame_future is not None else None
    timings["register"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model_to_post = affine_matrix(reg_post.transform) @ model_to_event
    model_to_dose = model_to_post
    if reg_frame is not None or given is not None:
        model_to_dose = (given if reg_frame is None else affine_matrix(reg_frame.transform)) \
            @ model_to_post
    # before resampling: a dose beside the brain crops to a sliver the smoothing cannot take
    in_dose = points_inside(brain_points(reference, brain > 0), model_to_dose, dose_gy)
    coverage = float(in_dose.mean())
    if coverage < LIMITS.refuse_dose_coverage:
        raise DoseError(
            f"the dose grid does not overlap the post-op scan's brain ({coverage:.1%} covered)",
            inputs.dose,
            fix="give the dose of this patient in the post-op scan's frame, or name the image "
            "the dose is defined in with --dose-frame",
        )
    post_arr, (dose_arr, post_support) = beside(
        post_resampled, lambda: (resample_to_grid(dose_gy, reference, model_to_dose),
                                 scan_support(post_op, reference, model_to_post)))
    timings["resample"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sel = brain > 0
    channels = {
        "post_op": _zscore(post_arr, stats_region, post_support * soft, "post-op",
                           inputs.post_op),
        "event": _zscore(event_arr, stats_region, event_support * soft, "event", inputs.event),
        "dose": (dose_arr / spec.dose_scale_gy * soft).astype(np.float32),
    }
    timings["normalise"] = time.perf_counter() - t0

    registrations = {"post_op_to_event": _reg_qa(reg_post),
                     "event_to_template": _reg_qa(reg_template)}
    if reg_frame is not None:
        registrations["dose_frame_to_post_op"] = _reg_qa(reg_frame)
    max_in_brain = float(dose_arr[sel].max())
    max_gy = float(sitk.GetArrayViewFromImage(dose_gy).max())
    dose_qa = {
        "coverage_of_brain": round(coverage, 4),
        "max_gy": round(max_gy, 3),
        "max_in_brain_gy": round(max_in_brain, 3),
        "high_dose_in_brain": high_dose_in_brain(dose_arr, sel, max_gy),
        "frame": "dose_frame" if frame is not None or given is not None else "post_op",
        "frame_alignment": "given transform" if given is not None else
        "registered" if reg_frame is not None else "none (same frame)",
    }
    geometry = {"post_op": geometry_summary(post_op), "event": geometry_summary(event),
                "dose": geometry_summary(dose_gy)}
    if frame is not None:
        geometry["dose_frame"] = geometry_summary(frame)
    score = agreement(channels["post_op"], channels["event"], brain, reference.GetSpacing())
    measures = {
        "registration": registrations,
        "dose": dose_qa,
        "agreement": {"post_op_event": None if score is None else round(score, 4)},
        "fov_coverage_of_brain": {"post_op": round(float((post_support[sel] >= 0.5).mean()), 4),
                                  "event": round(float((event_support[sel] >= 0.5).mean()), 4)},
        "brain_voxels": int(sel.sum()),
        "brain_mask": brain_source,
        "gate": gate,
        "geometry": geometry,
        "model_space": spec.to_dict()["model_space"],
    }
    return PreparedCase(channels, brain, reference, event, reg_template.transform,
                        assess(measures, notes), event_scan.series,
                        {k: round(v, 3) for k, v in timings.items()})


def to_tensor(case: PreparedCase, spec: Spec) -> np.ndarray:
    """The model input of one case: [C, z, y, x] float32 in `spec.channels` order."""
    return np.stack([case.channels[name] for name in spec.channels]).astype(np.float32, copy=False)


def channel_image(case: PreparedCase, name: str) -> sitk.Image:
    """One model-space channel as a sitk image on the model-space grid."""
    image = sitk.GetImageFromArray(case.channels[name])
    image.CopyInformation(case.reference)
    return image


def write_prepared(case: PreparedCase, out_dir: str | Path, inputs: CaseInputs | None = None
                   ) -> None:
    """post_op/event/dose .nii.gz (model space, as the model sees them) and qa.json (the QA
    report, the stage timings and, when given, the inputs)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, filename in OUTPUT_FILES.items():
        sitk.WriteImage(channel_image(case, name), str(out / filename), useCompression=True)
    record = {**qa_record(case.qa), "timings_s": case.timings_s}
    if inputs is not None:
        record["inputs"] = {k: str(v) for k, v in vars(inputs).items() if v is not None}
    (out / "qa.json").write_text(json.dumps(record, indent=2) + "\n")

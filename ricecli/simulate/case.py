"""One simulated patient end to end: anatomy, resection, dose plan, lesion, the two scans in
their scanners' geometry, and the ground truth.

Case i depends only on (seed, i): the same seed gives the same voxel data whatever --n or --jobs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ricecli.simulate import risk
from ricecli.simulate.anatomy import Anatomy, build_anatomy, smooth_noise
from ricecli.simulate.head import Head, build_head
from ricecli.simulate.lesion import Lesion, make_lesion
from ricecli.simulate.scanner import (
    Acquisition,
    acquire,
    dose_grid,
    pose_matrix,
    sample_acquisition,
    to_grid,
    visit_poses,
)
from ricecli.simulate.treatment import CAVITY_FLUID, Plan, Resection, place_resection, plan_dose

DIFFICULTIES = ("easy", "standard", "hard")
FORMATS = ("nifti", "dicom")


@dataclass(frozen=True)
class SimConfig:
    """Cohort-wide generation parameters (all written to each case's truth)."""

    difficulty: str = "standard"
    recurrence_fraction: float = 0.5
    hypofractionated_fraction: float = 0.3
    residual_fraction: float = 0.45
    work_mm: float = 2.0
    voxel_scale: float = 1.0
    warp_mm: float = 2.5
    background_noise: bool = False
    fmt: str = "nifti"
    skull_on_share: float = 0.5  # share of patients scanned skull-on (both visits)

    def __post_init__(self) -> None:
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}")
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        if not 0.0 < self.recurrence_fraction < 1.0:
            raise ValueError("recurrence_fraction must lie strictly between 0 and 1")
        if not 0.0 <= self.skull_on_share <= 1.0:
            raise ValueError("skull_on_share must lie in [0, 1]")


@dataclass
class SimulatedCase:
    """Native-geometry images of one patient and the ground truth."""

    case_id: str
    label: str
    post_op: sitk.Image  # int16 scanner units, post-op native grid
    event: sitk.Image  # int16, event native grid
    dose_gy: sitk.Image  # float32 Gy on the planning grid, post-op world frame
    lesion_mask: sitk.Image  # uint8 on the event grid
    brain_mask: sitk.Image  # uint8 on the event grid: the true brain (what extraction should find)
    truth: dict[str, Any]  # JSON: written as truth.json


def case_id(index: int) -> str:
    return f"sim{index:04d}"


def case_rng(seed: int, index: int) -> np.random.Generator:
    """An independent stream per case (so --jobs and --n do not change a case)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def head_rng(seed: int, index: int) -> np.random.Generator:
    """The head's own stream: skull on or off, and the scalp, change nothing else in a case."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 1]))


def _image(arr: np.ndarray, grid: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.float32, copy=False))
    img.CopyInformation(grid)
    return img


def _soft(g: np.ndarray, level: float, radius_mm: float, h: float) -> np.ndarray:
    """Partial-volume indicator of g <= level (edge ~1 voxel wide)."""
    return np.clip(0.5 + (level - g) * radius_mm / h, 0.0, 1.0).astype(np.float32)


def post_op_image(rng: np.random.Generator, anat: Anatomy,
                  res: Resection) -> tuple[np.ndarray, dict[str, float]]:
    """T1c weeks after surgery: fluid cavity, thin patchy rim enhancement, residual nodules."""
    h = anat.spacing
    inside = (anat.dist_outside_mm > 1.5).astype(np.float32)
    cav = _soft(res.shape_g, 1.0, res.radius_mm, h) * inside
    d_c = res.dist_cavity_mm
    rim_level = float(rng.uniform(0.25, 0.5))
    patchy = np.clip(0.6 + 0.5 * smooth_noise(rng, d_c.shape, 5.0 / h), 0, 1)
    rim = rim_level * np.clip(1.0 - np.abs(d_c - 1.0) / 1.5, 0, 1) * (d_c > 0) * patchy
    resid_level = float(rng.uniform(0.4, 0.6))
    resid = resid_level * ndimage.gaussian_filter(res.residual.astype(np.float32), 0.6)
    edema = 1.0 - 0.08 * np.exp(-d_c / 10.0) * (anat.wm > 0.3) * (d_c > 0)
    brain = anat.brain.astype(np.float32)
    img = anat.t1 * (1 - cav) * edema + (cav * CAVITY_FLUID + rim + resid) * brain
    params = {"rim_enhancement": rim_level, "residual_enhancement": resid_level}
    return img.astype(np.float32), params


def event_image(rng: np.random.Generator, anat: Anatomy, res: Resection,
                lesion: Lesion) -> tuple[np.ndarray, dict[str, float]]:
    """T1c at the event: shrunken cavity with gliotic margin, the new lesion and its edema."""
    h = anat.spacing
    inside = (anat.dist_outside_mm > 1.5).astype(np.float32)
    shrink = float(rng.uniform(0.7, 0.95))
    cav = _soft(res.shape_g, 1.0, res.radius_mm, h) * inside
    fluid = _soft(res.shape_g, shrink, res.radius_mm, h) * inside
    gliosis = np.clip(cav - fluid, 0, 1)
    brain = anat.brain.astype(np.float32)
    keep = (1 - cav) * lesion.edema * (1 - lesion.necrosis)
    add = fluid * CAVITY_FLUID + gliosis * 0.62 + lesion.necrosis * 0.4 + lesion.enhancement
    img = anat.t1 * keep + add * brain
    return img.astype(np.float32), {"cavity_shrink": shrink}


def simulate_case(index: int, seed: int, config: SimConfig = SimConfig()) -> SimulatedCase:
    """Generate one patient: anatomy, surgery, plan, outcome, lesion, two scans and the dose."""
    rng = case_rng(seed, index)
    anat = build_anatomy(rng, config.work_mm, config.warp_mm)
    res = place_resection(rng, anat, config.residual_fraction)
    hypo = rng.random() < config.hypofractionated_fraction
    plan: Plan = plan_dose(rng, anat, res, "40.05Gy/15fx" if hypo else "60Gy/30fx")
    z = risk.risk_features(not hypo, plan.v95_cm3, plan.periventricular_v95, res.residual_cm3,
                           plan.hotspot)
    prior = risk.prior_logit_rice(z, config.difficulty, config.recurrence_fraction)
    label = "RICE" if rng.random() < risk.sigmoid(prior) else "recurrence"
    morph = risk.MORPHOLOGY[config.difficulty][label]
    lesion = make_lesion(rng, anat, res, plan, label, morph, risk.MULTIFOCAL[label],
                         risk.SITES[label])
    log_lr = risk.appearance_log_lr(lesion.site, lesion.solidity, lesion.multifocal,
                                    config.difficulty)
    p_rec = risk.posterior_recurrence(prior, log_lr)

    post_arr, post_params = post_op_image(rng, anat, res)
    event_arr, event_params = event_image(rng, anat, res, lesion)
    hrng = head_rng(seed, index)
    head: Head | None = build_head(hrng, anat) if hrng.random() < config.skull_on_share else None
    corners = None if head is None else head.corners_mm
    (r_post, t_post), (r_event, t_event) = visit_poses(rng, config.difficulty)
    acq_post = sample_acquisition(rng, anat, r_post, t_post, config.difficulty, config.voxel_scale,
                                  corners)
    acq_event = sample_acquisition(rng, anat, r_event, t_event, config.difficulty,
                                   config.voxel_scale, corners)

    def scan(arr: np.ndarray) -> sitk.Image:
        return _image(arr, anat.grid) if head is None else head.image(arr)

    planning_grid = dose_grid(rng, anat, acq_post.pose)  # drawn before the noise, whose
    # amount depends on the head: then skull on or off changes nothing else in the case
    noisy_air = config.background_noise or head is not None  # skull-on: air as scanners write it
    post_op = acquire(rng, scan(post_arr), acq_post, noisy_air)
    event = acquire(rng, scan(event_arr), acq_event, noisy_air)
    dose = to_grid(_image(plan.dose_gy, anat.grid), planning_grid, acq_post.pose)
    mask = sitk.GetImageFromArray(lesion.mask.astype(np.uint8))
    mask.CopyInformation(anat.grid)
    mask = sitk.Resample(mask, acq_event.grid, acq_event.pose, sitk.sitkNearestNeighbor, 0,
                         sitk.sitkUInt8)
    brain = sitk.Cast(to_grid(_image(anat.brain, anat.grid), acq_event.grid, acq_event.pose)
                      > 0.5, sitk.sitkUInt8)  # linear, then > 0.5: smoother than nearest
    inv_event = acq_event.pose.GetInverse()
    centre_event = inv_event.TransformPoint([float(v) for v in lesion.centre_mm])

    def acq_truth(a: Acquisition) -> dict[str, object]:
        return {
            "protocol": a.protocol, "orientation": a.orientation,
            "size": list(a.grid.GetSize()),
            "spacing_mm": [round(s, 4) for s in a.grid.GetSpacing()],
            "direction": [round(d, 5) for d in a.grid.GetDirection()],
            "pose_rotation_deg": round(a.rotation_deg, 3),
            "pose_translation_mm": a.translation_mm, "scale": round(a.scale, 2),
            "noise_sigma": round(a.noise_sigma, 4), "bias_amplitude": round(a.bias_amplitude, 4),
            "scanner_to_anatomy": pose_matrix(a.pose),
        }

    truth = {
        "case_id": case_id(index),
        "label": label,
        "p_recurrence": round(p_rec, 5),
        "p_recurrence_prior": round(1 - risk.sigmoid(prior), 5),
        "appearance_log_lr": round(log_lr, 4),
        "risk_z": {k: round(v, 4) for k, v in z.items()},
        "lesion": {
            "site": lesion.site,
            "centre_event_mm": [round(v, 2) for v in centre_event],
            "centre_anatomy_mm": [round(float(v), 2) for v in lesion.centre_mm],
            "foci_anatomy_mm": lesion.foci_mm,
            "solidity": round(lesion.solidity, 4),
            "multifocal": lesion.multifocal,
            "radius_mm": round(lesion.radius_mm, 2),
            "volume_cm3": round(float(lesion.mask.sum()) * anat.spacing**3 / 1000, 3),
            "max_dose_gy": round(float(plan.dose_gy[lesion.mask].max()), 2)
            if lesion.mask.any() else 0.0,
            **event_params,
        },
        "surgery": {
            "cavity_centre_mm": [round(float(v), 2) for v in res.centre_mm],
            "cavity_radius_mm": round(res.radius_mm, 2),
            "residual_cm3": round(res.residual_cm3, 3),
            "residual_centres_mm": res.residual_centres_mm,
            **post_params,
        },
        "plan": {
            "regimen": plan.regimen, "prescription_gy": plan.prescription_gy,
            "fractions": plan.fractions, "ctv_margin_mm": round(plan.ctv_margin_mm, 2),
            "ptv_margin_mm": round(plan.ptv_margin_mm, 2), "hotspot": round(plan.hotspot, 4),
            "v95_cm3": round(plan.v95_cm3, 2),
            "periventricular_v95": round(plan.periventricular_v95, 4),
            "max_dose_gy": round(float(plan.dose_gy.max()), 3),
            "dose_grid_spacing_mm": list(dose.GetSpacing()),
        },
        "anatomy": anat.deformation,
        "skull_on": head is not None,
        "head": None if head is None else head.params,
        "post_op_scan": acq_truth(acq_post),
        "event_scan": acq_truth(acq_event),
        "config": asdict(config),
        "seed": seed,
        "index": index,
    }
    return SimulatedCase(case_id(index), label, post_op, event, dose, mask, brain, truth)

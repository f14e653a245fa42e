"""The QA verdict of a prepared case (pass, warn or fail, with findings) and every QA threshold.

fail means the answer cannot be trusted and classify gives no label (exit 3): a registration
that failed, post-op and event scans that do not agree once registered (different patients),
a dose that misses most of the brain or has no brain-RT dose in it, a scan that misses the
brain. warn: the answer stands, but something deserves a look (every warning is listed).
Preparation only measures; `assess` judges the measures against `LIMITS`, the one table of
thresholds (the input gate's refusals, the registration checks and the verdict's), each with
what it guards and the data it was calibrated on (docs/qa.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import SimpleITK as sitk

from ricecli.result import Finding, QAReport

AGREEMENT_WINDOW_MM = 15.0  # local correlation windows of `agreement` ...
AGREEMENT_GRID_MM = 3.0  # ... on a grid this coarse
HIGH_DOSE_FRACTION = 0.5  # the high-dose region: >= this share of the dose grid's maximum


STRIPPED_DATA = ("BraTS-GLI and -MET scans (stripped) vs TCGA t1/t1c skull-on, posed, and with "
                 "its mask applied; synthetic heads (tests/test_stripped.py)")


def limit(value: float, effect: str, guards: str, calibrated_on: str) -> Any:
    """A row of the threshold table: `effect` is refuse (exit 2 before any work), route (which
    brain a scan gets), flag (the registration likely failed, hence fail), fail (no label) or
    warn."""
    return field(default=value, metadata={"effect": effect, "guards": guards,
                                          "calibrated_on": calibrated_on})


@dataclass(frozen=True)
class Limits:
    """Every QA threshold, in one place (`LIMITS`; `threshold_table` lists them)."""

    # --- the input gate (ricecli/gate.py, io/dose.py, prepare): refused, exit 2
    texture_split: float = limit(
        0.20, "refuse", "a --t1 smoother than this is a dose map; a --dose with more detail is "
        "an MR", "texture of real MR 0.27-0.56, simulated MR 0.26-0.32, fixtures 0.31-0.40; "
        "real RTDOSE 0.13, simulated doses 0.11-0.15 (docs/qa.md)")
    ct_air_hu: float = limit(-500.0, "refuse", "a --t1 voxel at or below this is air in "
                             "Hounsfield units", "CT air -1000 HU; MR, even z-scored, has none")
    ct_min_bone_hu: float = limit(300.0, "refuse", "a --t1 whose 99.5th percentile reaches "
                                  "this holds bone (CT)", "CT bone >= 300 HU")
    ct_min_air_share: float = limit(0.05, "refuse", "a --t1 with bone and this share of voxels "
                                    "at air is a CT", "the CT of issue 10 (docs/qa.md)")
    max_finest_spacing_mm: float = limit(6.0, "refuse", "a --t1 coarser than this in its "
                                         "finest axis is not a T1c", "the 8^3 phantom at 30 mm")
    max_thickest_spacing_mm: float = limit(15.0, "refuse", "a --t1 with slices thicker than "
                                           "this is not a T1c", "TCGA 5.5 mm slices pass")
    min_voxels: int = limit(4, "refuse", "fewer voxels along an axis: a slice or a sliver, "
                            "which registration and smoothing cannot take", "ITK's smoothing "
                            "and registration need 4")
    max_plausible_dose_gy: float = limit(150.0, "refuse", "a dose maximum above this is not in "
                                         "Gy (cGy?)", "brain RT plans peak at 25-80 Gy")
    refuse_dose_coverage: float = limit(0.01, "refuse", "share of the brain inside the dose "
                                        "grid below which it does not reach the brain at all",
                                        "GLI, MET + Pinnacle RTDOSE: 0 % (docs/qa.md)")
    # --- is a scan skull-stripped (ricecli/geometry/stripped.py)? routes it to its own
    # foreground as the brain, else to brain extraction; all five must hold
    stripped_border_constant: float = limit(0.60, "route", "share of the image border at one "
                                            "exact value", STRIPPED_DATA)
    stripped_object_share: float = limit(0.95, "route", "share of the foreground in its largest "
                                         "object", STRIPPED_DATA)
    stripped_max_box_fill: float = limit(0.75, "route", "the object fills at most this of its "
                                         "box (an ellipsoid 0.52, a noisy field of view ~1)",
                                         STRIPPED_DATA)
    stripped_max_dark_share: float = limit(0.15, "route", "share of the object darker than 5 % "
                                           "of its p99 (air noise, not tissue)", STRIPPED_DATA)
    stripped_max_shell_ratio: float = limit(1.6, "route", "p90 of the object's 4 mm rim over "
                                            "its inner median (a bright rim: scalp fat)",
                                            STRIPPED_DATA)
    # --- registration (ricecli/geometry/register_qa.py): any one flags it as likely failed
    max_rotation_deg: float = limit(50.0, "flag", "an Euler angle beyond this: a flipped or "
                                    "tilted optimum", "heads lie within ~30 deg of upright; "
                                    "the TCGA scan is pitched 28 deg from the template")
    max_shift_from_start_mm: float = limit(40.0, "flag", "the optimiser moved the centre this "
                                           "far from its start: it slid off", "correct answers "
                                           "lie within ~15-20 mm (benchmarks/pose.py)")
    min_fov_overlap: float = limit(0.80, "flag", "share of the fixed region inside the moving "
                                   "scan", "benchmarks/pose.py poses")
    min_on_head: float = limit(0.80, "flag", "share of the fixed region on the moving head (or "
                               "skull-stripped brain)", "benchmarks/pose.py poses")
    min_brain_dice: float = limit(0.80, "flag", "Dice of the two brains after registration",
                                  "real scans and poses of benchmarks/pose.py: 0.88-0.95")
    min_ncc_same_contrast: float = limit(0.25, "flag", "global correlation of post-op and "
                                         "event after registration", "same patient 0.41-0.98 "
                                         "(T1 vs T1c 0.33-0.39 lowest); it cannot tell "
                                         "patients apart (docs/qa.md)")
    # --- the verdict (assess below): fail
    min_agreement: float = limit(0.45, "fail", "mean local correlation of the prepared post-op "
                                 "and event channels in the brain: another patient's scan",
                                 "same patient 0.53-0.98 (T1 vs T1c included), different "
                                 "patients 0.07-0.40 (docs/qa.md)")
    min_scan_coverage: float = limit(0.50, "fail", "share of the brain inside each T1 scan's "
                                     "field of view", "docs/qa.md")
    min_dose_coverage: float = limit(0.75, "fail", "share of the brain inside the dose grid: "
                                     "another patient's or frame's dose, or a grid cut short",
                                     "every simulated plan covers 100 %; the issue-21 dose "
                                     "covering half the brain (docs/qa.md)")
    min_high_dose_in_brain: float = limit(0.6, "fail", "share of the dose's high-dose region "
                                          "inside this brain", "simulated own doses 0.74-0.83, "
                                          "another simulated patient's 0.49-1.00 (docs/qa.md)")
    min_dose_peak_gy: float = limit(5.0, "fail", "dose peak in the brain: below, not a brain "
                                    "RT plan in Gy", "the issue-10 dose peaking at 0.58 Gy")
    # --- the verdict: warn
    warn_dose_coverage: float = limit(0.90, "warn", "share of the brain inside the dose grid",
                                      "every simulated plan covers 100 %")
    usual_dose_peak_low_gy: float = limit(20.0, "warn", "dose peak in the brain below this is "
                                          "unusual for glioblastoma RT", "25 Gy / 5 fx")
    usual_dose_peak_high_gy: float = limit(90.0, "warn", "dose peak in the brain above this is "
                                           "unusual for glioblastoma RT", "60 Gy / 30 fx")


LIMITS = Limits()


def threshold_table() -> list[dict[str, Any]]:
    """The thresholds as rows: name, value, effect, what it guards, what it was set on."""
    return [{"name": f.name, "value": getattr(LIMITS, f.name), **f.metadata}
            for f in fields(LIMITS)]


def _box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.Mean(sitk.GetImageFromArray(values), [radius] * 3))


def agreement(post_op: np.ndarray, event: np.ndarray, brain: np.ndarray,
              spacing_mm: tuple[float, ...]) -> float | None:
    """Mean local correlation of two registered scans in the brain: anatomy that lines up
    (same patient, any T1 contrast) scores high, another patient's brain low."""
    factors = [max(1, int(round(AGREEMENT_GRID_MM / s))) for s in spacing_mm[::-1]]  # z,y,x

    def shrink(arr: np.ndarray) -> np.ndarray:
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr, np.float64))
        return sitk.GetArrayFromImage(sitk.BinShrink(img, factors[::-1]))

    inside = shrink(brain > 0)
    a, e = shrink(post_op), shrink(event)
    step = float(np.mean(np.asarray(spacing_mm) * np.asarray(factors[::-1])))
    radius = max(1, int(round(AGREEMENT_WINDOW_MM / step / 2)))
    m = (inside > 0.5).astype(np.float64)
    frac = _box_mean(m, radius)
    mean_a, mean_e = _box_mean(a * m, radius), _box_mean(e * m, radius)
    var_a = _box_mean(a * a * m, radius) - mean_a**2
    var_e = _box_mean(e * e * m, radius) - mean_e**2
    cov = _box_mean(a * e * m, radius) - mean_a * mean_e
    ok = (frac > 0.9) & (var_a > 1e-3 * frac) & (var_e > 1e-3 * frac)
    if ok.sum() < 10:
        return None
    return float(np.mean(cov[ok] / np.sqrt(var_a[ok] * var_e[ok])))


def high_dose_in_brain(dose_gy: np.ndarray, brain: np.ndarray, max_gy: float) -> float | None:
    """Share of the high-dose region (>= HIGH_DOSE_FRACTION of the dose grid's maximum
    `max_gy`), seen in model space, that lies inside the brain; None for a zero dose."""
    if max_gy <= 0:
        return None
    high = dose_gy >= HIGH_DOSE_FRACTION * max_gy
    return round(float((high & (brain > 0)).sum() / high.sum()), 4) if high.any() else 0.0


def assess(measures: dict[str, Any], notes: list[str]) -> QAReport:
    """The verdict on what preparation measured: fail with its reasons, else warn with its
    warnings, else pass; each finding has a stable code."""
    fail: list[Finding] = []
    warn: list[Finding] = []
    for name, reg in (measures.get("registration") or {}).items():
        if reg.get("likely_failed"):
            what = name.replace("_to_", " -> ").replace("_", "-")
            fail.append(Finding("registration_failed", f"registration {what} failed "
                                f"({'; '.join(reg.get('reasons', []))})"))
    score = (measures.get("agreement") or {}).get("post_op_event")
    if score is not None and score < LIMITS.min_agreement:
        fail.append(Finding("scans_disagree", "the post-op and event scans do not line up once "
                            f"registered (local correlation {score:.2f} < "
                            f"{LIMITS.min_agreement}): different patients, or a scan that is "
                            "not a brain T1"))
    for name, share in (measures.get("fov_coverage_of_brain") or {}).items():
        if share < LIMITS.min_scan_coverage:
            fail.append(Finding("fov_coverage_low", f"the {name.replace('_', '-')} scan covers "
                                f"only {share:.0%} of the brain"))
    dose = measures.get("dose") or {}
    coverage = dose.get("coverage_of_brain")
    if coverage is not None and coverage < LIMITS.min_dose_coverage:
        fail.append(Finding("dose_coverage_low", f"the dose grid covers only {coverage:.0%} of "
                            f"the brain (at least {LIMITS.min_dose_coverage:.0%} needed): the "
                            "dose of another patient or frame, or a grid cut short"))
    elif coverage is not None and coverage < LIMITS.warn_dose_coverage:
        warn.append(Finding("dose_coverage_partial",
                            f"the dose grid covers only {coverage:.0%} of the brain"))
    peak = dose.get("max_in_brain_gy")
    if peak is not None and peak <= 0:
        warn.append(Finding("dose_zero_in_brain", "the dose is zero everywhere in the brain"))
    in_brain = dose.get("high_dose_in_brain")
    if in_brain is not None and in_brain < LIMITS.min_high_dose_in_brain:
        fail.append(Finding("dose_off_brain", f"only {in_brain:.0%} of the dose's high-dose "
                            f"region (>= {HIGH_DOSE_FRACTION:.0%} of its maximum) lies in this "
                            "brain: the dose of another patient, or in another frame (give "
                            "--dose-frame)"))
    low, high = LIMITS.usual_dose_peak_low_gy, LIMITS.usual_dose_peak_high_gy
    if peak is not None and peak < LIMITS.min_dose_peak_gy:
        fail.append(Finding("dose_peak_low", f"the dose peaks at {peak:.2f} Gy in the brain: "
                            "not a brain radiotherapy plan in Gy (wrong file, unit or frame)"))
    elif peak is not None and not low <= peak <= high:
        warn.append(Finding("dose_peak_unusual", f"the dose peaks at {peak:.1f} Gy in the "
                            f"brain, unusual for glioblastoma radiotherapy ({low:g}-{high:g} "
                            "Gy)"))
    verdict = "fail" if fail else "warn" if warn else "pass"
    return QAReport(verdict, fail, warn, measures, list(notes))

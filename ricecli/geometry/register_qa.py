"""Registration QA: the numbers that flag a rigid registration that likely failed.

Any one rule is enough (see `registration_qa`); the limits (ricecli.qa.LIMITS) were measured on
the scans and poses of benchmarks/pose.py and docs/qa.md.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ricecli.geometry.resample import foreground_mask
from ricecli.qa import LIMITS


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
      over the fixed region after registration is below LIMITS.min_ncc_same_contrast.
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
    if float(angles.max()) > LIMITS.max_rotation_deg:
        reasons.append(f"rotation {angles.max():.0f} deg > {LIMITS.max_rotation_deg:.0f}")
    if shift > LIMITS.max_shift_from_start_mm:
        reasons.append(f"moved {shift:.0f} mm from its start")
    if fov < LIMITS.min_fov_overlap:
        reasons.append(f"only {fov:.0%} of the fixed region is inside the moving scan")
    if brain_dice is None and on_head < LIMITS.min_on_head:
        reasons.append(f"only {on_head:.0%} of the fixed region lands on the moving head")
    if brain_dice is not None and brain_dice < LIMITS.min_brain_dice:
        reasons.append(f"the brains overlap only {brain_dice:.2f} (Dice) after registration")
    if same_contrast and ncc < LIMITS.min_ncc_same_contrast:
        reasons.append(f"correlation after registration {ncc:.2f} < {LIMITS.min_ncc_same_contrast}")
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

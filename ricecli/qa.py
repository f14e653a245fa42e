"""The QA verdict of a prepared case: pass, warn or fail, with its reasons.

fail means the answer cannot be trusted and classify gives no label (exit 3): a registration
that failed, post-op and event scans that do not agree once registered (different patients),
a dose that misses most of the brain or has no brain-RT dose in it, a scan that misses the
brain. warn: the answer stands, but something deserves a look (every warning is listed).
Thresholds and the data they were calibrated on: docs/qa.md.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

# local correlation (15 mm windows, ~3 mm grid) of the prepared post-op and event channels in the
# brain. Measured (docs/qa.md): same-patient pairs 0.53-0.98 (T1 vs T1c included), different
# patients 0.07-0.39.
MIN_AGREEMENT = 0.45
AGREEMENT_WINDOW_MM = 15.0
AGREEMENT_GRID_MM = 3.0
MIN_DOSE_COVERAGE = 0.75  # share of the brain inside the dose grid: below, it does not fit
MIN_SCAN_COVERAGE = 0.50  # share of the brain inside each T1 scan's field of view
FAIL_BRAIN_MAX_GY = 5.0  # no brain radiotherapy plan peaks this low in the brain
WARN_BRAIN_MAX_GY = (20.0, 90.0)  # outside: unusual for glioblastoma RT (25 Gy/5 fx ... 60 Gy)
# share of the dose's high-dose region (>= half the grid's maximum) that lies in this brain: a
# brain plan's target is in the brain; another patient's dose, or one in the wrong frame, need
# not be. Measured (docs/qa.md): simulated own doses 0.74-0.83, another simulated patient's
# dose 0.49-1.00 (geometry alone cannot tell a similar plan apart); 0.6 keeps 0.14 of margin.
HIGH_DOSE_FRACTION = 0.5
MIN_HIGH_DOSE_IN_BRAIN = 0.6
VERDICTS = ("pass", "warn", "fail")


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


def decide(qa: dict) -> dict:
    """Set qa['verdict'] (pass | warn | fail) and qa['reasons'] from the QA record."""
    fail: list[str] = []
    for name, reg in (qa.get("registration") or {}).items():
        if reg.get("likely_failed"):
            what = name.replace("_to_", " -> ").replace("_", "-")
            fail.append(f"registration {what} failed ({'; '.join(reg.get('reasons', []))})")
    score = qa.get("agreement", {}).get("post_op_event")
    if score is not None and score < MIN_AGREEMENT:
        fail.append(f"the post-op and event scans do not line up once registered (local "
                    f"correlation {score:.2f} < {MIN_AGREEMENT}): different patients, or a "
                    "scan that is not a brain T1")
    for name, share in (qa.get("fov_coverage_of_brain") or {}).items():
        if share < MIN_SCAN_COVERAGE:
            fail.append(f"the {name.replace('_', '-')} scan covers only {share:.0%} of the brain")
    dose = qa.get("dose") or {}
    coverage = dose.get("coverage_of_brain")
    if coverage is not None and coverage < MIN_DOSE_COVERAGE:
        fail.append(f"the dose grid covers only {coverage:.0%} of the brain (at least "
                    f"{MIN_DOSE_COVERAGE:.0%} needed): the dose of another patient or frame, "
                    "or a grid cut short")
    in_brain = dose.get("high_dose_in_brain")
    if in_brain is not None and in_brain < MIN_HIGH_DOSE_IN_BRAIN:
        fail.append(f"only {in_brain:.0%} of the dose's high-dose region (>= "
                    f"{HIGH_DOSE_FRACTION:.0%} of its maximum) lies in this brain: the dose "
                    "of another patient, or in another frame (give --dose-frame)")
    peak = dose.get("max_in_brain_gy")
    warn = [str(w) for w in qa.get("warnings", [])]
    if peak is not None and peak < FAIL_BRAIN_MAX_GY:
        fail.append(f"the dose peaks at {peak:.2f} Gy in the brain: not a brain radiotherapy "
                    "plan in Gy (wrong file, unit or frame)")
    elif peak is not None and not WARN_BRAIN_MAX_GY[0] <= peak <= WARN_BRAIN_MAX_GY[1]:
        warn.append(f"the dose peaks at {peak:.1f} Gy in the brain, unusual for glioblastoma "
                    f"radiotherapy ({WARN_BRAIN_MAX_GY[0]:g}-{WARN_BRAIN_MAX_GY[1]:g} Gy)")
    verdict = "fail" if fail else "warn" if warn else "pass"
    qa["verdict"] = verdict
    # prepare's own "registration likely failed" / "covers only" warnings repeat fail reasons:
    # said once (as the reason), not again as a warning on screen and in the JSON
    repeats = [r for r, said in (("registration likely failed", "registration "),
                                 ("the dose grid covers only", "the dose grid covers only"))
               if any(f.startswith(said) for f in fail)]
    qa["warnings"] = [w for w in qa.get("warnings", []) if not any(r in w for r in repeats)]
    qa["reasons"] = fail + [w for w in warn if not any(r in w for r in repeats)] \
        if fail else warn
    return qa


def assess(qa: dict, gate: dict | None, channels: dict[str, np.ndarray], brain: np.ndarray,
           spacing_mm: tuple[float, ...]) -> dict:
    """The hook `prepare_case` calls last: gate measurements, scan agreement, then the verdict."""
    if gate is not None:
        qa["gate"] = gate
    score = agreement(channels["post_op"], channels["event"], brain, spacing_mm)
    qa["agreement"] = {"post_op_event": None if score is None else round(score, 4),
                       "min": MIN_AGREEMENT}
    return decide(qa)


def summary_lines(qa: dict) -> list[str]:
    """Console lines: the verdict with its reasons, then every note (nothing in qa.json is
    left off the screen)."""
    verdict = qa.get("verdict")
    reasons = qa.get("reasons") or []
    lines = []
    if verdict is not None:
        lines.append(f"QA {verdict}" + (f": {'; '.join(reasons)}" if reasons else ""))
    elif qa.get("warnings"):
        lines += [f"QA warning: {w}" for w in qa["warnings"]]
    lines += [f"note: {n}" for n in qa.get("notes") or []]
    if qa.get("brain_mask"):
        lines.append(f"brain mask: {qa['brain_mask']}")
    return lines

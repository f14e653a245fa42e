"""Calibrated p(recurrence) and how far to trust it: temperature on each member, conformal sets.

The ONNX model outputs softmax probabilities; softmax is shift-invariant, so each member's
logits are recovered as its log-probabilities (floored at the spec's `prob_floor`), divided
by the temperature fitted on out-of-fold data, softmaxed again, and the members averaged.
A temperature keeps every member's vote; only how sure it sounds changes.
"""

from __future__ import annotations

import math

import numpy as np

from ricecli.spec import Calibration, Spec

DEFAULT_FLOOR = 1e-7


def member_logits(member_probs: np.ndarray, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Logits (up to a per-row shift) of softmax outputs [..., classes]: log(max(p, floor))."""
    return np.log(np.clip(np.asarray(member_probs, dtype=np.float64), floor, 1.0))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (shifted by the row maximum: no overflow)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def calibrate_members(member_probs: np.ndarray, cal: Calibration | None) -> np.ndarray:
    """Each member's probabilities after its logits are divided by the temperature."""
    p = np.asarray(member_probs, dtype=np.float64)
    if cal is None:
        return p
    return softmax(member_logits(p, cal.prob_floor) / cal.temperature)


def prediction_set(p: np.ndarray, qhat: float, classes: tuple[str, ...]) -> list[str]:
    """Split-conformal set: every class whose score 1 - p(class) is at most qhat."""
    return [c for c, v in zip(classes, np.asarray(p, float), strict=True)
            if 1.0 - v <= qhat + 1e-12]


def uncertainty(member_cal: np.ndarray, mean_cal: np.ndarray, cal: Calibration | None,
                classes: tuple[str, ...]) -> dict:
    """Members' spread and agreement, the conformal set, and whether to call the case uncertain.

    With an out-of-fold conformal threshold qhat: uncertain when the ensemble's set is not
    exactly one label, or when one member's own set is {RICE} and another's {recurrence}.
    Without one (older models): uncertain when the members' votes split.
    """
    pos = classes.index("recurrence") if "recurrence" in classes else len(classes) - 1
    label = classes[int(np.argmax(mean_cal))]
    votes = [classes[int(np.argmax(m))] for m in member_cal]
    p_pos = member_cal[:, pos]
    out = {
        "member_sd_p_recurrence": float(np.std(p_pos)) if len(p_pos) else 0.0,
        "member_range_p_recurrence": [float(p_pos.min()), float(p_pos.max())]
        if len(p_pos) else [],
        "agreement": votes.count(label) / len(votes) if votes else 1.0,
        "votes_recurrence_fraction": votes.count(classes[pos]) / len(votes) if votes else 0.0,
    }
    reasons: list[str] = []
    qhat = None if cal is None else cal.conformal_qhat
    if cal is not None and qhat is not None:
        pset = prediction_set(mean_cal, qhat, classes)
        sure = {tuple(prediction_set(m, qhat, classes)) for m in member_cal}
        confident = {s[0] for s in sure if len(s) == 1}
        coverage = 1.0 - float(cal.conformal_alpha or 0.0)
        out.update(prediction_set=pset, coverage=coverage, conformal_qhat=float(qhat))
        if len(pset) != 1:
            reasons.append(f"the {coverage:.0%} prediction set is "
                           f"{{{', '.join(pset)}}}" if pset else
                           f"no label reaches the {coverage:.0%} conformal threshold")
        if len(confident) > 1:
            reasons.append("members confidently disagree (" + " vs ".join(sorted(confident))
                           + ")")
        out["rule"] = (f"uncertain if the split-conformal set (out-of-fold qhat {qhat:.3f}, "
                       f"{coverage:.0%} coverage) is not one label, or members' own sets "
                       "are opposite single labels")
    else:
        if len(set(votes)) > 1:
            reasons.append("the members' votes split")
        out["rule"] = "uncertain if the members' votes split (the model has no out-of-fold " \
                      "conformal threshold)"
    out["uncertain"] = bool(reasons)
    out["reasons"] = reasons
    return out


def assess(probs: np.ndarray, members: np.ndarray, spec: Spec) -> dict:
    """Raw and calibrated probabilities plus uncertainty for one case, as plain JSON."""
    classes = tuple(spec.classes)
    cal = spec.calibration
    raw = np.asarray(probs, dtype=np.float64)
    member_cal = calibrate_members(members, cal)
    mean_cal = member_cal.mean(axis=0) if len(member_cal) else raw
    calibrated = {c: float(v) for c, v in zip(classes, mean_cal, strict=True)}
    if not all(math.isfinite(v) for v in calibrated.values()):
        raise ValueError("calibrated probabilities are not finite")
    return {
        "probabilities": calibrated,
        "probabilities_uncalibrated": {c: float(v) for c, v in zip(classes, raw, strict=True)},
        "member_probabilities": [{c: float(v) for c, v in zip(classes, m, strict=True)}
                                 for m in member_cal],
        "calibration": {"applied": False, "method": "none",
                        "note": "this model carries no calibration; probabilities are raw"}
        if cal is None else {"applied": True, "method": cal.method,
                             "temperature": float(cal.temperature),
                             "applies_to": "each member's logits, then the mean",
                             "fitted_on": cal.fitted_on, "n_cases": int(cal.n_cases)},
        "uncertainty": uncertainty(member_cal, mean_cal, cal, classes),
    }


# --- hooks for the result record, the screen and batch's CSV ---------------------------------

def apply_to_result(result: dict, probs: np.ndarray, members: np.ndarray, spec: Spec) -> dict:
    """Put calibrated probabilities (label = their argmax), the uncalibrated ones (under that
    name only), calibration and uncertainty into a record built by outputs.record.build_result;
    each member row gets its calibrated probabilities too."""
    record = assess(probs, members, spec)
    classes = list(spec.classes)
    result["probabilities"] = record["probabilities"]
    result["probabilities_uncalibrated"] = record["probabilities_uncalibrated"]
    if result.get("label") in classes:  # a QA refusal (no label) stays without one
        result["label"] = max(classes, key=lambda c: record["probabilities"][c])
        if spec.calibration is not None:
            result["decision"] = ("argmax of the ensemble's mean calibrated probability "
                                  "(temperature on each member)")
    for row, cal in zip(result.get("members", []), record["member_probabilities"],
                        strict=False):
        row["probabilities_calibrated"] = cal
    result["calibration"] = record["calibration"]
    result["uncertainty"] = record["uncertainty"]
    return result


def summary_lines(result: dict) -> list[str]:
    """Rich-markup lines for the on-screen summary: calibration, spread, uncertain flag.

    Only calibrated numbers are shown: the uncalibrated p lives in the JSON and the SR alone.
    """
    cal, unc = result.get("calibration"), result.get("uncertainty")
    if not cal or not unc:
        return []
    lines = [f"calibrated: temperature {cal['temperature']:.2f} on each member, fitted "
             "out-of-fold" if cal.get("applied")
             else "probabilities uncalibrated (this model carries no calibration)"]
    lo, hi = (unc.get("member_range_p_recurrence") or [float("nan")] * 2)
    spread = (f"members: SD of p(recurrence) {unc['member_sd_p_recurrence']:.3f} (range "
              f"{lo:.3f}-{hi:.3f}), agreement {unc['agreement']:.0%}")
    if "prediction_set" in unc:
        spread += (f"; {unc['coverage']:.0%} prediction set "
                   f"{{{', '.join(unc['prediction_set'])}}}")
    lines.append(spread)
    if unc["uncertain"]:
        lines.append("[bold yellow]UNCERTAIN:[/] " + "; ".join(unc["reasons"]))
    return lines


def csv_fields(result: dict) -> dict:
    """batch's extra CSV columns: uncertain (1/0) and the members' SD (calibrated p only)."""
    unc = result.get("uncertainty") or {}
    return {"uncertain": int(bool(unc.get("uncertain"))) if unc else "",
            "member_sd": f"{unc['member_sd_p_recurrence']:.6f}"
            if "member_sd_p_recurrence" in unc else ""}


def calibrated_mean(probs: np.ndarray, members: np.ndarray, cal: Calibration | None
                    ) -> np.ndarray:
    """The calibrated ensemble mean [N, classes] of engine outputs (probs [N, C], members
    [N, M, C]): the p every output shows; `probs` unchanged without a calibration."""
    members = np.asarray(members, dtype=np.float64)
    if cal is None or members.ndim != 3 or members.shape[1] == 0:
        return np.asarray(probs, dtype=np.float64)
    return calibrate_members(members, cal).mean(axis=1)

"""Calibrated p(recurrence) and how far to trust it: temperature on each member, conformal sets.

The ONNX model outputs softmax probabilities; softmax is shift-invariant, so each member's
logits are recovered as its log-probabilities (floored at the spec's `prob_floor`), divided
by the temperature fitted on out-of-fold data, softmaxed again, and the members averaged.
A temperature keeps every member's vote; only how sure it sounds changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import softmax

from ricecli.spec import Calibration, Spec

DEFAULT_FLOOR = 1e-7


def member_logits(member_probs: np.ndarray, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Logits (up to a per-row shift) of softmax outputs [..., classes]: log(max(p, floor))."""
    return np.log(np.clip(np.asarray(member_probs, dtype=np.float64), floor, 1.0))


def calibrate_members(member_probs: np.ndarray, cal: Calibration | None) -> np.ndarray:
    """Each member's probabilities after its logits are divided by the temperature."""
    p = np.asarray(member_probs, dtype=np.float64)
    if cal is None:
        return p
    return softmax(member_logits(p, cal.prob_floor) / cal.temperature, axis=-1)


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


@dataclass(frozen=True)
class Calibrated:
    """The calibrated answer of one case: the ensemble mean (the one p every output shows),
    each member's calibrated p, how it was calibrated, and how far to trust it."""

    probabilities: dict[str, float]
    members: list[dict[str, float]]
    calibration: dict[str, Any]
    uncertainty: dict[str, Any]


def assess(probs: np.ndarray, members: np.ndarray, spec: Spec) -> Calibrated:
    """Calibrated probabilities and uncertainty of one case from the engine's outputs
    (`probs` [classes], `members` [M, classes]); without a calibration, the raw ones."""
    classes = tuple(spec.classes)
    cal = spec.calibration
    member_cal = calibrate_members(members, cal)
    mean_cal = member_cal.mean(axis=0) if len(member_cal) else np.asarray(probs, np.float64)
    calibrated = {c: float(v) for c, v in zip(classes, mean_cal, strict=True)}
    if not all(math.isfinite(v) for v in calibrated.values()):
        raise ValueError("calibrated probabilities are not finite")
    return Calibrated(
        probabilities=calibrated,
        members=[{c: float(v) for c, v in zip(classes, m, strict=True)} for m in member_cal],
        calibration={"applied": False, "method": "none",
                     "note": "this model carries no calibration; probabilities are raw"}
        if cal is None else {"applied": True, "method": cal.method,
                             "temperature": float(cal.temperature),
                             "applies_to": "each member's logits, then the mean",
                             "fitted_on": cal.fitted_on, "n_cases": int(cal.n_cases)},
        uncertainty=uncertainty(member_cal, mean_cal, cal, classes))


def calibrated_mean(probs: np.ndarray, members: np.ndarray, cal: Calibration | None
                    ) -> np.ndarray:
    """The calibrated ensemble mean [N, classes] of engine outputs (probs [N, C], members
    [N, M, C]): the p every output shows; `probs` unchanged without a calibration."""
    members = np.asarray(members, dtype=np.float64)
    if cal is None or members.ndim != 3 or members.shape[1] == 0:
        return np.asarray(probs, dtype=np.float64)
    return calibrate_members(members, cal).mean(axis=1)

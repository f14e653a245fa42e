"""Build the result of one classified case (ricecli.result.CaseResult) from the engine's outputs:
calibrated label and probabilities, member votes, QA, timings, model; withheld when QA failed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ricecli.inference.calibration import assess
from ricecli.result import WITHHELD, CaseResult, Member, QAReport, plain

if TYPE_CHECKING:
    from ricecli.inference.engine import Engine
    from ricecli.inference.model import LoadedModel
    from ricecli.prepare import CaseInputs

INPUT_KEYS = ("post_op", "event", "dose", "mask", "dose_unit", "dose_fractions", "dose_frame",
              "dose_relative_scale_gy")


def case_inputs_record(inputs: CaseInputs) -> dict[str, Any]:
    """The CaseInputs as plain JSON (paths as given, dose options)."""
    return {k: plain(getattr(inputs, k, None)) for k in INPUT_KEYS}


def build_result(probs: np.ndarray, members: np.ndarray, model: LoadedModel, engine: Engine,
                 qa: QAReport, timings_s: dict[str, float], inputs: dict[str, Any], *,
                 accept_qa_failure: bool = False, prepared_dir: str | None = None
                 ) -> CaseResult:
    """The result of one case: the label is the argmax of the calibrated mean p; a case whose
    QA verdict is fail gets none (`withheld`) unless `accept_qa_failure`, which keeps it and
    marks it as given despite the failure."""
    classes = list(model.spec.classes)
    raw = np.asarray(probs, dtype=np.float64)
    member_raw = np.asarray(members, dtype=np.float64)
    cal = assess(raw, member_raw, model.spec)
    votes = dict.fromkeys(classes, 0)
    rows = []
    for p, p_cal in zip(member_raw, cal.members, strict=True):
        vote = classes[int(np.argmax(p))]
        votes[vote] += 1
        rows.append(Member(vote, {c: float(v) for c, v in zip(classes, p, strict=True)}, p_cal))
    result = CaseResult(
        label=max(classes, key=lambda c: cal.probabilities[c]),
        probabilities=cal.probabilities,
        probabilities_uncalibrated={c: float(v) for c, v in zip(classes, raw, strict=True)},
        decision="argmax of the ensemble's mean calibrated probability (temperature on each "
        "member)" if model.spec.calibration is not None else
        "argmax of the ensemble's mean probability",
        votes=votes, members=rows, uncertainty=cal.uncertainty, calibration=cal.calibration,
        qa=qa, timings_s={k: round(float(v), 4) for k, v in timings_s.items()},
        model={"name": model.name, "version": model.version, "sha256": model.sha256,
               "path": str(model.path)},
        engine={"name": engine.name, "providers": list(engine.providers),
                "fallback": getattr(engine, "fallback", None)},
        inputs=inputs, prepared_dir=prepared_dir)
    if qa.verdict != "fail":
        return result
    if accept_qa_failure:
        return replace(result, label_despite_qa_failure=True)
    return withheld(result)


def withheld(result: CaseResult) -> CaseResult:
    """The result of a case that failed QA: no label, probabilities, votes or members."""
    return replace(result, label=None, probabilities=None, probabilities_uncalibrated=None,
                   votes=None, members=[], uncertainty=None, decision=WITHHELD)


def qa_line(result: CaseResult) -> str:
    """One line saying why a case failed QA."""
    reasons = [f.message for f in result.qa.reasons] or ["no reason recorded"]
    return f"QA failed, no label: {'; '.join(reasons)}"

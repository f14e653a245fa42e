"""The result record of one classified case: label, probabilities, votes, QA, timings, model.

Plain JSON (`to_json`), the same record for `ricecli classify --json`, batch rows, the demo's
result.json and the DICOM SR; a case whose QA verdict is fail has its answer withheld.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ricecli import __version__
from ricecli.inference.calibration import apply_to_result

if TYPE_CHECKING:
    from ricecli.inference.engine import Engine
    from ricecli.inference.model import LoadedModel
    from ricecli.prepare import CaseInputs

INPUT_KEYS = ("post_op", "event", "dose", "mask", "dose_unit", "dose_fractions", "dose_frame",
              "dose_relative_scale_gy")


def case_inputs_record(inputs: CaseInputs) -> dict[str, Any]:
    """The CaseInputs as plain JSON (paths as given, dose options)."""
    return {k: _plain(getattr(inputs, k, None)) for k in INPUT_KEYS}


def build_result(probs: np.ndarray, members: np.ndarray, model: LoadedModel, engine: Engine,
                 qa: dict[str, Any], timings_s: dict[str, float],
                 inputs: dict[str, Any]) -> dict[str, Any]:
    """The result record: label, probabilities, member votes, QA, timings, model, inputs."""
    classes = list(model.spec.classes)
    probs = np.asarray(probs, dtype=np.float64)
    label = classes[int(np.argmax(probs))]
    member_rows = []
    votes = dict.fromkeys(classes, 0)
    for i, p in enumerate(np.asarray(members, dtype=np.float64)):
        vote = classes[int(np.argmax(p))]
        votes[vote] += 1
        member_rows.append({"member": i, "vote": vote, "probabilities":
                            {c: float(v) for c, v in zip(classes, p, strict=True)}})
    result = {
        "label": label,
        "probabilities": {c: float(v) for c, v in zip(classes, probs, strict=True)},
        "decision": "argmax of the ensemble's mean probability",
        "votes": votes,
        "members": member_rows,
        "qa": _plain(qa),
        "warnings": qa_warnings(qa),
        "timings_s": {k: round(float(v), 4) for k, v in timings_s.items()},
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256,
                  "path": str(model.path)},
        "engine": {"name": engine.name, "providers": list(engine.providers),
                   "fallback": getattr(engine, "fallback", None)},
        "inputs": inputs,
        "ricecli_version": __version__,
    }
    return apply_to_result(result, probs, members, model.spec)  # calibrated p, raw p, spread


def qa_failed(result: dict[str, Any]) -> bool:
    """True when the case's QA verdict is fail (the answer cannot be trusted)."""
    return (result.get("qa") or {}).get("verdict") == "fail"


def withhold_answer(result: dict[str, Any]) -> dict[str, Any]:
    """No label for a case that failed QA: label, probabilities and votes become null."""
    result.update(label=None, probabilities=None, votes=None, members=[],
                  probabilities_uncalibrated=None, uncertainty=None,
                  decision="no label: the QA verdict is fail (see qa.reasons); rerun with "
                  "--accept-qa-failure to get the label anyway")
    return result


def qa_line(result: dict[str, Any]) -> str:
    """One line saying why a case failed QA."""
    reasons = (result.get("qa") or {}).get("reasons") or ["no reason recorded"]
    return f"QA failed, no label: {'; '.join(reasons)}"


def qa_warnings(qa: object, prefix: str = "") -> list[str]:
    """Every string under a `warnings` key anywhere in the QA record, with its section."""
    out: list[str] = []
    if isinstance(qa, dict):
        for key, value in qa.items():
            where = f"{prefix}{key}"
            if key == "warnings" and isinstance(value, (list, tuple)):
                sect = prefix.rstrip(".")
                out += [f"{sect}: {w}" if sect else str(w) for w in value]
            elif key == "warning" and isinstance(value, str) and value:
                out.append(f"{prefix.rstrip('.')}: {value}" if prefix else value)
            else:
                out += qa_warnings(value, where + ".")
    elif isinstance(qa, (list, tuple)):
        for item in qa:
            out += qa_warnings(item, prefix)
    return out


def _plain(value: object) -> Any:
    """JSON-safe copy: numpy scalars/arrays, paths, tuples, sets made plain."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def to_json(result: dict[str, Any]) -> str:
    """The result as indented JSON (private `_` keys left out)."""
    return json.dumps({k: v for k, v in result.items() if not k.startswith("_")}, indent=2,
                      sort_keys=False) + "\n"

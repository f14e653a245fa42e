"""The contract of a classified case: QA findings and report, the case result, and the JSON they
become at the edge (`to_record`, `to_json`), documented in docs/result-schema.md.

Everything else builds these once and reads their fields; only the writers (the JSON, the
screen, the CSV, the DICOM SR) turn them into text.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1  # of result.json and explain.json's shared part (docs/result-schema.md)
WITHHELD = ("no label: the QA verdict is fail (see qa.reasons); rerun with --accept-qa-failure "
            "to get the label anyway")


@dataclass(frozen=True)
class Finding:
    """One QA reason or warning: a stable machine `code` and the sentence a reader sees."""

    code: str
    message: str


@dataclass(frozen=True)
class QAReport:
    """The QA verdict of a prepared case: pass, warn (see `warnings`) or fail (see `reasons`);
    `measures`: what preparation measured (registration, dose, agreement, coverage, geometry,
    gate, brain source); `notes`: what the readers did to the inputs."""

    verdict: str
    reasons: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    measures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def why(self) -> list[Finding]:
        """The findings behind the verdict: the reasons of a fail, the warnings of a warn."""
        return self.reasons if self.verdict == "fail" else self.warnings


@dataclass(frozen=True)
class Member:
    """One ensemble member: its vote (argmax of its own p) and its p, raw and calibrated."""

    vote: str
    probabilities: dict[str, float]
    probabilities_calibrated: dict[str, float]


@dataclass(frozen=True)
class CaseResult:
    """The answer for one case, built once (outputs.record.build_result). `label` and the
    probabilities are None when QA failed and the answer is withheld."""

    label: str | None
    probabilities: dict[str, float] | None  # calibrated: the one p every output shows
    probabilities_uncalibrated: dict[str, float] | None
    decision: str
    votes: dict[str, int] | None
    members: list[Member]
    uncertainty: dict[str, Any] | None
    calibration: dict[str, Any]
    qa: QAReport
    timings_s: dict[str, float]
    model: dict[str, Any]
    engine: dict[str, Any]
    inputs: dict[str, Any]
    label_despite_qa_failure: bool = False
    prepared_dir: str | None = None

    @property
    def labelled(self) -> bool:
        """True when the case got a label (QA passed, or its failure was accepted)."""
        return self.label is not None


def qa_record(qa: QAReport) -> dict[str, Any]:
    """The QA report as JSON: verdict, reasons and warnings as {code, message}, notes, then
    the measures under their own keys (registration, dose, ...)."""
    return {"verdict": qa.verdict, "reasons": [plain(f) for f in qa.reasons],
            "warnings": [plain(f) for f in qa.warnings], "notes": list(qa.notes),
            **plain(qa.measures)}


def to_record(result: CaseResult) -> dict[str, Any]:
    """The result as plain JSON data (the keys of docs/result-schema.md, in that order)."""
    from ricecli import __version__

    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    for f in fields(result):
        value = getattr(result, f.name)
        if f.name == "members":
            out[f.name] = [{"member": i, **plain(m)} for i, m in enumerate(value)]
        else:
            out[f.name] = qa_record(value) if f.name == "qa" else plain(value)
    out["ricecli_version"] = __version__
    return out


def to_json(record: dict[str, Any]) -> str:
    """A record (to_record's, maybe with a command's own keys added) as indented JSON."""
    return json.dumps(plain(record), indent=2) + "\n"


def plain(value: object) -> Any:
    """JSON-safe copy: dataclasses, numpy scalars/arrays, paths, tuples made plain; non-finite
    floats become null."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)

"""What a cohort run produces, as types: cases, skip rows, each patient's review; the fold
and the filesystem-safe id of a case."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from ricecli.cohort.rtlink import DoseChoice
from ricecli.cohort.series import Series, Typing
from ricecli.cohort.timeline import Visit

FOLDS = 5


@dataclass(frozen=True)
class Skip:
    """One row of skipped.csv: a file, series, patient or label row not used, and why."""

    path: str
    patient_id: str
    study_uid: str
    series_uid: str
    what: str  # file | series | patient | label
    code: str
    reason: str


@dataclass(frozen=True)
class Case:
    """One manifest row, still as header facts: series, dose, frame, transform, label."""

    case_id: str
    patient_id: str
    post_op: Visit
    event: Visit
    dose: DoseChoice
    dose_frame: Series | None
    transform: np.ndarray | None  # post_op points -> dose-frame points (from a REG)
    label: str
    split: str
    notes: tuple[str, ...]


@dataclass
class PatientReview:
    """What review.html shows of a patient: every series' type and why, and the outcome."""

    patient_id: str
    series: list[tuple[Series, Typing, str]] = field(default_factory=list)  # + choice note
    warnings: list[str] = field(default_factory=list)
    outcome: str = ""


@dataclass
class Cohort:
    """The result of a run: cases, skip rows and the review of every patient."""

    cases: list[Case]
    skipped: list[Skip]
    patients: list[PatientReview]
    labels_path: str = ""


def fold_of(patient_id: str) -> str:
    """The patient's fold (fold0..fold4): a hash of the id, stable as the cohort grows."""
    return f"fold{int(hashlib.sha256(patient_id.encode()).hexdigest(), 16) % FOLDS}"


def safe_id(text: str) -> str:
    """A filesystem-safe id (letters, digits, . _ -)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"

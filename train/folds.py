"""Patient-level stratified K folds, fixed by a seed and saved as RUN/folds.json."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ricecli.errors import InputError
from ricecli.io.files import write_text_atomic
from train.data import CaseRecord


def make_folds(records: list[CaseRecord], k: int, seed: int) -> dict:
    """Assign whole patients to folds, dealing each class's patients round-robin."""
    cv = [r for r in records if r.split == "cv"]
    by_patient: dict[str, list[CaseRecord]] = defaultdict(list)
    for r in cv:
        by_patient[r.patient_id].append(r)
    if len(by_patient) < k:
        raise InputError(f"{len(by_patient)} cross-validation patients cannot make {k} folds",
                         fix="lower --folds or add cases")
    # A patient's stratum is its majority label (ties -> recurrence).
    strata: dict[int, list[str]] = defaultdict(list)
    for pid in sorted(by_patient):
        votes = Counter(r.label for r in by_patient[pid])
        strata[int(votes[1] >= votes[0])].append(pid)
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    offset = 0
    for label in sorted(strata):
        pids = list(strata[label])
        rng.shuffle(pids)
        for i, pid in enumerate(pids):
            fold_of[pid] = (offset + i) % k
        offset += len(pids)  # continue the deal where the last class stopped: sizes balance
    folds = [sorted(r.case_id for r in cv if fold_of[r.patient_id] == f) for f in range(k)]
    return {"k": k, "seed": seed, "n_cases": len(cv), "n_patients": len(by_patient),
            "val": folds}


def save_folds(folds: dict, path: str | Path) -> None:
    write_text_atomic(path, json.dumps(folds, indent=1) + "\n")


def load_folds(path: str | Path, records: list[CaseRecord]) -> dict:
    """Read folds.json and check it covers exactly the manifest's cv cases."""
    path = Path(path)
    try:
        folds = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read folds ({err})", path, "give a folds.json written by "
                         "'python -m train fit'") from err
    cv = {r.case_id for r in records if r.split == "cv"}
    listed = [c for v in folds["val"] for c in v]
    if set(listed) != cv or len(listed) != len(cv):
        raise InputError("folds do not match the manifest's cv cases", path,
                         "use the manifest the folds were made from, or start a new run")
    return folds


def split_indices(records: list[CaseRecord], folds: dict, fold: int) -> tuple[list[int], list[int]]:
    """Indices (into records) of the training and validation cases of `fold`."""
    val = set(folds["val"][fold])
    train = [i for i, r in enumerate(records) if r.split == "cv" and r.case_id not in val]
    valid = [i for i, r in enumerate(records) if r.case_id in val]
    return train, valid

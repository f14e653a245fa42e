"""One `ricecli cohort` run: check the folders, index (incrementally), build, write."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ricecli.cohort.build import build_cohort
from ricecli.cohort.index import INDEX_FILE, index_tree, load_index
from ricecli.cohort.labels import parse_label_map, read_labels
from ricecli.cohort.rules import load_rules
from ricecli.cohort.write import OUTPUT_NAMES, write_cohort
from ricecli.errors import InputError, OutputError
from ricecli.io.files import refuse_inputs


@dataclass(frozen=True)
class RunSummary:
    """What a run did: counts for the console and the benchmark."""

    files: int
    read: int
    reused: int
    index_seconds: float
    cases: int
    patients: int
    skipped: dict[str, int]


def check_folders(dicom_dir: Path, out: Path) -> None:
    """InputError/OutputError unless DICOM_DIR is a folder and COHORT_DIR is new, empty or a
    cohort folder of an earlier run, and neither lies in the other."""
    if not dicom_dir.is_dir():
        raise InputError("is not a folder", dicom_dir, fix="give the folder of the DICOM export")
    refuse_inputs(out.resolve(), [dicom_dir], "folder", "--out folder")
    if out.exists() and not out.is_dir():
        raise OutputError("the output exists and is not a folder", out,
                          fix="choose a new --out folder")
    if out.is_dir() and any(out.iterdir()) and not (out / INDEX_FILE).is_file():
        raise OutputError("the output folder is not empty and holds no earlier cohort run", out,
                          fix="choose a new --out folder (or the COHORT_DIR of an earlier run)")
    others = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_NAMES) \
        if out.is_dir() else []
    if others:  # a re-run replaces the folder: it must not take a user's files with it
        raise OutputError(f"the output folder holds files ricecli cohort did not write "
                          f"({', '.join(others[:3])})", out,
                          fix="move them out of COHORT_DIR, or choose another --out folder")


def run_cohort(dicom_dir: Path, out: Path, labels: Path | None = None,
               label_map: str | None = None, rules: Path | None = None,
               jobs: int = 1) -> RunSummary:
    """Index DICOM_DIR, build the cohort and write COHORT_DIR; InputError when no case forms."""
    check_folders(dicom_dir, out)
    if jobs < 1:
        raise InputError(f"--jobs {jobs} is not a positive number", fix="give --jobs 1 or more")
    root = dicom_dir.resolve()
    typing_rules = load_rules(rules)
    words = parse_label_map(label_map)
    label_rows = read_labels(labels) if labels is not None else None
    t0 = time.perf_counter()
    run = index_tree(root, load_index(out / INDEX_FILE, root), jobs)
    seconds = time.perf_counter() - t0
    cohort = build_cohort(run.entries, typing_rules, label_rows, words,
                          str(labels) if labels else "")
    codes = Counter(s.code for s in cohort.skipped)
    if not cohort.cases:
        top = ", ".join(f"{code} {n}" for code, n in codes.most_common(4))
        raise InputError(f"no case formed from {len(run.entries)} files of "
                         f"{len(cohort.patients)} patients ({top or 'no DICOM files'})",
                         dicom_dir, fix="check that the export holds each patient's planning "
                         "study (contrast T1 + RTDOSE) and a later contrast T1 (and --labels)")
    write_cohort(root, out, cohort, run)
    return RunSummary(len(run.entries), run.read, run.reused, seconds, len(cohort.cases),
                      len(cohort.patients), dict(sorted(codes.items())))

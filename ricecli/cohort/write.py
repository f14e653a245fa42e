"""Write a cohort into COHORT_DIR, whole or not at all: manifest.csv, skipped.csv, cases.json,
review.html, summed doses (doses/), REG transforms (transforms/), series folders (series/) and
the header index. Every path in the manifest is relative to COHORT_DIR."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import SimpleITK as sitk

from ricecli.cohort.cases import Case, Cohort
from ricecli.cohort.index import INDEX_FILE, IndexRun, index_text
from ricecli.cohort.review import review_html
from ricecli.cohort.rtlink import sum_doses, write_transform
from ricecli.cohort.series import Series
from ricecli.io.files import staged_output

MANIFEST_COLUMNS = ("case_id", "patient_id", "post_op", "event", "dose", "dose_frame",
                    "dose_frame_transform", "label", "split", "post_op_date", "event_date")
OUTPUT_NAMES = {"manifest.csv", "skipped.csv", "cases.json", "review.html", INDEX_FILE, "doses",
                "transforms", "series"}
SKIP_COLUMNS = ("path", "patient_id", "study_uid", "series_uid", "what", "code", "reason")


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def link_series(root: Path, files: Iterable[str], folder: Path) -> None:
    """A new `folder` of links to a series' files (`root`-relative, in slice order): a reader of
    the folder reads this series alone. OSError where links cannot be made."""
    folder.mkdir(parents=True)
    for i, rel in enumerate(files):
        os.symlink(root / rel, folder / f"{i:05d}.dcm")


class _Writer:
    """Places a case's inputs under the staging folder; remembers what it already placed."""

    def __init__(self, root: Path, out: Path, stage: Path, entries: list[str]) -> None:
        self.root, self.out, self.stage = root, out, stage
        self.per_folder = Counter(os.path.dirname(rel) for rel in entries)
        self.done: dict[str, str] = {}

    def rel(self, path: Path) -> str:
        """`path` (under the root or the final COHORT_DIR) relative to COHORT_DIR."""
        return Path(os.path.relpath(path, self.out)).as_posix()

    def series(self, series: Series) -> str:
        """The series' own folder when it holds only this series' files; else a folder of links
        to them (COHORT_DIR/series/...), or else one of its files (the reader reads its series)."""
        if series.series_uid in self.done:
            return self.done[series.series_uid]
        folders = {os.path.dirname(rel) for rel in series.files}
        folder = next(iter(folders))
        if len(folders) == 1 and self.per_folder[folder] == len(series.files):
            path = self.rel(self.root / folder)
        else:
            name = f"series/{_short(series.series_uid)}"
            try:
                link_series(self.root, series.files, self.stage / name)
                path = self.rel(self.out / name)
            except OSError:  # no symbolic links here: one file, its series read by UID
                path = self.rel(self.root / series.files[0])
        self.done[series.series_uid] = path
        return path

    def dose(self, case: Case) -> str:
        """The RTDOSE file, or a summed dose in Gy written once per plan (doses/*.nii.gz)."""
        if len(case.dose.files) == 1 and case.dose.summation == "PLAN":
            return self.rel(self.root / case.dose.files[0])
        key = f"dose:{case.patient_id}:{case.dose.plan_uid}"
        if key not in self.done:
            name = f"doses/{case.patient_id}_{_short(case.dose.plan_uid)}.nii.gz"
            (self.stage / "doses").mkdir(exist_ok=True)
            sitk.WriteImage(sum_doses(self.root, case.dose), str(self.stage / name),
                            useCompression=True)
            self.done[key] = self.rel(self.out / name)
        return self.done[key]

    def transform(self, case: Case) -> str:
        """The post_op -> dose-frame rigid transform from a REG (transforms/*.tfm), or ''."""
        if case.transform is None or case.post_op.t1c is None:
            return ""
        key = f"tfm:{case.patient_id}:{case.post_op.t1c.frame_uid}:{case.dose.frame_uid}"
        if key not in self.done:
            name = f"transforms/{case.patient_id}_{_short(key)}.tfm"
            (self.stage / "transforms").mkdir(exist_ok=True)
            write_transform(case.transform, self.stage / name)
            self.done[key] = self.rel(self.out / name)
        return self.done[key]


def _csv(columns: tuple[str, ...], rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_cohort(root: Path, out: Path, cohort: Cohort, run: IndexRun) -> None:
    """Write every output of a run into `out` (replacing an earlier run's, atomically)."""
    out = out.resolve()
    with staged_output(out, [root], overwrite=True) as stage:
        writer = _Writer(root, out, stage, [e["path"] for e in run.entries])
        rows, details = [], []
        for case in cohort.cases:
            assert case.post_op.t1c is not None and case.event.t1c is not None
            row = {"case_id": case.case_id, "patient_id": case.patient_id,
                   "post_op": writer.series(case.post_op.t1c),
                   "event": writer.series(case.event.t1c), "dose": writer.dose(case),
                   "dose_frame": writer.series(case.dose_frame) if case.dose_frame else "",
                   "dose_frame_transform": writer.transform(case), "label": case.label,
                   "split": case.split,
                   "post_op_date": case.post_op.date.isoformat() if case.post_op.date else "",
                   "event_date": case.event.date.isoformat() if case.event.date else ""}
            rows.append(row)
            details.append({
                **row, "post_op_series_uid": case.post_op.t1c.series_uid,
                "event_series_uid": case.event.t1c.series_uid,
                "post_op_study_uid": case.post_op.study_uid,
                "event_study_uid": case.event.study_uid, "dose_files": list(case.dose.files),
                "dose_summation": case.dose.summation, "plan_uid": case.dose.plan_uid,
                "dose_frame_of_reference_uid": case.dose.frame_uid,
                "dose_frame_series_uid": case.dose_frame.series_uid if case.dose_frame else "",
                "transform_matrix": case.transform.ravel().tolist()
                if case.transform is not None else None, "notes": list(case.notes)})
        skips = [{k: getattr(s, k) for k in SKIP_COLUMNS} for s in cohort.skipped]
        skips.sort(key=lambda r: (r["patient_id"], r["what"], r["path"], r["series_uid"],
                                  r["code"]))
        (stage / "manifest.csv").write_text(_csv(MANIFEST_COLUMNS, rows), encoding="utf-8")
        (stage / "skipped.csv").write_text(_csv(SKIP_COLUMNS, skips), encoding="utf-8")
        (stage / "cases.json").write_text(json.dumps({"source": str(root), "cases": details},
                                                     indent=1) + "\n", encoding="utf-8")
        (stage / "review.html").write_text(review_html(root, cohort), encoding="utf-8")
        (stage / INDEX_FILE).write_text(index_text(root, run.entries), encoding="utf-8")

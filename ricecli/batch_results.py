"""The results CSV of `ricecli batch`: one row per case, appended under a file lock (filelock's,
beside the CSV) and flushed, so a killed run or parallel shards never lose finished rows;
resume reads it back.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from filelock import FileLock

from ricecli.errors import EXIT_INTERNAL, EXIT_QA_FAILED, EXIT_REFUSED, OutputError
from ricecli.io.manifest import ManifestCase
from ricecli.result import CaseResult

RESULT_COLUMNS = ("case_id", "status", "label", "p_recurrence", "p_RICE", "votes_recurrence",
                  "votes_RICE", "members", "true_label", "warnings", "seconds", "error",
                  "explain_dir", "model_sha256", "engine", "qa_verdict", "qa_reasons",
                  "uncertain", "member_sd")  # p_*: calibrated (the one p every output shows)
DONE_STATUSES = ("ok", "qa_fail")  # recorded for good; "error" rows too unless --retry-failed

Row = dict[str, Any]  # one results CSV row: column -> str or int


def finished_cases(results: Path, retry_failed: bool = False) -> set[str]:
    """case_ids already recorded in results (ok rows; error rows too unless retrying)."""
    if not results.is_file() or results.stat().st_size == 0:
        return set()
    with open(results, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "case_id" not in reader.fieldnames \
                or "status" not in reader.fieldnames:
            raise OutputError("existing results file is not a ricecli batch results CSV",
                              results, fix="choose another --out or remove that file")
        keep = set(DONE_STATUSES) if retry_failed else {*DONE_STATUSES, "error"}
        done = {r["case_id"] for r in reader if r.get("status") in keep}
    return done


class ResultsWriter:
    """Append rows to the results CSV under an exclusive lock, header once, fsync per row."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.is_dir() or not self.path.parent.is_dir():
            raise OutputError("cannot write the results file here", self.path,
                              fix="give a file name in an existing folder, e.g. results.csv")

    def append(self, row: Row) -> None:
        """Append one row (a half row left by a killed writer is closed first)."""
        with FileLock(f"{self.path}.lock"), open(self.path, "a+", newline="") as f:
            f.seek(0)
            # an existing file keeps its own columns (one written by an older version too)
            header = next(csv.reader([f.readline()]), None) or list(RESULT_COLUMNS)
            buf = io.StringIO()
            csv.DictWriter(buf, header, extrasaction="ignore", lineterminator="\n").writerow(row)
            f.seek(0, os.SEEK_END)
            prefix = ""
            if f.tell() == 0:
                prefix = ",".join(RESULT_COLUMNS) + "\n"
            else:
                f.seek(f.tell() - 1)
                if f.read(1) != "\n":  # a killed writer left half a row: close it
                    prefix = "\n"
            f.write(prefix + buf.getvalue())
            f.flush()
            os.fsync(f.fileno())


def result_row(case: ManifestCase, result: CaseResult | None, error: str | None,
               seconds: float, explain_dir: str = "") -> Row:
    """The CSV row of one case (ok with its result, qa_fail without a label, or error with the
    message); p_*: the calibrated p, the one every output shows."""
    row: Row = {"case_id": case.case_id, "true_label": case.label or "",
                "seconds": f"{seconds:.2f}", "explain_dir": explain_dir}
    if result is None:
        return {**row, "status": "error", "error": error or "unknown error"}
    row.update(qa_verdict=result.qa.verdict,
               qa_reasons=" | ".join(f.message for f in result.qa.why()),
               warnings=" | ".join(f.message for f in result.qa.warnings), error="",
               model_sha256=result.model["sha256"], engine=result.engine["name"])
    if result.probabilities is None or result.votes is None:  # QA failed: the reasons say why
        return {**row, "status": "qa_fail"}
    probs, votes, unc = result.probabilities, result.votes, result.uncertainty or {}
    return {**row, "status": "ok", "label": result.label,
            "p_recurrence": f"{probs['recurrence']:.6f}", "p_RICE": f"{probs['RICE']:.6f}",
            "votes_recurrence": votes.get("recurrence", 0), "votes_RICE": votes.get("RICE", 0),
            "members": len(result.members), "uncertain": int(bool(unc.get("uncertain"))),
            "member_sd": f"{unc['member_sd_p_recurrence']:.6f}"
            if "member_sd_p_recurrence" in unc else ""}


def read_results(results: Path) -> list[Row]:
    """Every case's row in the results CSV, the last row of a case counting (--retry-failed
    appends one): earlier runs of a resumed batch and other shards included."""
    if not results.is_file() or results.stat().st_size == 0:
        return []
    with open(results, newline="") as f:
        last = {r["case_id"]: r for r in csv.DictReader(f) if r.get("case_id")}
    return list(last.values())


def summarise(rows: Iterable[Row]) -> dict[str, int | float]:
    """Counts of ok / QA-failed / error rows and, over the cases with a true label, how many
    got an answer and the accuracy of those answers."""
    rows = list(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    with_truth = [r for r in rows if r.get("true_label")]
    labelled = [r for r in with_truth if r["status"] == "ok"]
    qa_fail = sum(r["status"] == "qa_fail" for r in rows)
    out: dict[str, int | float] = {"cases": len(rows), "ok": len(ok),
                                   "failed": len(rows) - len(ok), "qa_fail": qa_fail,
                                   "errors": len(rows) - len(ok) - qa_fail,
                                   "with_true_label": len(with_truth), "labelled": len(labelled)}
    if labelled:
        out["accuracy"] = sum(r["label"] == r["true_label"] for r in labelled) / len(labelled)
    return out


def summary_line(summary: dict[str, int | float]) -> str:
    """The summary as one sentence that cannot be misread: an accuracy always says how many of
    the cases with a true label it covers."""
    failed = ""
    if summary["failed"]:
        parts = [f"{summary[k]} {what}" for k, what in (("qa_fail", "failed QA, no label"),
                                                        ("errors", "errors")) if summary[k]]
        failed = f" ({', '.join(parts)})"
    line = f"{summary['cases']} case(s): {summary['ok']} ok, {summary['failed']} failed{failed}"
    truth = int(summary["with_true_label"])
    if "accuracy" in summary:
        line += (f"; accuracy {summary['accuracy']:.3f} on the {summary['labelled']} of {truth} "
                 "cases with a true label that got an answer")
        if summary["labelled"] < truth:
            line += f" ({truth - int(summary['labelled'])} got none: not counted)"
    elif truth:
        line += f"; none of the {truth} cases with a true label got an answer: no accuracy"
    return line


def exit_code(rows: list[Row]) -> int:
    """0 when a case of this run got a label (or none ran); when every case failed: 3 if any
    failed QA, else 1 if any internal error, else 2 (every case's input was refused)."""
    if not rows or any(r["status"] == "ok" for r in rows):
        return 0
    if any(r["status"] == "qa_fail" for r in rows):
        return EXIT_QA_FAILED
    if any("internal error" in (r.get("error") or "") or "worker failed" in (r.get("error") or "")
           for r in rows):
        return EXIT_INTERNAL
    return EXIT_REFUSED

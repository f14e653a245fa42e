"""`ricecli cohort`: from a DICOM export (any folder layout) to manifest.csv, review.html and
skipped.csv, by headers alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DicomDirArg = Annotated[Path, typer.Argument(
    help="Folder of the DICOM export (any layout: NBIA, flat, one folder per file).")]
CohortOutOpt = Annotated[Path, typer.Option(
    "--out", help="COHORT_DIR: new, empty, or an earlier run's (only new files are read).")]
LabelsOpt = Annotated[Path | None, typer.Option(
    "--labels", help="CSV patient_id,event_date,label (event_date: a date, a follow-up index "
    "1, 2 ... or a StudyInstanceUID); only the labelled follow-ups become cases.")]
LabelMapOpt = Annotated[str | None, typer.Option(
    "--label-map", help="Clinical words to classes, e.g. "
    "progression=recurrence,pseudoprogression=RICE.")]
RulesOpt = Annotated[Path | None, typer.Option(
    "--rules", help="TOML of series-typing rules tried before the shipped ones "
    "(docs/cohort.md).")]
JobsOpt = Annotated[int, typer.Option("--jobs", help="Processes reading headers.")]


def command(
    dicom_dir: DicomDirArg,
    out: CohortOutOpt,
    labels: LabelsOpt = None,
    label_map: LabelMapOpt = None,
    rules: RulesOpt = None,
    jobs: JobsOpt = 1,
) -> None:
    """Find each patient's planning contrast T1, follow-up contrast T1s, plan dose and dose
    frame by headers; write COHORT_DIR/manifest.csv for batch and train."""
    from rich.console import Console

    from ricecli.cohort.run import run_cohort

    summary = run_cohort(dicom_dir, out, labels, label_map, rules, jobs)
    rate = f" ({summary.read / summary.index_seconds:.0f}/s)" \
        if summary.read and summary.index_seconds > 0 else ""
    console = Console()
    console.print(f"[bold]cohort[/bold] {out}: {summary.cases} cases from {summary.patients} "
                  f"patients", highlight=False)
    console.print(f"  headers: {summary.files} files, {summary.read} read{rate}, "
                  f"{summary.reused} from the index", highlight=False)
    if summary.skipped:
        codes = ", ".join(f"{k} {v}" for k, v in summary.skipped.items())
        console.print(f"  not used (skipped.csv): {codes}", highlight=False)
    console.print(f"  review: {out / 'review.html'}", highlight=False)

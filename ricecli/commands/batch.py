"""`ricecli batch`: classify every case of a manifest into a results CSV (resumable, shardable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ricecli.commands import options as opt


def command(
    manifest: Annotated[Path, typer.Argument(
        help="CSV with case_id, post_op, event, dose (label, mask, dose_unit, "
        "dose_fractions, ... optional; an unknown column is refused); paths relative to its "
        "folder.")],
    out: Annotated[Path, typer.Option(
        "--out", help="Results CSV; cases already in it are skipped (resume).")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Cases run in parallel.")] = 1,
    shard: Annotated[str | None, typer.Option(
        "--shard", help="Run shard i of n (0 <= i < n): cases whose row index % n == i.")] = None,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Also write occlusion maps per case (default explain settings).")]
    = False,
    explain_dir: Annotated[Path | None, typer.Option(
        "--explain-dir", help="Where per-case maps go (default: <out stem>_explain/).")] = None,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Run again the cases recorded as errors (a new row is "
        "appended; the last row of a case counts).")] = False,
    model: opt.ModelOpt = None,
    device: opt.DeviceOpt = "auto",
    accept_qa_failure: Annotated[bool, typer.Option(
        "--accept-qa-failure", help="Give a case its label even when its QA fails (marked in "
        "its row); without it the case is recorded without a label (status qa_fail) and the "
        "batch goes on.")] = False,
    dicom_out: Annotated[Path | None, typer.Option(
        "--dicom-out", help="Also write a DICOM SR per case (and, with --explain, the "
        "occlusion map as a Parametric Map) into DIR/<case_id>/; event scans must be DICOM "
        "series.")] = None,
) -> None:
    """Classify many cases; a failing case is recorded with its error and the rest go on.

    Exit code 0 when a case of this run got a label (or none was left to run); when every
    case failed: 3 if any failed QA, else 1 if any internal error, else 2.
    """
    from rich.console import Console

    from ricecli.batch import BatchSettings, parse_shard, run_cases, select_shard
    from ricecli.batch_results import (
        ResultsWriter,
        Row,
        exit_code,
        finished_cases,
        read_results,
        summarise,
        summary_line,
    )
    from ricecli.errors import RicenetError
    from ricecli.io.files import check_output_file, check_writable, input_paths, refuse_inputs
    from ricecli.io.manifest import read_manifest
    from ricecli.pipeline import open_model
    from ricecli.progress import progress_bar
    from ricecli.runtime import physical_cores

    if jobs < 1:
        raise RicenetError("--jobs must be at least 1", fix="e.g. --jobs 2")
    console = Console()
    all_cases = read_manifest(manifest)
    cases = select_shard(all_cases, parse_shard(shard))
    # the manifest, every file it names and the model: no output may be, hold or lie in one
    in_paths = input_paths(model=model, manifest=manifest, cases=all_cases)
    check_output_file(out, in_paths, overwrite=True, option="--out")  # appended to: resume
    root = None
    if explain:
        root = explain_dir or out.with_name(out.stem + "_explain")
        refuse_inputs(root.expanduser().resolve(), in_paths, "folder", "--explain-dir")
        check_writable(root.expanduser().resolve(), "--explain-dir")
    if dicom_out is not None:
        from ricecli.outputs.dicom import check_batch_dicom_out

        dicom_out = dicom_out.expanduser().resolve()
        refuse_inputs(dicom_out, in_paths, "folder", "--dicom-out")
        check_batch_dicom_out(dicom_out, cases)
    writer = ResultsWriter(out)
    done = finished_cases(out, retry_failed)
    todo = [c for c in cases if c.case_id not in done]
    loaded, _ = open_model(model, device)  # fail fast on a bad model or device, before any case
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    console.print(f"{len(cases)} case(s) in this shard, {len(cases) - len(todo)} already in "
                  f"{out}, {len(todo)} to run with {jobs} job(s); model {loaded.name} "
                  f"{loaded.version}")
    threads = max(1, physical_cores() // jobs) if jobs > 1 else None
    settings = BatchSettings(
        model_path=str(loaded.path), device=device, threads=threads,
        explain_root=None if root is None else str(root), accept_qa_failure=accept_qa_failure,
        dicom_root=None if dicom_out is None else str(dicom_out))
    rows: list[Row] = []
    with progress_bar(console) as bar:
        task = bar.add_task("classifying", total=len(todo))
        for row in run_cases(todo, jobs, settings):
            writer.append(row)
            rows.append(row)
            if row["status"] == "qa_fail":
                bar.console.print(f"[red]{row['case_id']} QA failed, no label:[/] "
                                  f"{row['qa_reasons']}", highlight=False)
            elif row["status"] != "ok":
                bar.console.print(f"[red]{row['case_id']} failed:[/] {row['error']}",
                                  highlight=False)
            elif row.get("qa_verdict") == "warn":
                bar.console.print(f"[yellow]{row['case_id']} QA warn:[/] {row['qa_reasons']}",
                                  highlight=False)
            bar.advance(task)
    ran = summarise(rows)
    console.print(f"done: this run {ran['ok']} ok, {ran['failed']} failed; the results file "
                  f"{out} (earlier runs included) holds "
                  f"{summary_line(summarise(read_results(out)))}", highlight=False)
    code = exit_code(rows)
    if code:
        console.print(f"every case of this run failed: exit code {code}")
        raise typer.Exit(code)

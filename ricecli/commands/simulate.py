"""`ricecli simulate`: write a simulated cohort (post-op T1c, event T1c, dose, label) with truth."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from ricecli.errors import RicenetError


def command(
    out: Annotated[Path, typer.Option(
        "--out", help="New folder for the cohort (manifest.csv, cases/).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of cases.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same voxels.")] = 0,
    jobs: Annotated[int, typer.Option(
        "--jobs", min=1, help="Cases generated in parallel (processes).")] = 1,
    fmt: Annotated[str, typer.Option(
        "--format", help="nifti (.nii.gz, dose in Gy) or dicom (MR series + RTDOSE).")] = "nifti",
    recurrence_fraction: Annotated[float, typer.Option(
        "--recurrence-fraction", help="Expected share of recurrences (0..1).")] = 0.5,
    difficulty: Annotated[str, typer.Option(
        "--difficulty", help="easy | standard | hard: pose, grids, noise, class overlap.")
    ] = "standard",
    test_fraction: Annotated[float, typer.Option(
        "--test-fraction", help="Share of each class in split 'test' (rest 'cv').")] = 0.15,
    hypofractionated_fraction: Annotated[float, typer.Option(
        "--hypofractionated-fraction", help="Share of 40.05 Gy/15 fx plans (rest 60 Gy/30 fx).")
    ] = 0.3,
    skull_on_share: Annotated[float, typer.Option(
        "--skull-on-share", help="Share of patients scanned skull-on (scalp, skull, neck; both "
        "visits); the rest skull-stripped.")] = 0.5,
    voxel_scale: Annotated[float, typer.Option(
        "--voxel-scale", help="Multiply native voxel sizes (2: small, fast test cohorts).")] = 1.0,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing non-empty --out folder.")] = False,
) -> None:
    """Simulate post-treatment glioblastoma cases (RICE vs recurrence), native scanner geometry."""
    from rich.console import Console
    from rich.progress import TextColumn

    from ricecli.io.files import staged_output
    from ricecli.progress import progress_bar
    from ricecli.simulate.case import DIFFICULTIES, FORMATS, SimConfig
    from ricecli.simulate.cohort import generate_cohort

    if fmt not in FORMATS:
        raise RicenetError(f"unknown --format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    if difficulty not in DIFFICULTIES:
        raise RicenetError(f"unknown --difficulty {difficulty!r}",
                           fix=f"use one of {', '.join(DIFFICULTIES)}")
    for name, value in (("--recurrence-fraction", recurrence_fraction),
                        ("--hypofractionated-fraction", hypofractionated_fraction)):
        if not 0.0 < value < 1.0:
            raise RicenetError(f"{name} must lie strictly between 0 and 1, got {value}",
                               fix=f"pass e.g. {name} 0.5")
    if not 0.0 <= skull_on_share <= 1.0:
        raise RicenetError(f"--skull-on-share must lie in [0, 1], got {skull_on_share}",
                           fix="pass e.g. --skull-on-share 0.5 (0: all skull-stripped)")
    if not 0.0 <= test_fraction < 1.0:
        raise RicenetError(f"--test-fraction must lie in [0, 1), got {test_fraction}",
                           fix="pass e.g. --test-fraction 0.15")
    if not 0.25 <= voxel_scale <= 4.0:
        raise RicenetError(f"--voxel-scale must lie in [0.25, 4], got {voxel_scale}",
                           fix="pass 1 (scanner-like) or 2 (fast)")
    config = SimConfig(difficulty=difficulty, recurrence_fraction=recurrence_fraction,
                       hypofractionated_fraction=hypofractionated_fraction,
                       voxel_scale=voxel_scale, fmt=fmt, skull_on_share=skull_on_share)
    console = Console(stderr=True)
    counts: Counter = Counter()
    with staged_output(out, inputs=(), overwrite=overwrite) as stage:
        with progress_bar(console, TextColumn("{task.fields[classes]}")) as progress:
            task = progress.add_task("simulate", total=n, classes="")

            def tick(row: dict) -> None:
                counts[row["label"]] += 1
                text = f"RICE {counts['RICE']} / recurrence {counts['recurrence']}"
                progress.update(task, advance=1, classes=text)

            rows = generate_cohort(stage, n, seed, config, jobs=jobs, test_fraction=test_fraction,
                                   on_case=tick)
    splits = Counter(r["split"] for r in rows)
    skull_on = sum(int(r["skull_on"]) for r in rows)
    console.print(f"wrote {n} cases to {out} (RICE {counts['RICE']}, recurrence "
                  f"{counts['recurrence']}; cv {splits['cv']}, test {splits['test']}; "
                  f"skull-on {skull_on}); "
                  f"manifest: {out / 'manifest.csv'}")

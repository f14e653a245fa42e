"""`ricecli prepare`: register and resample one case into model space, as the model sees it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ricecli.errors import EXIT_QA_FAILED, RicenetError

if TYPE_CHECKING:
    from ricecli.prepare import CaseInputs

T1Opt = Annotated[list[Path], typer.Option(
    "--t1", help="T1c scans: first the post-operative (planning) scan, then the event scan.")]
# a list, so that a repeated --dose is refused (a plain option would silently keep the last)
DoseOpt = Annotated[list[Path], typer.Option(
    "--dose", help="RT dose: DICOM RTDOSE (file or folder) or an image file in Gy.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder (must be new or empty).")]
MaskOpt = Annotated[Path | None, typer.Option(
    "--mask", help="Brain mask of the event scan, in its frame (e.g. from HD-BET).")]
DoseUnitOpt = Annotated[str, typer.Option(
    "--dose-unit", help="Unit of an image dose: Gy or cGy (RTDOSE says its own).")]
FractionsOpt = Annotated[int | None, typer.Option(
    "--dose-fractions", help="Multiply a per-fraction dose by this number of fractions.")]
RelativeOpt = Annotated[float | None, typer.Option(
    "--dose-relative-scale", help="Gy per unit of an RTDOSE with DoseUnits RELATIVE.")]
FrameOpt = Annotated[Path | None, typer.Option(
    "--dose-frame", help="Image (planning CT or MR) whose frame the dose is defined in, when "
    "that is not the post-op scan's.")]
BrainExtractionOpt = Annotated[bool, typer.Option(
    "--brain-extraction/--no-brain-extraction", help="Find the brain of a skull-on scan "
    "(deepbet, shipped; skull-stripped scans and --mask need none). Off: the template's brain "
    "mask, and registration of the whole head (less stable, QA warns).")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace an existing non-empty output folder.")]
PresetOpt = Annotated[str, typer.Option("--preset", help="Model space: edge (3 mm) or paper.")]
T1_COUNT = "--t1 was given {n} {times}, it needs exactly two"


def one_dose(dose: list[Path] | Path) -> Path:
    """The single --dose path; a repeated --dose is a usage error, not 'the last one wins'."""
    if isinstance(dose, Path):
        return dose
    if len(dose) != 1:
        raise RicenetError(f"--dose was given {len(dose)} times ({', '.join(map(str, dose))}), "
                           "it takes exactly one dose", fix="pass --dose once: the plan's dose "
                           "in Gy (RTDOSE or image file)")
    return dose[0]


def case_inputs(t1: list[Path], dose: list[Path] | Path, mask: Path | None = None,
                dose_unit: str = "Gy", dose_fractions: int | None = None,
                dose_relative_scale: float | None = None, dose_frame: Path | None = None,
                brain_extraction: bool = True) -> CaseInputs:
    """CaseInputs from the case options of prepare, classify and explain (two --t1: the
    post-op scan first, then the event scan; one --dose)."""
    from ricecli.prepare import CaseInputs

    if len(t1) != 2:
        raise RicenetError(T1_COUNT.format(n=len(t1), times="time" if len(t1) == 1 else "times"),
                           fix="pass --t1 POSTOP --t1 EVENT (the post-operative scan first)")
    return CaseInputs(post_op=t1[0], event=t1[1], dose=one_dose(dose), mask=mask,
                      dose_unit=dose_unit, dose_fractions=dose_fractions, dose_frame=dose_frame,
                      dose_relative_scale_gy=dose_relative_scale,
                      brain_extraction=brain_extraction)


def summary_lines(qa: dict[str, Any], seconds: float) -> list[str]:
    """Plain-text lines of the QA summary (the rich table is built from the same numbers)."""
    lines = []
    for name, reg in qa["registration"].items():
        state = "CHECK" if reg["likely_failed"] else "ok"
        lines.append(f"{name}: {state} (MI {reg['metric']:.3f}, {reg['iterations']} it, "
                     f"{reg['seconds']:.1f} s)")
    dose = qa["dose"]
    lines.append(f"dose: max {dose['max_gy']:.2f} Gy, {dose['max_in_brain_gy']:.2f} Gy in the "
                 f"brain, covers {dose['coverage_of_brain']:.0%} of it")
    times = ", ".join(f"{k} {v:.2f} s" for k, v in qa["timings_s"].items())
    lines.append(f"time: {times}; total {seconds:.2f} s")
    from ricecli.qa import summary_lines as qa_lines

    return lines + qa_lines(qa)


def command(
    t1: T1Opt,
    dose: DoseOpt,
    out: OutOpt,
    mask: MaskOpt = None,
    dose_unit: DoseUnitOpt = "Gy",
    dose_fractions: FractionsOpt = None,
    dose_relative_scale: RelativeOpt = None,
    dose_frame: FrameOpt = None,
    brain_extraction: BrainExtractionOpt = True,
    overwrite: OverwriteOpt = False,
    preset: PresetOpt = "edge",
) -> None:
    """Register post-op and dose to the event scan and both into model space; write the
    three channels (post_op, event, dose .nii.gz) and qa.json to OUT."""
    t0 = time.perf_counter()
    inputs = case_inputs(t1, dose, mask, dose_unit, dose_fractions, dose_relative_scale,
                         dose_frame, brain_extraction)
    from rich.console import Console

    from ricecli.io.files import check_output_dir, input_paths
    from ricecli.pipeline import save_prepared_case
    from ricecli.prepare import prepare_case
    from ricecli.spec import PRESETS

    if preset not in PRESETS:
        raise RicenetError(f"unknown preset {preset!r}", fix=f"use one of {sorted(PRESETS)}")
    check_output_dir(out, input_paths(inputs), overwrite)  # fail before the slow part
    case = prepare_case(inputs, PRESETS[preset])
    case.qa["timings_s"]["total"] = round(time.perf_counter() - t0, 3)
    save_prepared_case(case, out, inputs, overwrite)
    console = Console()
    console.print(f"[bold]prepared[/bold] {out} ({preset} model space)")
    for line in summary_lines(case.qa, time.perf_counter() - t0):
        console.print(f"  {line}", highlight=False)
    if case.qa.get("verdict") == "fail":  # the channels are written for inspection, exit 3
        raise typer.Exit(EXIT_QA_FAILED)

"""`ricecli prepare`: register and resample one case into model space, as the model sees it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from ricecli.commands import options as opt
from ricecli.errors import EXIT_QA_FAILED, RicenetError

if TYPE_CHECKING:
    from ricecli.prepare import PreparedCase


def summary_lines(case: PreparedCase, seconds: float) -> list[str]:
    """Plain-text lines of the prepared case: registrations, dose, stage times, QA."""
    from ricecli.outputs.console import qa_lines

    qa = case.qa.measures
    lines = []
    for name, reg in qa["registration"].items():
        state = "CHECK" if reg["likely_failed"] else "ok"
        lines.append(f"{name}: {state} (MI {reg['metric']:.3f}, {reg['iterations']} it, "
                     f"{reg['seconds']:.1f} s)")
    dose = qa["dose"]
    lines.append(f"dose: max {dose['max_gy']:.2f} Gy, {dose['max_in_brain_gy']:.2f} Gy in the "
                 f"brain, covers {dose['coverage_of_brain']:.0%} of it")
    times = ", ".join(f"{k} {v:.2f} s" for k, v in case.timings_s.items() if k != "total")
    lines.append(f"time: {times}; total {seconds:.2f} s")
    return lines + qa_lines(case.qa)


def command(
    t1: opt.T1Opt,
    dose: opt.DoseOpt,
    out: opt.OutOpt,
    mask: opt.MaskOpt = None,
    dose_unit: opt.DoseUnitOpt = "Gy",
    dose_fractions: opt.DoseFractionsOpt = None,
    dose_relative_scale: opt.DoseRelScaleOpt = None,
    dose_frame: opt.DoseFrameOpt = None,
    dose_frame_transform: opt.DoseFrameTransformOpt = None,
    brain_extraction: opt.BrainExtractionOpt = True,
    overwrite: opt.OverwriteOpt = False,
    preset: opt.PresetOpt = "edge",
) -> None:
    """Register post-op and dose to the event scan and both into model space; write the
    three channels (post_op, event, dose .nii.gz) and qa.json to OUT."""
    t0 = time.perf_counter()
    inputs = opt.case_inputs(t1, dose, mask, dose_unit, dose_fractions, dose_relative_scale,
                             dose_frame, brain_extraction, dose_frame_transform)
    from rich.console import Console

    from ricecli.io.files import check_output_dir, input_paths
    from ricecli.pipeline import save_prepared_case
    from ricecli.prepare import prepare_case
    from ricecli.spec import PRESETS

    if preset not in PRESETS:
        raise RicenetError(f"unknown preset {preset!r}", fix=f"use one of {sorted(PRESETS)}")
    check_output_dir(out, input_paths(inputs), overwrite)  # fail before the slow part
    case = prepare_case(inputs, PRESETS[preset])
    case.timings_s["total"] = round(time.perf_counter() - t0, 3)
    save_prepared_case(case, out, inputs, overwrite)
    console = Console()
    console.print(f"[bold]prepared[/bold] {out} ({preset} model space)")
    for line in summary_lines(case, time.perf_counter() - t0):
        console.print(f"  {line}", highlight=False)
    if case.qa.verdict == "fail":  # the channels are written for inspection, exit 3
        raise typer.Exit(EXIT_QA_FAILED)

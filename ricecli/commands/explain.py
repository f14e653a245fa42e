"""`ricecli explain`: occlusion maps of what drove the answer, on the event scan's own grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ricecli.commands import options as opt

if TYPE_CHECKING:
    from ricecli.explain.occlusion import ExplainResult
    from ricecli.result import QAReport


def command(
    t1: opt.T1Opt,
    dose: opt.DoseOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for occlusion.nii.gz, "
                                      "overview.png and explain.json (must not exist).")],
    model: opt.ModelOpt = None,
    device: opt.DeviceOpt = "auto",
    cube_mm: Annotated[float, typer.Option("--cube-mm", help="Edge of the occluding cube, mm "
                                           "(rounded to whole model-space voxels).")] = 16.0,
    stride_mm: Annotated[float, typer.Option("--stride-mm", help="Step between cubes, mm.")
                         ] = 16.0,
    channels: Annotated[str, typer.Option("--channels", help="all: occlude every channel at "
                                          "once (the paper); each: also one map per channel.")
                        ] = "all",
    batch: Annotated[int, typer.Option("--batch", help="Occluded volumes per engine call.")
                     ] = 16,
    target: Annotated[str, typer.Option("--target", help="Class whose probability drop is "
                                        "mapped: recurrence, RICE or predicted.")
                      ] = "recurrence",
    region: Annotated[str, typer.Option("--region", help="brain: only cubes touching the "
                                        "brain mask; all: everywhere.")] = "brain",
    fill: Annotated[float, typer.Option("--fill", help="Value put inside the cube (0 = the "
                                        "normalised brain mean and the outside value).")] = 0.0,
    edges: Annotated[str, typer.Option("--edges", help="Last cube where the grid does not "
                                       "divide: shift (inside, like MONAI) or clip (like "
                                       "Captum).")] = "shift",
    incremental: Annotated[bool, typer.Option("--incremental/--no-incremental", help="Run the "
                                              "stem conv once and add each cube's change "
                                              "(exact, faster); off: whole volumes.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out "
                                            "folder.")] = False,
    mask: opt.MaskOpt = None,
    dose_unit: opt.DoseUnitOpt = "Gy",
    dose_fractions: opt.DoseFractionsOpt = None,
    dose_relative_scale: opt.DoseRelScaleOpt = None,
    dose_frame: opt.DoseFrameOpt = None,
    dose_frame_transform: opt.DoseFrameTransformOpt = None,
    brain_extraction: opt.BrainExtractionOpt = True,
    accept_qa_failure: opt.AcceptQaOpt = False,
    dicom_out: opt.DicomOutOpt = None,
    lesion_mask: Annotated[Path | None, typer.Option(
        "--lesion-mask", help="0/1 mask of the enhancing lesion on the event scan (any grid "
        "in its frame); default: the largest region of new enhancement, found.")] = None,
) -> None:
    """Occlusion sensitivity maps: which regions drove the answer (research use only)."""
    from rich.console import Console

    from ricecli import pipeline
    from ricecli.errors import EXIT_QA_FAILED
    from ricecli.explain.lesion import read_lesion_mask
    from ricecli.explain.occlusion import OcclusionSettings
    from ricecli.inference.engine import describe
    from ricecli.io.files import check_output_dir, input_paths, staged_output
    from ricecli.outputs.record import qa_line
    from ricecli.progress import rich_progress

    settings = OcclusionSettings(cube_mm=cube_mm, stride_mm=stride_mm, fill=fill,
                                 channels=channels, target=target, batch=batch, region=region,
                                 edges=edges, incremental=incremental).check()
    inputs = opt.case_inputs(t1, dose, mask, dose_unit, dose_fractions, dose_relative_scale,
                             dose_frame, brain_extraction, dose_frame_transform)
    # every input (--dose-frame and --model too): --out may not be, hold or lie in one
    in_paths = input_paths(inputs, model=model, extra=[lesion_mask])
    check_output_dir(out, in_paths, overwrite)  # fail before the slow part
    given = None if lesion_mask is None else read_lesion_mask(lesion_mask)
    if dicom_out is not None:
        from ricecli.outputs.dicom import check_dicom_out

        check_dicom_out(dicom_out, inputs.event, in_paths)
    loaded, engine = pipeline.open_model(model, device)
    console = Console(stderr=True)
    console.print(f"engine: {describe(engine)}")
    explained = None
    with staged_output(out, in_paths, overwrite) as staging:
        with console.status("preparing the case (read, register, resample) and classifying"):
            result = pipeline.classify(inputs, loaded, engine,
                                       accept_qa_failure=accept_qa_failure)
        if not result.labelled:  # QA failed: no answer, so nothing to explain; say why
            pipeline.write_unexplained(result, loaded, engine, staging)
        else:
            update, bar = rich_progress("occluding")
            with bar:
                explained = pipeline.explain(result, loaded, engine, settings, staging,
                                             progress=update, lesion_mask=given)
            record = json.loads((staging / "explain.json").read_text())
    qa = result.result.qa
    if explained is None:
        console.print(f"[bold red]{qa_line(result.result)}[/] (explain.json in {out})",
                      highlight=False)
        raise typer.Exit(EXIT_QA_FAILED)
    if result.result.label_despite_qa_failure:
        console.print(f"[bold red]QA failed; maps made anyway (--accept-qa-failure), do not "
                      f"trust them:[/] {'; '.join(f.message for f in qa.reasons)}",
                      highlight=False)
    for line in _summary_lines(explained, record, qa, out):
        console.print(line, highlight=False)
    if dicom_out is not None:
        for path in pipeline.write_dicom(result, dicom_out, explained):
            console.print(f"DICOM written: {path}")
        for note in result.dicom_header_notes:  # as classify says them
            console.print(f"DICOM header: {note}", markup=False)


def _summary_lines(explained: ExplainResult, record: dict[str, Any], qa: QAReport,
                   out: Path) -> list[str]:
    """The QA verdict and notes (nothing in explain.json unseen), the one calibrated p, what
    ran, where the map's strongest voxels lie relative to the lesion, and where to look."""
    from ricecli.outputs.console import qa_lines

    maps, target = explained.model_maps, explained.target
    pos = maps.positions
    peak = ", ".join(f"{v:.1f}" for v in explained.peak_mm)
    on = record.get("map_vs_lesion") or {}
    where = ("no enhancing lesion found (give one with --lesion-mask)"
             if not (on.get("lesion") or {}).get("voxels") else
             f"top 5 % of the map: {on['top_fraction_in_lesion']:.0%} inside the lesion "
             f"({'found' if on.get('source') == 'found' else 'given'})")
    strength = (record["overview"]["note"] if not record["overview"]["painted"] else
                f"strongest |delta p| {record['max_abs_delta_p']:.3f} at LPS ({peak}) mm")
    return [*qa_lines(qa),
            f"p({target}) = {record['target_probability']:.3f} (calibrated); "
            f"{pos['run']} of {pos['total']} cube positions run "
            f"({pos['skipped_unchanged']} unchanged, {pos['skipped_outside_region']} outside the "
            f"brain skipped), {maps.seconds.get('volumes_per_s')} volumes/s",
            f"{strength}; {where}",
            f"maps written to {out}/ (occlusion.nii.gz, overview.png, explain.json)"]

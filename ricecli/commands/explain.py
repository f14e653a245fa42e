"""`ricecli explain`: occlusion maps of what drove the answer, on the event scan's own grid."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ricecli.commands.classify import (
    AcceptQaOpt,
    BrainExtractionOpt,
    DeviceOpt,
    DicomOutOpt,
    DoseFractionsOpt,
    DoseFrameOpt,
    DoseOpt,
    DoseRelScaleOpt,
    DoseUnitOpt,
    MaskOpt,
    ModelOpt,
    T1Opt,
    case_inputs,
)
from ricecli.explain.occlusion import OcclusionSettings


def command(
    t1: T1Opt,
    dose: DoseOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for occlusion.nii.gz, "
                                      "overview.png and explain.json (must not exist).")],
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
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
    mask: MaskOpt = None,
    dose_unit: DoseUnitOpt = "Gy",
    dose_fractions: DoseFractionsOpt = None,
    dose_relative_scale: DoseRelScaleOpt = None,
    dose_frame: DoseFrameOpt = None,
    brain_extraction: BrainExtractionOpt = True,
    accept_qa_failure: AcceptQaOpt = False,
    dicom_out: DicomOutOpt = None,
) -> None:
    """Occlusion sensitivity maps: which regions drove the answer (research use only)."""
    from rich.console import Console

    from ricecli.errors import EXIT_QA_FAILED
    from ricecli.explain.occlusion import explain_case, rich_progress, write_explain
    from ricecli.inference.engine import describe, open_engine
    from ricecli.inference.model import load_model
    from ricecli.io.files import check_output_dir, input_paths, staged_output
    from ricecli.outputs.report import qa_line
    from ricecli.prepare import prepare_case

    settings = OcclusionSettings(cube_mm=cube_mm, stride_mm=stride_mm, fill=fill,
                                 channels=channels, target=target, batch=batch, region=region,
                                 edges=edges, incremental=incremental).check()
    inputs = case_inputs(t1, dose, mask, dose_unit, dose_fractions, dose_relative_scale,
                         dose_frame, brain_extraction)
    # every input (--dose-frame and --model too): --out may not be, hold or lie in one
    in_paths = input_paths(inputs, model=model)
    check_output_dir(out, in_paths, overwrite)  # fail before the slow part
    if dicom_out is not None:
        from ricecli.outputs.dicom import check_dicom_out

        check_dicom_out(dicom_out, inputs.event, in_paths)
    loaded = load_model(model)
    engine = open_engine(loaded, device)
    console = Console(stderr=True)
    console.print(f"engine: {describe(engine)}")
    inputs_record = {"post_op": str(inputs.post_op), "event": str(inputs.event),
                     "dose": str(inputs.dose), "mask": None if mask is None else str(mask),
                     "dose_frame": None if dose_frame is None else str(dose_frame)}
    with staged_output(out, in_paths, overwrite) as staging:
        t0 = time.perf_counter()
        with console.status("preparing the case (read, register, resample)"):
            case = prepare_case(inputs, loaded.spec)
        t_prepare = time.perf_counter() - t0
        failed = case.qa.get("verdict") == "fail"
        if failed and not accept_qa_failure:  # no answer, so nothing to explain: say why
            import json

            (staging / "explain.json").write_text(json.dumps(
                {"label": None, "qa": case.qa, "inputs": inputs_record,
                 "model": loaded.summary(), "prepare_s": round(t_prepare, 3)},
                indent=2, default=str) + "\n")
        else:
            update, bar = rich_progress("occluding")
            with bar:
                result = explain_case(case, loaded, engine, settings, progress=update)
            record = write_explain(result, case, staging, loaded.spec.classes, extra={
                "model": loaded.summary(), "engine": describe(engine),
                "inputs": inputs_record, "prepare_s": round(t_prepare, 3),
                "qa": getattr(case, "qa", {}),
                **({"label_despite_qa_failure": True} if failed else {}),
            })
    if failed and not accept_qa_failure:
        console.print(f"[bold red]{qa_line({'qa': case.qa})}[/] (explain.json in {out})",
                      highlight=False)
        raise typer.Exit(EXIT_QA_FAILED)
    if failed:
        console.print(f"[bold red]QA failed; maps made anyway (--accept-qa-failure), do not "
                      f"trust them:[/] {'; '.join(case.qa.get('reasons', []))}", highlight=False)
    for line in _qa_lines(case.qa):
        console.print(line, highlight=False)
    pos = record["positions"]
    console.print(
        f"p({result.target}) = {record['target_probability']:.3f}; "
        f"{pos['run']} of {pos['total']} cube positions run "
        f"({pos['skipped_unchanged']} unchanged, {pos['skipped_outside_region']} outside the "
        f"brain skipped), {record['volumes_per_s']} volumes/s; peak at LPS "
        f"({', '.join(f'{v:.1f}' for v in result.peak_mm)}) mm")
    console.print(f"maps written to {out}/ (occlusion.nii.gz, overview.png, explain.json)")
    if dicom_out is not None:
        from ricecli.outputs.dicom import write_for_explain

        for path in write_for_explain(dicom_out, case, loaded, engine, result, inputs):
            console.print(f"DICOM written: {path}")


def _qa_lines(qa: dict) -> list[str]:
    """The QA verdict and every note, for the console (qa.json holds nothing unseen)."""
    from ricecli.qa import summary_lines

    return summary_lines(qa)

"""`ricecli classify`: three files in (post-op T1c, event T1c, dose), an answer out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ricecli.commands import options as opt
from ricecli.errors import EXIT_QA_FAILED


def command(
    t1: opt.T1Opt,
    dose: opt.DoseOpt,
    model: opt.ModelOpt = None,
    device: opt.DeviceOpt = "auto",
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Write the result as JSON to this file ('-' for stdout).")] = None,
    save_prepared: Annotated[Path | None, typer.Option(
        "--save-prepared", help="Also write the prepared model-space channels here.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --json file or --save-prepared folder.")] = False,
    accept_qa_failure: opt.AcceptQaOpt = False,
    mask: opt.MaskOpt = None,
    dose_unit: opt.DoseUnitOpt = "Gy",
    dose_fractions: opt.DoseFractionsOpt = None,
    dose_relative_scale: opt.DoseRelScaleOpt = None,
    dose_frame: opt.DoseFrameOpt = None,
    dose_frame_transform: opt.DoseFrameTransformOpt = None,
    brain_extraction: opt.BrainExtractionOpt = True,
    dicom_out: opt.DicomOutOpt = None,
) -> None:
    """Classify a new enhancing lesion as tumour recurrence or RICE (research use only)."""
    from rich.console import Console

    from ricecli import pipeline
    from ricecli.inference.engine import describe
    from ricecli.io.files import check_output_dir, check_output_file, input_paths, write_text_atomic
    from ricecli.outputs.console import print_summary
    from ricecli.result import to_json

    inputs = opt.case_inputs(t1, dose, mask, dose_unit, dose_fractions, dose_relative_scale,
                             dose_frame, brain_extraction, dose_frame_transform)
    in_paths = input_paths(inputs, model=model)  # every input: no output may touch one
    # fail before the slow part, not after it
    if json_out is not None and json_out != Path("-"):
        check_output_file(json_out, in_paths, overwrite)
    if save_prepared is not None:
        check_output_dir(save_prepared, in_paths, overwrite, option="--save-prepared")
    if dicom_out is not None:
        from ricecli.outputs.dicom import check_dicom_out

        check_dicom_out(dicom_out, inputs.event, in_paths)
    loaded, engine = pipeline.open_model(model, device)
    console = Console(stderr=json_out == Path("-"))
    with console.status("preparing the case (read, register, resample) and classifying"):
        result = pipeline.classify(inputs, loaded, engine, save_prepared=save_prepared,
                                   overwrite=overwrite, accept_qa_failure=accept_qa_failure)
    console.print(f"engine: {describe(engine)}")  # after the gate: a refusal is one line
    print_summary(result.result, console)
    if dicom_out is not None:  # before the JSON: it records how header values were cleaned
        for path in pipeline.write_dicom(result, dicom_out):
            console.print(f"DICOM written: {path}")
        for line in result.dicom_header_notes:
            console.print(f"DICOM header: {line}", markup=False)
    if json_out == Path("-"):
        typer.echo(to_json(result.record), nl=False)
    elif json_out is not None:
        write_text_atomic(json_out, to_json(result.record), in_paths, overwrite)
        console.print(f"result written to {json_out}")
    if not result.labelled:  # QA failed: the JSON says why, the exit code says so
        raise typer.Exit(EXIT_QA_FAILED)

"""The command-line options several commands share, and the case they describe: one
definition of each (same flag, same help) for prepare, classify, explain, batch, demo, info."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ricecli.errors import RicenetError

if TYPE_CHECKING:
    from ricecli.prepare import CaseInputs

T1Opt = Annotated[list[Path], typer.Option(
    "--t1", help="T1c scans (image file or DICOM series folder): first the post-operative "
    "(planning) scan, then the event scan.")]
# a list, so that a repeated --dose is refused (a plain option would silently keep the last)
DoseOpt = Annotated[list[Path], typer.Option(
    "--dose", help="RT dose: DICOM RTDOSE (file or folder) or an image file in Gy.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder (must be new or empty).")]
MaskOpt = Annotated[Path | None, typer.Option(
    "--mask", help="Brain mask of the event scan, in its frame (e.g. from HD-BET).")]
DoseUnitOpt = Annotated[str, typer.Option(
    "--dose-unit", help="Unit of an image dose: Gy or cGy (RTDOSE says its own).")]
DoseFractionsOpt = Annotated[int | None, typer.Option(
    "--dose-fractions", help="Multiply a per-fraction dose by this number of fractions.")]
DoseRelScaleOpt = Annotated[float | None, typer.Option(
    "--dose-relative-scale", help="Gy per unit of an RTDOSE with DoseUnits RELATIVE.")]
DoseFrameOpt = Annotated[Path | None, typer.Option(
    "--dose-frame", help="Image (planning CT or MR) whose frame the dose is defined in, when "
    "that is not the post-op scan's.")]
DoseFrameTransformOpt = Annotated[Path | None, typer.Option(
    "--dose-frame-transform", help="Rigid transform file (.tfm) from post-op to dose-frame "
    "points, e.g. from a DICOM REG via ricecli cohort: used instead of registering.")]
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
                brain_extraction: bool = True,
                dose_frame_transform: Path | None = None) -> CaseInputs:
    """CaseInputs from the case options of prepare, classify and explain (two --t1: the
    post-op scan first, then the event scan; one --dose)."""
    from ricecli.prepare import CaseInputs

    if len(t1) != 2:
        raise RicenetError(T1_COUNT.format(n=len(t1), times="time" if len(t1) == 1 else "times"),
                           fix="pass --t1 POSTOP --t1 EVENT (the post-operative scan first)")
    return CaseInputs(post_op=t1[0], event=t1[1], dose=one_dose(dose), mask=mask,
                      dose_unit=dose_unit, dose_fractions=dose_fractions, dose_frame=dose_frame,
                      dose_relative_scale_gy=dose_relative_scale,
                      brain_extraction=brain_extraction,
                      dose_frame_transform=dose_frame_transform)

ModelOpt = Annotated[Path | None, typer.Option(
    "--model", help="ricenet ONNX model (default: the shipped model).")]
AcceptQaOpt = Annotated[bool, typer.Option(
    "--accept-qa-failure", help="Give the label even when QA fails (marked as such in the JSON "
    "and on screen); without it a failed case gets no label and exit code 3.")]
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="auto (CUDA when it loads, else CPU), cpu, cuda or tensorrt.")]
DicomOutOpt = Annotated[Path | None, typer.Option(
    "--dicom-out", help="Also write the result as a DICOM SR (explain: and the occlusion "
    "map as a Parametric Map) into this folder; the event scan must be a DICOM series.")]

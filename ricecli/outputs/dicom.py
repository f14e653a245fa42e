"""DICOM results for PACS (`--dicom-out DIR`): a Comprehensive 3D SR and a Parametric Map.

Both reference the event scan's study and series (patient and study identifiers copied from
it, new series and instance UIDs), are written with highdicom and say RESEARCH USE ONLY.
Copied header values are made valid first (outputs/dicom_header.py), each change noted.

- `SR_<SOPInstanceUID>.dcm` (outputs/dicom_sr.py): TID 1500 measurement report of the
  classification, its probabilities, uncertainty and QA verdict. Codes with scheme 99RICENET
  are this tool's own (DICOM's private-scheme convention) where no standard code fits.
- `PM_<SOPInstanceUID>.dcm` (explain; outputs/parametric_map.py): the occlusion map as a float
  Parametric Map on the event series' own grid and frame of reference.

UIDs are derived from the inputs and the answer (same inputs and model: the same UIDs and
file names, so a re-run replaces the object, in the folder and in a PACS, instead of adding a
copy; other cases written into the same folder keep theirs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pydicom
import SimpleITK as sitk

from ricecli.errors import InputError, OutputError
from ricecli.outputs.dicom_header import clean_series
from ricecli.outputs.dicom_series import (
    NOT_DICOM,
    NOT_DICOM_FIX,
    highdicom,
    looks_dicom,
    save_atomic,
)
from ricecli.outputs.dicom_sr import build_sr
from ricecli.outputs.parametric_map import build_parametric_map

SR_PREFIX = "SR_"  # files are SR_<SOPInstanceUID>.dcm and PM_<SOPInstanceUID>.dcm
PM_PREFIX = "PM_"


class CaseWithEvent(Protocol):
    """A batch case as --dicom-out sees it: its id and its event scan."""

    @property
    def case_id(self) -> str: ...

    @property
    def event(self) -> Path: ...


def check_dicom_out(out_dir: Path | None, event: str | Path, inputs: list[Path]) -> None:
    """Refuse before the slow part: a non-DICOM event scan, an output folder that is, holds or
    lies in an input, or highdicom missing. Nothing is written."""
    from ricecli.io.base import is_dicom_file
    from ricecli.io.files import check_writable, refuse_inputs

    if out_dir is None:
        return
    event = Path(event)
    if not looks_dicom(event):
        raise InputError(NOT_DICOM, event, fix=NOT_DICOM_FIX)
    out = Path(out_dir).expanduser().resolve()
    refuse_inputs(out, inputs, "folder", "--dicom-out")
    check_writable(out, "--dicom-out")
    if out.exists() and not out.is_dir():
        raise OutputError("--dicom-out is a file", out_dir, fix="give a folder")
    # a DICOM file or a folder; not every header read here: the case's reader reads the series
    # (refusing a folder without one) before the slow part, and hands its headers on (Scan)
    if not (event.is_dir() or is_dicom_file(event)):
        raise InputError(NOT_DICOM, event, fix=NOT_DICOM_FIX)
    highdicom()


def check_batch_dicom_out(out_dir: Path | None, cases: Iterable[CaseWithEvent]) -> None:
    """batch --dicom-out: refuse (exit 2, before any case runs) when a case's event scan is
    not a DICOM series, or highdicom is missing."""
    from ricecli.io.files import check_writable

    if out_dir is None:
        return
    for case in cases:
        event = Path(case.event)
        if not looks_dicom(event):
            raise InputError(f"case {case.case_id}: the event scan is not a DICOM series, so "
                             "--dicom-out has no study or series to reference", event,
                             fix="give DICOM series folders for the event scans, or leave "
                             "out --dicom-out")
    check_writable(Path(out_dir).expanduser().resolve(), "--dicom-out")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise OutputError("--dicom-out is a file", out_dir, fix="give a folder")
    highdicom()


def write_dicom_outputs(out_dir: Path, result: dict[str, Any],
                        event_series: Sequence[pydicom.Dataset],
                        occlusion: sitk.Image | None = None,
                        target: str = "recurrence") -> list[Path]:
    """Write the SR (and the occlusion Parametric Map when given) into out_dir, referencing
    `event_series` (the event Scan's headers); nothing when the result has no label (QA refused
    the case). Header values the event series holds outside their VR are made valid first; the
    record's `dicom_header_notes` says how."""
    if result.get("label") is None:
        return []
    if not event_series:
        raise InputError(NOT_DICOM, result.get("inputs", {}).get("event"), fix=NOT_DICOM_FIX)
    series, notes = clean_series(list(event_series))
    result["dicom_header_notes"] = notes
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr = build_sr(result, series)
    written = [save_atomic(sr, out_dir / f"{SR_PREFIX}{sr.SOPInstanceUID}.dcm")]
    if occlusion is not None:
        pm = build_parametric_map(occlusion, series, result, target)
        written.append(save_atomic(pm, out_dir / f"{PM_PREFIX}{pm.SOPInstanceUID}.dcm"))
    return written

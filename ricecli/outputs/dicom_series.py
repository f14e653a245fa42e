"""What the DICOM results share: the event series they reference, name-based UIDs, highdicom.

`event_series` finds the event scan's slices as ricecli's reader stacks them; `uid` derives a
UID from the inputs and the answer, so that a re-run replaces an object instead of copying it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pydicom

from ricecli import __version__
from ricecli.errors import InputError

if TYPE_CHECKING:
    from highdicom.sr import CodedConcept

SCHEME = "99RICENET"  # this tool's own codes (DICOM's private-scheme convention)
RESEARCH = "RESEARCH USE ONLY"
MANUFACTURER = "ricenet (research software)"
INSTALL_FIX = "install the DICOM extra: pip install 'ricecli[dicom]' (highdicom)"
NOT_DICOM = "is not a DICOM series, so --dicom-out has no study or series to reference"
NOT_DICOM_FIX = ("give the event T1c as a DICOM series folder (or file of it), or leave out "
                 "--dicom-out")


def highdicom() -> ModuleType:
    """The highdicom module, or InputError (exit 2) naming the extra to install."""
    try:
        import highdicom
    except ImportError:
        raise InputError("--dicom-out needs highdicom, which is not installed",
                         fix=INSTALL_FIX) from None
    return highdicom


def code(value: str, meaning: str) -> CodedConcept:
    """A concept of this tool's own coding scheme."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value, SCHEME, meaning)


def uid(*parts: object) -> str:
    """A 2.25 UID from the first 128 bits of a SHA-256 of `parts` (name-based, like UUIDv5)."""
    blob = json.dumps(["ricenet", __version__, *parts], sort_keys=True, default=str).encode()
    return f"2.25.{int(hashlib.sha256(blob).hexdigest()[:32], 16)}"


def looks_dicom(event: Path) -> bool:
    """A folder, or a file whose suffix DICOM files use (cheap check before any reading)."""
    return event.is_dir() or event.suffix.lower() in (".dcm", ".dicom", ".ima", "")


def event_series(event: Path) -> list[pydicom.Dataset]:
    """Headers of the event scan's DICOM slices, in the order the reader stacks them.

    A folder: the series with the most slices (as ricecli.io.dicom picks it); a file: its
    series. InputError (exit 2) when the event scan is not DICOM."""
    from ricecli.io.dicom import _headers, _series_key, is_dicom_file, read_header

    event = Path(event)
    series_uid = None
    if event.is_file() and is_dicom_file(event):
        series_uid = str(read_header(event).get("SeriesInstanceUID", ""))
        folder = event.parent
    elif event.is_dir():
        folder = event
    else:
        raise InputError(NOT_DICOM, event, fix=NOT_DICOM_FIX)
    groups: dict[tuple, list[pydicom.Dataset]] = defaultdict(list)
    for _, ds in _headers(folder):
        key = _series_key(ds)
        if key is not None and (series_uid is None or key[0] == series_uid):
            groups[key].append(ds)
    if not groups:
        raise InputError("holds no DICOM image series for --dicom-out to reference", event,
                         fix="give the event T1c as a DICOM series folder, or leave out "
                         "--dicom-out")
    key, slices = max(groups.items(), key=lambda kv: (len(kv[1]), kv[0][0]))
    iop = np.asarray([float(v) for v in slices[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    return sorted(slices, key=lambda ds: float(np.dot(
        [float(v) for v in ds.ImagePositionPatient], normal)))


def save_atomic(ds: pydicom.Dataset, path: Path) -> Path:
    """Write a dataset whole or not at all (temp file beside it, then rename)."""
    from ricecli.io.files import write_atomic

    with write_atomic(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path

"""What the DICOM results share: name-based UIDs, highdicom, atomic saving.

`uid` derives a UID from the inputs and the answer, so that a re-run replaces an object instead
of copying it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pydicom

from ricecli import __version__
from ricecli.errors import InputError
from ricecli.io.base import DICOM_SUFFIXES

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
    """A UID named by `parts` (pydicom's root and a SHA-512 of them): same parts, same UID."""
    name = json.dumps(["ricenet", __version__, *parts], sort_keys=True, default=str)
    return str(pydicom.uid.generate_uid(entropy_srcs=[name]))


def looks_dicom(event: Path) -> bool:
    """A folder, or a file whose suffix DICOM files use (cheap check before any reading)."""
    return event.is_dir() or event.suffix.lower() in DICOM_SUFFIXES


def save_atomic(ds: pydicom.Dataset, path: Path) -> Path:
    """Write a dataset whole or not at all (temp file beside it, then rename)."""
    from ricecli.io.files import write_atomic

    with write_atomic(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path

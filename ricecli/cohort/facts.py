"""The header facts a cohort uses: which tags, and their raw values as JSON-ready text (the
index stores them). RT and REG references are flattened from their sequences."""

from __future__ import annotations

import struct
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from ricecli.io.base import READ_ERRORS

TEXT_TAGS = (
    "SOPClassUID", "SOPInstanceUID", "Modality", "PatientID", "StudyInstanceUID",
    "SeriesInstanceUID", "FrameOfReferenceUID", "StudyDate", "SeriesDate", "AcquisitionDate",
    "ContentDate", "StudyTime", "SeriesTime", "StudyDescription", "SeriesDescription",
    "ProtocolName", "SeriesNumber", "InstanceNumber", "ContrastBolusAgent",
    "ContrastBolusRoute", "MRAcquisitionType", "SliceThickness", "RepetitionTime", "EchoTime",
    "InversionTime", "SequenceName", "Rows", "Columns", "NumberOfFrames", "BitsAllocated",
    "SamplesPerPixel", "DoseSummationType", "DoseUnits", "DoseType", "RTPlanDate",
    "StructureSetDate", "InstanceCreationDate",
)
LIST_TAGS = ("ImageType", "ScanningSequence", "SequenceVariant", "ImagePositionPatient",
             "ImageOrientationPatient", "PixelSpacing", "GridFrameOffsetVector")
SEQUENCE_TAGS = ("ReferencedRTPlanSequence", "ReferencedStructureSetSequence",
                 "FractionGroupSequence", "ReferencedFrameOfReferenceSequence",
                 "RegistrationSequence")
READ_TAGS = ("SpecificCharacterSet", *TEXT_TAGS, *LIST_TAGS, *SEQUENCE_TAGS, "PixelData")
READ_TAG_NUMBERS = [pydicom.tag.Tag(name) for name in READ_TAGS]
_WANTED = {int(pydicom.tag.Tag(name)): (name, pydicom.datadict.dictionary_VR(name))
           for name in (*TEXT_TAGS, *LIST_TAGS)}
_LISTS = set(LIST_TAGS)
SCAN_TAGS = {*_WANTED, 0x00080005}
SEQUENCE_TAG_NUMBERS = {int(pydicom.tag.Tag(name)) for name in SEQUENCE_TAGS}
_BINARY = {"US": struct.Struct("H"), "SS": struct.Struct("h"), "UL": struct.Struct("I"),
           "SL": struct.Struct("i")}


def _text(value: Any) -> str:
    return str(value).replace("\x00", " ").strip()


def _seq(ds: Dataset, name: str) -> list[Dataset]:
    value = ds.get(name)
    return list(value) if isinstance(value, pydicom.Sequence) else []


def _references(ds: Dataset) -> dict[str, Any]:
    """The RT and REG references of a header as plain lists (plan, struct, frames, matrices)."""
    out: dict[str, Any] = {}
    plans = [_text(i.get("ReferencedSOPInstanceUID", "")) for i in
             _seq(ds, "ReferencedRTPlanSequence")]
    structs = [_text(i.get("ReferencedSOPInstanceUID", "")) for i in
               _seq(ds, "ReferencedStructureSetSequence")]
    fractions = [_text(i.get("NumberOfFractionsPlanned", "")) for i in
                 _seq(ds, "FractionGroupSequence")]
    frames, series = [], []
    for ref in _seq(ds, "ReferencedFrameOfReferenceSequence"):
        frames.append(_text(ref.get("FrameOfReferenceUID", "")))
        for study in _seq(ref, "RTReferencedStudySequence"):
            series += [_text(s.get("SeriesInstanceUID", "")) for s in
                       _seq(study, "RTReferencedSeriesSequence")]
    registrations = []
    for item in _seq(ds, "RegistrationSequence"):
        for reg in _seq(item, "MatrixRegistrationSequence"):
            for matrix in _seq(reg, "MatrixSequence"):
                values = matrix.get("FrameOfReferenceTransformationMatrix")
                registrations.append({
                    "frame": _text(item.get("FrameOfReferenceUID", "")),
                    "type": _text(matrix.get("FrameOfReferenceTransformationMatrixType", "")),
                    "matrix": [_text(v) for v in values] if values is not None else []})
    for key, value in (("ref_plans", plans), ("ref_structs", structs), ("fractions", fractions),
                       ("ref_frames", frames), ("ref_series", series),
                       ("registrations", registrations)):
        if [v for v in value if v]:
            out[key] = [v for v in value if v]
    return out


def _decode(value: Any, vr: str, little: bool, encoding: str) -> list[str]:
    """The values of a raw element as text (pydicom's conversion of every element costs more
    than the file read, so the few VRs a cohort needs are decoded here)."""
    if value is None:
        return []
    if not isinstance(value, bytes):  # already converted by pydicom
        items = value if isinstance(value, pydicom.multival.MultiValue | list) else [value]
        return [_text(v) for v in items]
    if vr in _BINARY:
        code = f"{'<' if little else '>'}{len(value) // _BINARY[vr].size}{_BINARY[vr].format}"
        return [str(v) for v in struct.unpack(code, value[:struct.calcsize(code)])]
    return [_text(v) for v in value.decode(encoding, errors="replace").split("\\")]


def raw_facts(raw: dict[int, Any], little: bool = True) -> dict[str, Any]:
    """The wanted tags' raw values (bytes, or values pydicom converted) as text facts."""
    charset = raw.get(0x00080005) or b""
    charset = charset.decode("ascii", "replace") if isinstance(charset, bytes) else str(charset)
    encoding = "utf-8" if "192" in charset else "latin-1"
    out: dict[str, Any] = {}
    for tag, value in raw.items():
        wanted = _WANTED.get(tag)
        if wanted is None or not value:
            continue
        name, vr = wanted
        try:
            if isinstance(value, bytes) and vr not in _BINARY and name not in _LISTS:
                text = _text(value.decode(encoding, errors="replace"))  # the common case
            else:
                values = _decode(value, vr, little, encoding)
                if name in _LISTS:
                    if any(values):
                        out[name] = values
                    continue
                text = "\\".join(values)
        except READ_ERRORS:
            continue
        if text.strip("\\ "):
            out[name] = text
    return out


def header_facts(ds: Dataset) -> dict[str, Any]:
    """The tags a cohort uses, as text or lists of text; absent, empty or broken ones left out."""
    raw = {int(tag): ds.get_item(tag).value for tag in ds.keys()
           if int(tag) in _WANTED or int(tag) == 0x00080005}
    out = raw_facts(raw, ds.original_encoding[1] is not False)
    try:
        out.update(_references(ds))
    except READ_ERRORS:
        out["broken_references"] = "1"
    return out

"""Header values the DICOM results copy from the event series, made valid before they are copied.

highdicom copies the event scan's Patient and Study modules into the SR and the Parametric Map
and references its UIDs; real headers hold values outside their VR (PatientSex '0000', a date
written '2026-01-01', a 72-character UID, a 20-character AccessionNumber). `clean_series`
returns copies whose values are valid, each change noted once: normalised where the meaning is
certain, emptied (type 2) or removed otherwise. Names and identifiers are never echoed in a note.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable
from datetime import datetime

import pydicom
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_has_tag, dictionary_VM
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.valuerep import MAX_VALUE_LEN, validate_value

from ricecli.outputs.dicom_series import uid

# 0008 SOP/study, 0010 patient, 0012 clinical trial, 0020 study/series ids, 0032 study
GROUPS = {0x0008, 0x0010, 0x0012, 0x0020, 0x0032}
TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR",
            "UT"}
NUMBER_VRS = {"DS", "IS"}  # checked in the patient group only (weight, size), never geometry
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
         "ReferringPhysicianName", "AccessionNumber", "StudyID")
PRIVATE = {"PN", "LO", "SH"}  # names and identifiers: described, never quoted in a note
IDENTIFIERS = {"PatientID", "AccessionNumber", "StudyID", "OtherPatientIDs", "IssuerOfPatientID",
               "AdmissionID", "ClinicalTrialSubjectID", "ClinicalTrialProtocolID"}
KEEP_AS_IS = {"SOPClassUID"}  # must name a real SOP class: nothing to derive it from
SEX = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}
CONTROL = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1a\x1c-\x1f\x7f]")  # keeps TAB LF CR ESC
TM_RE = re.compile(r"([01]\d|2[0-3])([0-5]\d([0-5]\d|60)?)?(\.\d{1,6})?$")
AS_RE = re.compile(r"(\d{1,3})\s*([DWMY]?)$")
DATE_FORMATS = ("%Y%m%d", "%Y-%m-%d", "%Y.%m.%d", "%Y/%m/%d")  # '.' is ACR-NEMA's
UTF8 = "ISO_IR 192"


def clean_series(series: list[pydicom.Dataset]) -> tuple[list[pydicom.Dataset], list[str]]:
    """Copies of the series' headers with every copied value valid, and one note per change."""
    notes: dict[str, None] = {}
    return [clean_dataset(ds, notes) for ds in series], list(notes)


def clean_dataset(ds: pydicom.Dataset, notes: dict[str, None]) -> pydicom.Dataset:
    """A copy of `ds` whose patient, study and reference values are valid (notes added)."""
    out = copy.deepcopy(ds)
    with warnings.catch_warnings():  # pydicom warns on every invalid value it meets
        warnings.simplefilter("ignore")
        for elem in list(out):  # list(): every value decoded with the charset the file declares
            if elem.tag.group in GROUPS and not elem.tag.is_private and elem.VR != "SQ":
                _clean_element(out, elem, notes)
    _clean_charset(out, notes)  # after decoding: changed first, it would misread the text
    for keyword in TYPE2:  # highdicom reads them as attributes: present, maybe empty
        if keyword not in out:
            setattr(out, keyword, "")
    if not out.get("StudyInstanceUID"):
        out.StudyInstanceUID = uid("header", "study", str(out.get("SeriesInstanceUID", "")))
        notes["StudyInstanceUID is missing: replaced by a UID derived from the series"] = None
    return out


def _clean_charset(ds: pydicom.Dataset, notes: dict[str, None]) -> None:
    """An unknown SpecificCharacterSet becomes UTF-8 (values are already decoded text)."""
    charsets = ds.get("SpecificCharacterSet")
    if charsets is None:
        return
    names = [str(c).strip() for c in (charsets if isinstance(charsets, MultiValue)
                                      else [charsets])]
    known = [n for n in names if n == "" or n in python_encoding]
    if len(known) != len(names):
        ds.SpecificCharacterSet = UTF8
        notes[f"SpecificCharacterSet {names!r} is not a DICOM character set: written as "
              f"UTF-8 ({UTF8})"] = None


def _clean_element(ds: pydicom.Dataset, elem: DataElement, notes: dict[str, None]) -> None:
    """Make one element valid, or empty it (type 2) / remove it, noting what was done."""
    vr, keyword = elem.VR, elem.keyword or str(elem.tag)
    if keyword in KEEP_AS_IS or not (vr in TEXT_VRS or (vr in NUMBER_VRS and
                                                          elem.tag.group == 0x0010)):
        return
    raw = elem.value
    if isinstance(raw, bytes):  # undecodable text: nothing trustworthy to copy
        return _drop(ds, elem, "is not decodable text", notes)
    values = list(raw) if isinstance(raw, MultiValue) else [raw]
    given = [str(v) for v in values]
    if len(values) > 1 and dictionary_has_tag(elem.tag) and dictionary_VM(elem.tag) == "1":
        notes[f"{keyword} holds {len(values)} values where DICOM allows one: the first "
              "is kept"] = None
        values = values[:1]
    cleaned: list[object] = []
    for value in values:
        if value is None or str(value) == "":
            cleaned.append(value if value is not None else "")
            continue
        fixed = _fix(vr, keyword, value)
        if fixed is None:
            return _drop(ds, elem, _what(vr, value), notes)
        if str(fixed) != str(value):
            notes[_normalised(vr, keyword, value, fixed)] = None
        cleaned.append(fixed)
    if [str(v) for v in cleaned] != given:  # normalised, or cut to one value
        ds[elem.tag] = DataElement(elem.tag, vr, cleaned[0] if len(cleaned) == 1 else cleaned)


def _normalised(vr: str, keyword: str, value: object, fixed: object) -> str:
    """The note for a value made valid (names and identifiers described, not quoted)."""
    if vr == "PN":
        return (f"{keyword} normalised to a valid, unambiguous person name (family^given..., "
                "at most 64 characters per component, no control characters)")
    if vr in PRIVATE:
        return f"{keyword} is not a valid {vr}: control characters removed or cut to length"
    return f"{keyword} {str(value)!r} is not a valid {vr}: normalised to {str(fixed)!r}"


def _what(vr: str, value: object) -> str:
    """How a dropped value is described: quoted, unless it names or identifies the patient."""
    text = str(value)
    if vr in PRIVATE:
        return f"is not a valid {vr} ({len(text)} characters)"
    shown = text if len(text) <= 24 else f"{text[:21]}..."
    return f"{shown!r} is not a valid {vr}" + (f" ({len(text)} characters)" if vr == "UI"
                                                else "")


def _drop(ds: pydicom.Dataset, elem: DataElement, why: str, notes: dict[str, None]) -> None:
    """Empty a type-2 attribute, remove any other; replace a bad reference UID by a valid one."""
    keyword = elem.keyword or str(elem.tag)
    if keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                   "FrameOfReferenceUID"):
        setattr(ds, keyword, uid("header", keyword, str(elem.value)))  # same bad UID, same UID
        notes[f"{keyword} {why}: replaced by a valid UID derived from it (a PACS will not "
              "link the result to the original object by this UID)"] = None
        return
    if keyword in TYPE2:
        setattr(ds, keyword, "")
        notes[f"{keyword} {why}: left empty"] = None
    else:
        del ds[elem.tag]
        notes[f"{keyword} {why}: left out"] = None


def _fix(vr: str, keyword: str, value: object) -> object | None:
    """The valid form of one value, or None when it has none."""
    fixer = _FIXERS.get(vr, _fix_by_validator)
    if keyword == "PatientSex":
        fixer = _fix_sex
    try:
        return fixer(vr, keyword, value)
    except (ValueError, TypeError, OverflowError):
        return None


def _valid(vr: str, value: object) -> bool:
    """pydicom's own check of a value against its VR (length, characters, format)."""
    try:
        validate_value(vr, str(value) if vr in NUMBER_VRS else value, pydicom.config.RAISE)
    except (ValueError, TypeError):
        return False
    return True


def _fix_by_validator(vr: str, keyword: str, value: object) -> object | None:
    """Valid as is; text without control characters, cut to its VR's length (not an
    identifier: cut short it would name another record); else None."""
    if _valid(vr, value):
        return value
    text = CONTROL.sub("", str(value)).strip()
    if vr in ("LO", "SH", "ST", "LT", "UT", "UC"):
        text = text.replace("\\", " ") if vr in ("ST", "LT", "UT") else text
        limit = MAX_VALUE_LEN.get(vr)
        if limit and len(text) > limit:
            if keyword in IDENTIFIERS:
                return None
            text = text[:limit].rstrip()
    elif vr == "CS":
        text = text.upper()
    return text if _valid(vr, text) else None


def _fix_sex(vr: str, keyword: str, value: object) -> str | None:
    """M, F or O (MALE, female, ... normalised); anything else has no sex to copy."""
    return SEX.get(str(value).strip().upper())


def _fix_date(vr: str, keyword: str, value: object) -> str | None:
    """YYYYMMDD of a real calendar date (2026-01-01 and ACR-NEMA 2026.01.01 normalised)."""
    text = str(value).strip()
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).strftime("%Y%m%d")
        except ValueError:
            continue
    return None


def _fix_time(vr: str, keyword: str, value: object) -> str | None:
    """HHMMSS.FFFFFF (12:00:00 normalised), hours < 24, minutes < 60."""
    text = str(value).strip().replace(":", "")
    return text if TM_RE.match(text) else None


def _fix_age(vr: str, keyword: str, value: object) -> str | None:
    """nnnD/W/M/Y (a bare number is years: 45 -> 045Y)."""
    match = AS_RE.match(str(value).strip().upper())
    return f"{int(match.group(1)):03d}{match.group(2) or 'Y'}" if match else None


def _fix_uid(vr: str, keyword: str, value: object) -> str | None:
    """A UID of digits and dots, no leading zeros, at most 64 characters."""
    text = str(value).strip().rstrip("\x00").strip()
    return text if pydicom.uid.UID(text).is_valid else None


def _fix_name(vr: str, keyword: str, value: object) -> str | None:
    """A person name: no control characters, at most 5 components and 64 characters per
    group (the longest component cut); a one-part PatientName is marked as a family name with
    a trailing '^' (highdicom warns that it is ambiguous otherwise)."""
    text = CONTROL.sub("", str(value)).replace("\\", " ").strip()
    groups = []
    for group in text.split("=")[:3]:
        parts = [p.strip() for p in group.split("^")]
        parts = parts[:4] + ([" ".join(parts[4:])] if len(parts) > 4 else [])
        while len("^".join(parts)) > 64:  # a group holds 64 characters: cut the longest part
            longest = max(range(len(parts)), key=lambda i: len(parts[i]))
            parts[longest] = parts[longest][:len(parts[longest]) - (len("^".join(parts)) - 64)]
        groups.append("^".join(parts))
    name = "=".join(groups).rstrip("=")
    if keyword == "PatientName" and name and "^" not in name.split("=")[0]:
        name = name.replace("=", "^=", 1) if "=" in name else f"{name}^"
    return name if _valid("PN", name) else None


def _fix_number(vr: str, keyword: str, value: object) -> str | None:
    """A decimal/integer string that parses (70kg has no number to copy)."""
    if _valid(vr, value):
        return str(value)
    number = float(str(value).strip())
    text = str(int(number)) if vr == "IS" else f"{number:.10g}"[:16]
    return text if _valid(vr, text) else None


_FIXERS: dict[str, Callable[[str, str, object], object | None]] = {
    "DA": _fix_date, "TM": _fix_time, "AS": _fix_age, "UI": _fix_uid, "PN": _fix_name,
    "DS": _fix_number, "IS": _fix_number,
}

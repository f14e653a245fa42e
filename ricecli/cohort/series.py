"""Image series from the index, their type (T1C / T1 / T2 / FLAIR / other) with the reason, and
the choice of one contrast T1 per study (original, 3D, thinnest, most slices; ties flagged)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ricecli.cohort.rules import Rules

RT_MODALITIES = {"RTDOSE", "RTPLAN", "RTSTRUCT", "RTRECORD", "REG"}
MIN_SLICES = 5  # fewer distinct positions: not a 3D volume (localizer, single slices)


@dataclass(frozen=True)
class Series:
    """One image series of one study: its files (sorted along the slice normal) and facts."""

    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    frame_uid: str
    files: tuple[str, ...]
    facts: dict[str, Any]  # header facts of its first file
    slices: int  # distinct slice positions
    orientations: int  # distinct ImageOrientationPatient values
    multiframe: bool

    @property
    def description(self) -> str:
        return str(self.facts.get("SeriesDescription", ""))

    def label(self) -> str:
        """Human name: '#number description' (or the UID's tail)."""
        number = self.facts.get("SeriesNumber", "")
        name = self.description or self.facts.get("ProtocolName", "") or self.series_uid[-12:]
        return f"#{number} {name}".strip() if number else str(name)


@dataclass(frozen=True)
class Typing:
    """A series' type, or the code that drops it, and why (the rule that matched)."""

    kind: str  # T1C, T1, T2, FLAIR, OTHER, or the modality for non-MR images
    code: str | None  # exclusion code (localizer, mpr, ...) or None
    reason: str


@dataclass(frozen=True)
class Choice:
    """The contrast T1 chosen in one study (None on a tie or without one) and the others."""

    chosen: Series | None
    rejected: tuple[tuple[Series, str, str], ...]  # (series, code, reason)


def _position(facts: dict[str, Any], normal: tuple[float, ...] | None) -> float:
    try:
        ipp = [float(v) for v in facts["ImagePositionPatient"]]
        value = sum(a * b for a, b in zip(ipp, normal, strict=True)) if normal else ipp[2]
    except (KeyError, ValueError, TypeError, IndexError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _frames(facts: dict[str, Any]) -> int:
    """NumberOfFrames (IS; may be '', '2\\3', 'nan' or text in a broken header): 1 unless valid."""
    try:
        return int(float(str(facts.get("NumberOfFrames", 1) or 1).split("\\")[0]))
    except (ValueError, OverflowError):
        return 1


def _normal(facts: dict[str, Any]) -> tuple[float, ...] | None:
    try:
        r = [float(v) for v in facts["ImageOrientationPatient"]]
        return (r[1] * r[5] - r[2] * r[4], r[2] * r[3] - r[0] * r[5], r[0] * r[4] - r[1] * r[3])
    except (KeyError, ValueError, TypeError, IndexError):
        return None


def group_series(entries: Iterable[dict[str, Any]]) -> list[Series]:
    """Image files grouped by (patient, study, series), sorted by UIDs; RT objects left out."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        facts = entry.get("facts")
        if not facts or str(facts.get("Modality", "")).upper() in RT_MODALITIES:
            continue
        key = (facts.get("PatientID", ""), facts.get("StudyInstanceUID", ""),
               facts.get("SeriesInstanceUID", ""))
        if all(key):
            groups[key].append(entry)
    out = []
    for (patient, study, uid), items in sorted(groups.items()):
        normal = _normal(items[0]["facts"])
        items.sort(key=lambda e: (_position(e["facts"], normal), e["path"]))
        facts = items[0]["facts"]
        positions = {round(_position(e["facts"], normal), 3) for e in items}
        orientations = {tuple(e["facts"].get("ImageOrientationPatient", ())) for e in items}
        frames = max(_frames(e["facts"]) for e in items)
        out.append(Series(patient, study, uid, str(facts.get("Modality", "")).upper(),
                          str(facts.get("FrameOfReferenceUID", "")),
                          tuple(e["path"] for e in items), facts, len(positions),
                          len(orientations), frames > 1))
    return out


def type_series(series: Series, rules: Rules) -> Typing:
    """The series' type by the rules (exclusions first), or why it cannot be a volume."""
    if series.modality != "MR":
        return Typing(series.modality or "OTHER", None, f"Modality {series.modality or '?'}")
    for rule in rules.exclude:
        why = rule.explain(series.facts)
        if why is not None:
            return Typing("OTHER", rule.label, why)
    if series.multiframe:
        return Typing("OTHER", "multiframe", "enhanced multi-frame MR (not read by ricecli)")
    if series.orientations > 1:
        return Typing("OTHER", "localizer", f"{series.orientations} slice orientations in one "
                      "series")
    if series.slices < MIN_SLICES:
        return Typing("OTHER", "too_few_slices", f"{series.slices} slice positions (< "
                      f"{MIN_SLICES}): not a 3D volume")
    if series.slices < len(series.files):
        return Typing("OTHER", "repeated_positions", f"{len(series.files)} images at "
                      f"{series.slices} positions (multi-echo or dynamic)")
    for rule in rules.kinds:
        why = rule.explain(series.facts)
        if why is not None:
            return Typing(rule.label, None, why)
    return Typing("OTHER", None, "no kind rule matched")


def skip_code(typing: Typing) -> tuple[str, str]:
    """The skipped.csv code and reason of a series that is not a contrast-T1 candidate."""
    if typing.code is not None:
        return typing.code, typing.reason
    if typing.kind == "T1":
        return "precontrast", f"T1 without contrast ({typing.reason})"
    return "not_t1c", f"{typing.kind} ({typing.reason})"


def _float(facts: dict[str, Any], key: str, default: float) -> float:
    try:
        return float(str(facts.get(key, default)).split("\\")[0])
    except ValueError:
        return default


def preference(series: Series) -> tuple[int, int, float, int]:
    """Sort key of contrast-T1 candidates (larger is better): original, 3D, thin, many slices."""
    image_type = [str(v).upper() for v in series.facts.get("ImageType", [])]
    original = int(bool(image_type) and image_type[0] == "ORIGINAL")
    three_d = int(str(series.facts.get("MRAcquisitionType", "")).upper() == "3D")
    thickness = round(_float(series.facts, "SliceThickness", 99.0), 2)
    return original, three_d, -thickness, series.slices


def _why_preferred(a: Series, b: Series) -> str:
    pa, pb = preference(a), preference(b)
    names = ("ORIGINAL image", "3D acquisition", "thinner slices", "more slices")
    first = next(i for i in range(4) if pa[i] != pb[i])
    return f"{a.label()} preferred: {names[first]}"


def choose_t1c(candidates: list[Series]) -> Choice:
    """The best contrast T1 of one study; on an exact tie of the best, none (flagged)."""
    if not candidates:
        return Choice(None, ())
    ranked = sorted(candidates, key=lambda s: (preference(s), s.series_uid), reverse=True)
    best = [s for s in ranked if preference(s) == preference(ranked[0])]
    if len(best) > 1:
        names = ", ".join(s.label() for s in best)
        tie = [(s, "tie", f"{len(best)} contrast T1 series equally good ({names}): "
                "not guessed") for s in best]
        rest = [(s, "not_best", _why_preferred(best[0], s)) for s in ranked[len(best):]]
        return Choice(None, tuple(tie + rest))
    return Choice(ranked[0], tuple((s, "not_best", _why_preferred(ranked[0], s))
                                   for s in ranked[1:]))

"""Radiotherapy linkage by headers: which RTDOSE is the plan's dose (PLAN preferred; BEAM doses
of one plan on one grid summed), which image series its frame is (RTDOSE -> RTPLAN -> RTSTRUCT
-> series, else FrameOfReferenceUID), and a rigid REG matrix between that frame and post_op's.

REG (Spatial Registration, PS3.3 C.20.2): FrameOfReferenceTransformationMatrix maps points of the
item's (moving) frame into the REG's own FrameOfReferenceUID (the fixed frame). ricecli's prepare
wants the ITK resampling direction: post_op (fixed) points -> dose-frame (moving) points.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ricecli.cohort.series import Series
from ricecli.cohort.timeline import fact_date
from ricecli.io.rtdose import PLAN_SUMS, read_rtdose

REG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.1"
GRID_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
             "NumberOfFrames", "GridFrameOffsetVector", "DoseUnits", "FrameOfReferenceUID")


@dataclass(frozen=True)
class DoseChoice:
    """The dose of the patient's plan: one PLAN RTDOSE, or partial doses to sum (x fractions)."""

    files: tuple[str, ...]
    frame_uid: str
    study_uid: str
    plan_uid: str
    summation: str  # PLAN (one file), BEAM (sum), FRACTION (one file x fractions)
    fractions: int
    reason: str
    rejected: tuple[tuple[str, str, str], ...]  # (path, code, reason) of doses not used


@dataclass(frozen=True)
class Refusal:
    """Why a patient has no usable dose (the skipped.csv code and reason)."""

    code: str
    reason: str
    rejected: tuple[tuple[str, str, str], ...] = ()


def modality(entry: dict[str, Any]) -> str:
    facts = entry.get("facts", {})
    if str(facts.get("SOPClassUID", "")) == REG_SOP_CLASS:
        return "REG"
    return str(facts.get("Modality", "")).upper()


def _summation(entry: dict[str, Any]) -> str:
    return str(entry["facts"].get("DoseSummationType", "PLAN")).upper() or "PLAN"


def _plan(entry: dict[str, Any]) -> str:
    plans = entry["facts"].get("ref_plans", [])
    return str(plans[0]) if plans else ""


def _sort_key(entry: dict[str, Any]) -> tuple[str, str]:
    day = fact_date(entry["facts"], ("ContentDate", "InstanceCreationDate", "StudyDate"))
    return (day.isoformat() if day else "", entry["path"])


def _fractions(plan_uid: str, rt: list[dict[str, Any]]) -> int:
    for entry in rt:
        if modality(entry) == "RTPLAN" and entry["facts"].get("SOPInstanceUID") == plan_uid:
            try:
                return sum(int(float(v)) for v in entry["facts"].get("fractions", []))
            except (ValueError, OverflowError):  # '', 'nan', 'inf' in a broken plan
                return 0
    return 0


def choose_dose(rt: list[dict[str, Any]]) -> DoseChoice | Refusal:
    """The plan dose among a patient's RT objects (`rt`: index entries), or why there is none."""
    doses = sorted((e for e in rt if modality(e) == "RTDOSE"), key=_sort_key)
    if not doses:
        return Refusal("no_dose", "no RTDOSE for this patient")
    plan_doses = [e for e in doses if _summation(e) in PLAN_SUMS]
    if plan_doses:
        chosen = plan_doses[-1]
        rejected = [(e["path"], "beam_dose" if _summation(e) not in PLAN_SUMS else "other_dose",
                     f"{_summation(e)} dose not used: a PLAN dose exists ({chosen['path']})")
                    for e in doses if e is not chosen]
        return DoseChoice((chosen["path"],), str(chosen["facts"].get("FrameOfReferenceUID", "")),
                          str(chosen["facts"].get("StudyInstanceUID", "")), _plan(chosen),
                          "PLAN", 1, f"{_summation(chosen)} dose", tuple(rejected))
    return _partial_doses(doses, rt)


def _partial_doses(doses: list[dict[str, Any]], rt: list[dict[str, Any]]) -> \
        DoseChoice | Refusal:
    """BEAM doses of one plan on one grid, summed; one FRACTION dose x planned fractions."""
    plans = sorted({_plan(e) for e in doses})
    kinds = sorted({_summation(e) for e in doses})
    grids = {tuple(str(e["facts"].get(t)) for t in GRID_TAGS) for e in doses}
    rows = tuple((e["path"], "beam_dose_unsummable", "") for e in doses)

    def refuse(reason: str) -> Refusal:
        return Refusal("beam_dose_unsummable", reason,
                       tuple((p, c, reason) for p, c, _ in rows))

    if len(plans) != 1 or not plans[0]:
        return refuse(f"no PLAN dose, and the {len(doses)} partial doses do not name one RTPLAN")
    if len(kinds) != 1 or kinds[0] not in ("BEAM", "FRACTION"):
        return refuse(f"no PLAN dose; partial doses of types {', '.join(kinds)} cannot be added")
    if len(grids) != 1:
        return refuse(f"no PLAN dose; the {len(doses)} {kinds[0]} doses lie on different grids")
    first = doses[0]["facts"]
    if str(first.get("DoseUnits", "")).upper() != "GY":
        return refuse(f"no PLAN dose; {kinds[0]} doses in {first.get('DoseUnits', '?')} not GY")
    fractions = 1
    if kinds[0] == "FRACTION":
        fractions = _fractions(plans[0], rt)
        if len(doses) != 1 or fractions < 1:
            return refuse("no PLAN dose; FRACTION doses need one dose and the plan's number of "
                          f"fractions (found {len(doses)} doses, {fractions} fractions)")
    reason = (f"sum of {len(doses)} BEAM doses of one plan on one grid" if kinds[0] == "BEAM"
              else f"FRACTION dose x {fractions} planned fractions")
    return DoseChoice(tuple(e["path"] for e in doses), str(first.get("FrameOfReferenceUID", "")),
                      str(first.get("StudyInstanceUID", "")), plans[0], kinds[0], fractions,
                      reason, ())


def dose_frame_series(dose: DoseChoice, rt: list[dict[str, Any]],
                      series: list[Series]) -> tuple[Series | None, str]:
    """The image series the dose's frame belongs to: by RTPLAN -> RTSTRUCT -> referenced series,
    else the largest image series (CT first) with the dose's FrameOfReferenceUID."""
    by_uid = {s.series_uid: s for s in series}
    plan = next((e for e in rt if modality(e) == "RTPLAN"
                 and e["facts"].get("SOPInstanceUID") == dose.plan_uid), None)
    structs = set(plan["facts"].get("ref_structs", [])) if plan else set()
    for entry in rt:
        if modality(entry) == "RTSTRUCT" and entry["facts"].get("SOPInstanceUID") in structs:
            for uid in entry["facts"].get("ref_series", []):
                s = by_uid.get(uid)
                if s is not None and (s.frame_uid == dose.frame_uid or not dose.frame_uid):
                    return s, "RTDOSE -> RTPLAN -> RTSTRUCT -> image series"
    same = [s for s in series if dose.frame_uid and s.frame_uid == dose.frame_uid]
    if same:
        best = max(same, key=lambda s: (s.modality == "CT", s.slices, s.series_uid))
        return best, "image series with the dose's FrameOfReferenceUID"
    return None, "no image series in the dose's frame of reference"


def _matrix(values: list[str]) -> np.ndarray | None:
    try:
        m = np.asarray([float(v) for v in values], float).reshape(4, 4)
    except ValueError:
        return None
    return m if np.isfinite(m).all() else None


def reg_transform(rt: list[dict[str, Any]], post_frame: str, dose_frame: str) -> \
        tuple[np.ndarray | None, str]:
    """4x4 matrix mapping post_op-frame points to dose-frame points from a REG object that links
    the two frames, or None and why not (then prepare registers)."""
    for entry in sorted((e for e in rt if modality(e) == "REG"), key=lambda e: e["path"]):
        own = str(entry["facts"].get("FrameOfReferenceUID", ""))
        into_own: dict[str, tuple[np.ndarray | None, str]] = {own: (np.eye(4), "RIGID")}
        for item in entry["facts"].get("registrations", []):
            into_own[item.get("frame", "")] = (_matrix(item.get("matrix", [])),
                                              str(item.get("type", "")).upper())
        if post_frame not in into_own or dose_frame not in into_own:
            continue
        (post_m, post_t), (dose_m, dose_t) = into_own[post_frame], into_own[dose_frame]
        if post_m is None or dose_m is None:
            return None, f"REG {entry['path']}: matrix missing or not 16 numbers"
        if {post_t, dose_t} - {"RIGID"}:
            return None, f"REG {entry['path']}: matrix type {post_t}/{dose_t}, not RIGID"
        try:
            matrix = np.linalg.inv(dose_m) @ post_m  # post_op -> REG frame -> dose frame
        except np.linalg.LinAlgError:
            return None, f"REG {entry['path']}: matrix is singular"
        rotation = matrix[:3, :3]
        if np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-3 or \
                np.abs(matrix[3] - [0, 0, 0, 1]).max() > 1e-6:
            return None, f"REG {entry['path']}: matrix is not a rigid transform"
        return matrix, f"REG {entry['path']} (rigid)"
    return None, "no REG object links the dose frame and the post-op frame"


def rigid_transform(matrix: np.ndarray) -> sitk.Euler3DTransform:
    """The 4x4 rigid matrix as a SimpleITK Euler3DTransform (rotation re-orthonormalised)."""
    u, _, vt = np.linalg.svd(matrix[:3, :3])
    out = sitk.Euler3DTransform()
    out.SetMatrix((u @ vt).ravel().tolist(), 1e-6)
    out.SetTranslation(matrix[:3, 3].tolist())
    return out


def write_transform(matrix: np.ndarray, path: Path) -> None:
    """Write the post_op -> dose-frame rigid transform where prepare reads it (.tfm)."""
    sitk.WriteTransform(rigid_transform(matrix), str(path))


def sum_doses(root: Path, dose: DoseChoice) -> sitk.Image:
    """The summed partial doses in Gy (BEAM: sum; FRACTION: x fractions) on their one grid."""
    total: sitk.Image | None = None
    for rel in dose.files:
        image, _ = read_rtdose(root / rel)
        total = image if total is None else total + image
    assert total is not None
    return total * float(dose.fractions) if dose.fractions != 1 else total

"""The cohort manifest: one CSV row per case, read the same way by `ricecli batch` and `train/`.

Columns: `case_id, post_op, event, dose` and optionally `label, mask, dose_unit, dose_fractions,
dose_relative_scale_gy, dose_frame, dose_frame_transform, patient_id, split` (`ricecli cohort`
writes these too, plus post_op_date and event_date); `ricecli simulate` adds information
columns (INFORMATION: ground truth, plan) that are kept but not read. Any other column is
refused (exit 2, naming it and the known ones): a misspelt `mask` must not be ignored.
Every path column, `mask`, `dose_frame` and `dose_frame_transform` included, is resolved
against the manifest's own folder, so a manifest reads the same from any working directory.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ricecli.errors import InputError

REQUIRED = ("case_id", "post_op", "event", "dose")
OPTIONAL = ("label", "mask", "dose_unit", "dose_fractions", "dose_relative_scale_gy",
            "dose_frame", "dose_frame_transform", "patient_id", "split",
            "post_op_date", "event_date")  # the dates: written by `ricecli cohort`, kept
# what `ricecli simulate` records beside the inputs (ground truth, plan, scanner): kept, unused
INFORMATION = ("lesion_mask", "truth", "lesion_x_mm", "lesion_y_mm", "lesion_z_mm",
               "lesion_site", "solidity", "multifocal", "regimen", "prescription_gy", "fractions",
               "p_recurrence", "difficulty", "format", "seed", "skull_on")
KNOWN = (*REQUIRED, *OPTIONAL, *INFORMATION)
_OPTIONAL_NOTE = ("label", "dose_unit", "dose_fractions")  # named in the missing-columns fix


@dataclass(frozen=True)
class ManifestCase:
    """One manifest row: its index (for sharding), id, absolute input paths and dose options."""

    index: int
    case_id: str
    post_op: Path
    event: Path
    dose: Path
    label: str | None = None
    mask: Path | None = None
    dose_unit: str = "Gy"
    dose_fractions: int | None = None
    dose_relative_scale_gy: float | None = None
    dose_frame: Path | None = None
    patient_id: str | None = None
    split: str | None = None
    dose_frame_transform: Path | None = None  # post-op -> dose frame (.tfm; ricecli cohort)

    def paths(self) -> list[Path]:
        """Every input file of the case (outputs must never land in or on one of them)."""
        items = (self.post_op, self.event, self.dose, self.mask, self.dose_frame,
                 self.dose_frame_transform)
        return [p for p in items if p is not None]


def _opt(row: Mapping[str, str | None], key: str) -> str | None:
    value = (row.get(key) or "").strip()
    return value or None


def _resolve(base: Path, value: str) -> Path:
    """A manifest path: absolute as given, relative against the manifest's folder."""
    path = Path(value)
    return path if path.is_absolute() else (base / path).resolve()


def _read_rows(path: Path) -> list[dict[str, str | None]]:
    if not path.is_file():
        raise InputError("manifest not found", path, fix="pass the manifest.csv of a cohort "
                         "(e.g. made by 'ricecli simulate --out DIR')")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    except UnicodeDecodeError as err:
        raise InputError(f"manifest is not UTF-8 text (byte {err.start})", path,
                         fix="save the manifest as a UTF-8 CSV file") from None
    except csv.Error as err:
        raise InputError(f"manifest is not a readable CSV ({err})", path,
                         fix="give a CSV with a header row") from None


def read_manifest(path: str | Path, also_required: tuple[str, ...] = ()) -> list[ManifestCase]:
    """Parse and check a manifest; `also_required` columns must exist too (training: label)."""
    path = Path(path)
    rows = _read_rows(path)
    required = (*REQUIRED, *also_required)
    header = set(rows[0]) if rows else set()
    missing = [c for c in required if c not in header]
    if not rows or missing:
        optional = ", ".join(c for c in _OPTIONAL_NOTE if c not in required)
        raise InputError(f"manifest has no rows or lacks columns {missing or list(required)}",
                         path, fix=f"give a CSV with columns {', '.join(required)} "
                         f"({optional} optional)")
    unknown = [c for c in rows[0] if c is not None and c.strip() not in KNOWN]
    if unknown:  # a misspelt or foreign column would be silently ignored otherwise
        raise InputError(f"manifest has unknown column{'s' * (len(unknown) > 1)} "
                         f"{', '.join(repr(c) for c in unknown)}", path,
                         fix=f"rename or remove {'them' if len(unknown) > 1 else 'it'}; the "
                         f"input columns are {', '.join((*REQUIRED, *OPTIONAL))} (and "
                         f"information columns written by 'ricecli simulate': "
                         f"{', '.join(INFORMATION)})")
    base = path.resolve().parent
    cases: list[ManifestCase] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        cases.append(_case(i, row, base, path, seen))
    return cases


def _case(i: int, row: Mapping[str, str | None], base: Path, path: Path,
          seen: set[str]) -> ManifestCase:
    """Row i of the manifest at `path` (ids in `seen` are taken; this one is added)."""
    where = f"row {i + 2}"
    cid = _opt(row, "case_id")
    if cid is None or cid in seen:
        raise InputError(f"{where}: case_id is {'empty' if cid is None else 'repeated'}",
                         path, fix="give every case a unique case_id")
    seen.add(cid)
    scans: list[Path] = []
    for key in ("post_op", "event", "dose"):
        value = _opt(row, key)
        if value is None:
            raise InputError(f"{where} ({cid}): {key} is empty", path,
                             fix=f"fill in the {key} path")
        scans.append(_resolve(base, value))
    mask, frame, tfm = (_opt(row, key) for key in ("mask", "dose_frame", "dose_frame_transform"))
    try:
        fractions = _opt(row, "dose_fractions")
        scale = _opt(row, "dose_relative_scale_gy")
        return ManifestCase(
            index=i, case_id=cid, label=_opt(row, "label"),
            post_op=scans[0], event=scans[1], dose=scans[2],
            mask=None if mask is None else _resolve(base, mask),
            dose_frame=None if frame is None else _resolve(base, frame),
            dose_frame_transform=None if tfm is None else _resolve(base, tfm),
            dose_unit=_opt(row, "dose_unit") or "Gy",
            dose_fractions=None if fractions is None else int(float(fractions)),
            dose_relative_scale_gy=None if scale is None else float(scale),
            patient_id=_opt(row, "patient_id"), split=_opt(row, "split"))
    except ValueError as err:
        raise InputError(f"{where} ({cid}): {err}", path,
                         fix="dose_fractions must be an integer, "
                         "dose_relative_scale_gy a number") from None

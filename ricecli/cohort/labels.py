"""labels.csv (patient_id,event_date,label) matched to a patient's follow-ups, and --label-map.

event_date names the follow-up by date (YYYYMMDD or YYYY-MM-DD), by index (1 = the first
follow-up after the planning scan) or by StudyInstanceUID. A label the map does not turn into a
model class (RICE, recurrence), e.g. "response", drops that case: it is listed as unknown_label,
because a manifest for training needs a class on every row.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ricecli.cohort.timeline import Visit, parse_date
from ricecli.errors import InputError
from ricecli.spec import CLASSES

COLUMNS = ("patient_id", "event_date", "label")


@dataclass(frozen=True)
class LabelRow:
    """One row of labels.csv (line: its line number, for messages)."""

    patient_id: str
    event: str
    label: str
    line: int


def parse_label_map(text: str | None) -> dict[str, str]:
    """`progression=recurrence,pseudoprogression=RICE` -> {word: class} (words lower-cased)."""
    out: dict[str, str] = {c.lower(): c for c in CLASSES}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        word, sep, target = part.partition("=")
        target = target.strip()
        match = next((c for c in CLASSES if c.lower() == target.lower()), None)
        if not sep or not word.strip() or match is None:
            raise InputError(f"--label-map item {part.strip()!r} is not WORD=CLASS with CLASS "
                             f"one of {', '.join(CLASSES)}",
                             fix="write e.g. --label-map progression=recurrence,"
                             "pseudoprogression=RICE")
        out[word.strip().lower()] = match
    return out


def read_labels(path: Path) -> list[LabelRow]:
    """The rows of labels.csv; InputError when it is missing or lacks the columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise InputError("labels file not found", path, fix="check the --labels path") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"labels file is not a readable UTF-8 CSV ({err})", path,
                         fix="save it as CSV with columns patient_id,event_date,label") from None
    if not rows or any(c not in rows[0] for c in COLUMNS):
        raise InputError("labels file has no rows or lacks columns patient_id,event_date,label",
                         path, fix="give a CSV with the header patient_id,event_date,label")
    return [LabelRow((r.get("patient_id") or "").strip(), (r.get("event_date") or "").strip(),
                     (r.get("label") or "").strip(), i + 2) for i, r in enumerate(rows)]


def match_event(row: LabelRow, events: Sequence[Visit]) -> Visit | None:
    """The follow-up a label row names: by StudyInstanceUID, date or 1-based index."""
    by_uid = next((v for v in events if v.study_uid == row.event), None)
    if by_uid is not None:
        return by_uid
    if row.event.isdecimal() and len(row.event) <= 3:  # not "²": isdigit, but no int
        k = int(row.event)
        return events[k - 1] if 1 <= k <= len(events) else None
    day = parse_date(row.event)
    same = [v for v in events if day is not None and v.date == day]
    return same[0] if len(same) == 1 else None

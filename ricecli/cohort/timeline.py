"""Dates from headers (any of them may be missing or malformed; TCIA shifts them per patient but
keeps their order) and the patient's timeline: post_op = the contrast T1 of the planning study,
events = the contrast T1 of each later study."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ricecli.cohort.series import Series

DATE_TAGS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
_DATE = re.compile(r"^\s*(\d{4})[-./]?(\d{2})[-./]?(\d{2})")


def parse_date(text: object) -> dt.date | None:
    """A DICOM DA (YYYYMMDD; also YYYY-MM-DD, YYYY.MM.DD), or None when missing or invalid."""
    m = _DATE.match(str(text or ""))
    if not m:
        return None
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def fact_date(facts: dict[str, Any], tags: Iterable[str] = DATE_TAGS) -> dt.date | None:
    """The first valid date among `tags` of one header."""
    for tag in tags:
        day = parse_date(facts.get(tag))
        if day is not None:
            return day
    return None


def series_date(series: Series) -> dt.date | None:
    """The series' date: its own SeriesDate / AcquisitionDate / ContentDate, else StudyDate."""
    return fact_date(series.facts, ("SeriesDate", "AcquisitionDate", "ContentDate", "StudyDate"))


@dataclass(frozen=True)
class Visit:
    """One study of a patient with its date and the contrast T1 chosen in it (if any)."""

    study_uid: str
    date: dt.date | None
    t1c: Series | None


def study_date(series: Iterable[Series], rt_facts: Iterable[dict[str, Any]] = ()) -> \
        dt.date | None:
    """A study's date: the StudyDate most of its files give, else the earliest series date."""
    study_dates = sorted(d for d in (parse_date(s.facts.get("StudyDate")) for s in series) if d)
    study_dates += sorted(d for d in (parse_date(f.get("StudyDate")) for f in rt_facts) if d)
    if study_dates:
        return max(set(study_dates), key=lambda d: (study_dates.count(d), -d.toordinal()))
    others = [d for d in (series_date(s) for s in series) if d]
    return min(others) if others else None


@dataclass(frozen=True)
class Timeline:
    """post_op (the planning contrast T1) and the later visits with a contrast T1, by date."""

    post_op: Visit | None
    events: tuple[Visit, ...]
    reason: str  # how post_op was found, or why none was


def build_timeline(visits: list[Visit], planning_study: str | None,
                   rt_start: dt.date | None) -> Timeline:
    """post_op: the contrast T1 of the planning study, else the last one on or before the start
    of RT; events: every later visit (strictly later date) with a contrast T1."""
    with_t1c = [v for v in visits if v.t1c is not None]
    post_op = next((v for v in with_t1c if v.study_uid == planning_study), None)
    reason = "contrast T1 of the planning study (the one holding the RT plan/dose)"
    if post_op is None and rt_start is not None:
        before = [v for v in with_t1c if v.date is not None and v.date <= rt_start]
        post_op = max(before, key=lambda v: (v.date, v.study_uid)) if before else None
        reason = f"last contrast T1 on or before the start of RT ({rt_start:%Y-%m-%d})"
    if post_op is None:
        why = ("no contrast T1 in the planning study and none dated on or before the start of "
               "RT" if rt_start is not None or planning_study else
               "no RT plan or dose dates to place the planning scan")
        return Timeline(None, (), why)
    if post_op.date is None:
        return Timeline(post_op, (), "the planning scan has no valid date: follow-ups cannot "
                        "be ordered")
    events = sorted((v for v in with_t1c if v.date is not None and v.date > post_op.date),
                    key=lambda v: (v.date, v.study_uid))
    return Timeline(post_op, tuple(events), reason)

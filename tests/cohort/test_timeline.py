"""ricecli.cohort.timeline: messy dates, post_op and events; labels matched to follow-ups."""

from __future__ import annotations

import datetime as dt

import pytest

from ricecli.cohort.labels import LabelRow, match_event, parse_label_map
from ricecli.cohort.series import Series
from ricecli.cohort.timeline import Visit, build_timeline, parse_date, study_date
from ricecli.errors import InputError

D = dt.date


def t1c(uid: str, **facts: str) -> Series:
    return Series("P", uid, uid + ".1", "MR", "9", ("f",), facts, 20, 1, False)


@pytest.mark.parametrize("text, day", [
    ("20110314", D(2011, 3, 14)), ("2011-03-14", D(2011, 3, 14)), ("2011.03.14", D(2011, 3, 14)),
    ("20110230", None), ("", None), (None, None), ("0000", None), ("2011031", None),
])
def test_parse_date(text, day):
    assert parse_date(text) == day


def test_study_date_tolerates_missing_and_malformed_tags():
    a = t1c("1", StudyDate="20110314", SeriesDate="20110315")
    b = t1c("1", StudyDate="garbage", AcquisitionDate="20110316")
    assert study_date([a, b]) == D(2011, 3, 14)
    assert study_date([t1c("1", SeriesDate="20110316"), t1c("1", ContentDate="20110317")]) == \
        D(2011, 3, 16)
    assert study_date([t1c("1")]) is None


def test_post_op_is_the_planning_study_and_events_come_later():
    visits = [Visit("pre", D(2011, 1, 2), t1c("pre")), Visit("plan", D(2011, 3, 1), t1c("plan")),
              Visit("fu2", D(2011, 9, 1), t1c("fu2")), Visit("fu1", D(2011, 6, 1), t1c("fu1")),
              Visit("nodate", None, t1c("nodate")), Visit("no_t1c", D(2011, 7, 1), None)]
    line = build_timeline(visits, "plan", D(2011, 3, 10))
    assert line.post_op is visits[1] and [v.study_uid for v in line.events] == ["fu1", "fu2"]
    # the planning study has no contrast T1: the last one on or before the start of RT
    line = build_timeline(visits, "other", D(2011, 3, 10))
    assert line.post_op is visits[1] and "on or before" in line.reason
    line = build_timeline(visits[2:4], "other", D(2011, 3, 10))
    assert line.post_op is None and not line.events
    assert build_timeline([Visit("plan", None, t1c("plan"))], "plan", None).events == ()


def test_labels_match_by_date_index_or_uid_and_map_words():
    events = [Visit("1.5", D(2011, 6, 2), t1c("1.5")), Visit("1.7", D(2011, 11, 4), t1c("1.7"))]

    def row(text):
        return LabelRow("P", text, "progression", 2)

    assert match_event(row("20111104"), events) is events[1]
    assert match_event(row("2011-06-02"), events) is events[0]
    assert match_event(row("2"), events) is events[1]
    assert match_event(row("1.5"), events) is events[0]
    assert match_event(row("3"), events) is None and match_event(row("20120101"), events) is None
    words = parse_label_map("progression=recurrence, pseudoprogression=rice")
    assert words["progression"] == "recurrence" and words["pseudoprogression"] == "RICE"
    assert words["recurrence"] == "recurrence" and "response" not in words
    with pytest.raises(InputError, match="label-map"):
        parse_label_map("progression=tumour")

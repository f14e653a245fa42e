"""The whole cohort run on the index: series typed and chosen per study, the RT course linked,
the timeline and the labels matched -> typed cases and skip rows (writing is in write.py)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np

from ricecli.cohort.cases import Case, Cohort, PatientReview, Skip, fold_of, safe_id
from ricecli.cohort.labels import LabelRow, match_event
from ricecli.cohort.rtlink import (
    DoseChoice,
    Refusal,
    choose_dose,
    dose_frame_series,
    modality,
    reg_transform,
)
from ricecli.cohort.rules import Rules
from ricecli.cohort.series import (
    RT_MODALITIES,
    Series,
    Typing,
    choose_t1c,
    group_series,
    skip_code,
    type_series,
)
from ricecli.cohort.timeline import Visit, build_timeline, fact_date, study_date


def _file_skips(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Skip]]:
    """Entries with usable headers (first of each SOPInstanceUID) and rows for the rest."""
    kept, skips, seen = [], [], set()
    for e in entries:
        facts = e.get("facts")
        if not facts:
            skips.append(Skip(e["path"], "", "", "", "file", e.get("skip", "unreadable"),
                              e.get("reason", "")))
            continue
        ids = (facts.get("PatientID", ""), facts.get("StudyInstanceUID", ""),
               facts.get("SeriesInstanceUID", ""))
        sop = facts.get("SOPInstanceUID", "")
        if not all(ids):
            skips.append(Skip(e["path"], ids[0], ids[1], ids[2], "file", "no_uids",
                              "PatientID, StudyInstanceUID or SeriesInstanceUID missing"))
        elif sop and sop in seen:
            skips.append(Skip(e["path"], *ids, "file", "duplicate",
                              f"same SOPInstanceUID as an earlier file ({sop})"))
        else:
            seen.add(sop)
            kept.append(e)
    return kept, skips


def build_cohort(entries: list[dict[str, Any]], rules: Rules, labels: list[LabelRow] | None,
                 label_map: dict[str, str], labels_path: str = "") -> Cohort:
    """Cases and skip rows from index entries (sorted by path): deterministic in every part."""
    kept, skipped = _file_skips(entries)
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in kept:
        by_patient[e["facts"]["PatientID"]].append(e)
    series_all = group_series(kept)
    label_rows: dict[str, list[LabelRow]] = defaultdict(list)
    for row in labels or []:
        label_rows[row.patient_id].append(row)
    cohort = Cohort([], skipped, [], labels_path)
    for patient in sorted(by_patient):
        series = [s for s in series_all if s.patient_id == patient]
        rt = [e for e in by_patient[patient] if modality(e) in RT_MODALITIES]
        _patient(cohort, rules, patient, series, rt, labels, label_rows.pop(patient, []),
                 label_map)
    for patient, rows in sorted(label_rows.items()):
        cohort.skipped += [Skip(labels_path, patient, "", "", "label", "label_unmatched",
                                f"line {r.line}: no patient {patient!r} in the tree")
                           for r in rows]
    taken: set[str] = set()
    for i, case in enumerate(cohort.cases):
        base = safe_id(case.case_id)
        unique = base
        while unique in taken:
            unique = f"{base}_{len(taken)}"
        taken.add(unique)
        if unique != case.case_id:
            cohort.cases[i] = replace(case, case_id=unique)
    return cohort


def _patient(cohort: Cohort, rules: Rules, patient: str, series: list[Series],
             rt: list[dict[str, Any]], labels: list[LabelRow] | None, rows: list[LabelRow],
             label_map: dict[str, str]) -> None:
    """Add one patient's cases, review and skip rows to `cohort`."""
    review = PatientReview(patient)
    cohort.patients.append(review)
    skip = cohort.skipped

    def patient_skip(code: str, reason: str) -> None:
        review.outcome = f"no case: {code} ({reason})"
        skip.append(Skip("", patient, "", "", "patient", code, reason))

    visits, by_study = [], defaultdict(list)
    typed = [(s, type_series(s, rules)) for s in series]
    for s, t in typed:
        by_study[s.study_uid].append((s, t))
    for study, items in sorted(by_study.items()):
        choice = choose_t1c([s for s, t in items if t.kind == "T1C" and t.code is None])
        notes = {s.series_uid: f"{code}: {why}" for s, code, why in choice.rejected}
        for s, t in items:
            note = "chosen" if choice.chosen is s else notes.get(s.series_uid, "")
            review.series.append((s, t, note))
        if any(code == "tie" for _, code, _ in choice.rejected):
            review.warnings.append(f"study {study}: tie between contrast T1 series, not guessed")
        visits.append(Visit(study, study_date([s for s, _ in items]), choice.chosen))
    dose = choose_dose(rt)
    rt_dates = [fact_date(e["facts"], ("RTPlanDate", "ContentDate", "StudyDate")) for e in rt
                if modality(e) in ("RTPLAN", "RTDOSE")]
    rt_start = min((d for d in rt_dates if d), default=None)
    planning = dose.study_uid if isinstance(dose, DoseChoice) else None
    timeline = build_timeline(visits, planning, rt_start)
    used: set[str] = set()
    frame = transform = None
    if isinstance(dose, Refusal):
        patient_skip(dose.code, dose.reason)
    elif timeline.post_op is None:
        patient_skip("no_post_op", timeline.reason)
    elif not timeline.events:
        patient_skip("no_event", "no later study with a contrast T1 " + (
            "" if timeline.post_op.date else f"({timeline.reason})"))
    else:
        frame, transform, why = _dose_frame(dose, rt, series, timeline.post_op, review)
        if frame is None and transform is None and why:
            patient_skip("no_dose_frame", why)
        else:
            used |= _cases(cohort, patient, timeline.post_op, timeline.events, dose, frame,
                           transform, labels, rows, label_map, review)
    if isinstance(dose, (DoseChoice, Refusal)):
        facts = {e["path"]: e["facts"] for e in rt}
        for path, code, reason in dose.rejected:
            f = facts.get(path, {})
            skip.append(Skip(path, patient, f.get("StudyInstanceUID", ""),
                             f.get("SeriesInstanceUID", ""), "file", code, reason))
    _series_skips(skip, typed, review, used | ({frame.series_uid} if frame else set()),
                  timeline.post_op)
    for e in rt:
        if modality(e) != "RTDOSE":
            f = e["facts"]
            skip.append(Skip(e["path"], patient, f.get("StudyInstanceUID", ""),
                             f.get("SeriesInstanceUID", ""), "file", "rt_object",
                             f"{modality(e)}: read to link the dose, not a manifest input"))


def _dose_frame(dose: DoseChoice, rt: list[dict[str, Any]], series: list[Series],
                post_op: Visit, review: PatientReview) -> \
        tuple[Series | None, np.ndarray | None, str]:
    """The dose-frame series and REG transform when the dose is not in post_op's frame;
    (None, None, '') when it is; (None, None, why) when the frame cannot be found."""
    assert post_op.t1c is not None
    if dose.frame_uid and dose.frame_uid == post_op.t1c.frame_uid:
        review.warnings.append("dose on the post-op scan's frame: no dose_frame")
        return None, None, ""
    frame, frame_why = dose_frame_series(dose, rt, series)
    matrix, reg_why = reg_transform(rt, post_op.t1c.frame_uid, dose.frame_uid)
    review.warnings.append(f"dose frame: {frame.label() if frame else 'none'} ({frame_why}); "
                           f"transform: {reg_why}")
    if frame is None and matrix is None:
        return None, None, f"{frame_why}, and {reg_why}"
    return frame, matrix, ""


def _cases(cohort: Cohort, patient: str, post_op: Visit, events: tuple[Visit, ...],
           dose: DoseChoice, frame: Series | None, transform: np.ndarray | None,
           labels: list[LabelRow] | None, rows: list[LabelRow], label_map: dict[str, str],
           review: PatientReview) -> set[str]:
    """One case per follow-up (or per labelled follow-up); returns the series UIDs used."""
    chosen: dict[str, str] = {v.study_uid: "" for v in events} if labels is None else {}
    for row in rows:
        visit = match_event(row, events)
        target = label_map.get(row.label.lower())
        if visit is None:
            cohort.skipped.append(Skip(cohort.labels_path, patient, "", "", "label",
                                       "label_unmatched",
                                       f"labels line {row.line}: no follow-up {row.event!r}"))
        elif target is None:
            cohort.skipped.append(Skip(cohort.labels_path, patient, visit.study_uid, "",
                                       "label", "unknown_label", f"labels line {row.line}: label "
                                       f"{row.label!r} is not mapped to a class: case left out"))
            chosen.pop(visit.study_uid, None)
        else:
            chosen[visit.study_uid] = target
    used: set[str] = set()
    for k, visit in enumerate(events, start=1):
        assert visit.t1c is not None
        if visit.study_uid not in chosen:
            code = "unknown_label" if any(match_event(r, events) is visit for r in rows) \
                else "no_label"
            cohort.skipped.append(Skip(visit.t1c.files[0], patient, visit.study_uid,
                                       visit.t1c.series_uid, "series", code,
                                       f"follow-up {k}: not a labelled event"))
            continue
        used |= {visit.t1c.series_uid, post_op.t1c.series_uid if post_op.t1c else ""}
        day = f"{visit.date:%Y%m%d}" if visit.date else f"fu{k}"
        cohort.cases.append(Case(f"{patient}_{day}", patient, post_op, visit, dose, frame,
                                 transform, chosen[visit.study_uid], fold_of(patient),
                                 (dose.reason,)))
    formed = sum(c.patient_id == patient for c in cohort.cases)
    review.outcome = f"{formed} case(s)" if formed else "no case: no labelled follow-up"
    return used


def _series_skips(skip: list[Skip], typed: list[tuple[Series, Typing]], review: PatientReview,
                  used: set[str], post_op: Visit | None) -> None:
    """A row for every image series of the patient that no case uses."""
    notes = {s.series_uid: note for s, _, note in review.series}
    for s, t in typed:
        if s.series_uid in used:
            continue
        if t.kind == "T1C" and t.code is None:
            note = notes.get(s.series_uid, "")
            code, _, why = note.partition(": ") if note and note != "chosen" else ("", "", "")
            code = code or "not_event"
            why = why or "contrast T1 of a study that forms no case (before RT, no dose, ...)"
        elif s.modality == "MR":
            code, why = skip_code(t)
        else:
            code, why = "not_mr", f"{s.modality} series, not the dose's frame"
        skip.append(Skip(s.files[0], s.patient_id, s.study_uid, s.series_uid, "series", code,
                         f"{s.label()}: {why}"))

"""One patient's studies in a folder -> SR + parametric map + result.json, as a DICOM router
(mercure, Kaapana, MONAI Deploy) runs a module: DICOM in, DICOM out.

The folder is indexed and typed with the cohort code (ricecli/cohort/); the newest follow-up
contrast T1 (or the one asked for) is the event, the planning study's contrast T1 the post-op
scan; the case then takes the ONE pipeline (ricecli/pipeline.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from ricecli.cohort.build import build_cohort
from ricecli.cohort.cases import Case
from ricecli.cohort.index import index_tree
from ricecli.cohort.rtlink import sum_doses, write_transform
from ricecli.cohort.rules import load_rules
from ricecli.cohort.series import Series
from ricecli.cohort.timeline import Visit
from ricecli.cohort.write import link_series
from ricecli.errors import EXIT_OK, EXIT_QA_FAILED, EXIT_REFUSED, InputError, RicenetError
from ricecli.io.files import _signals_deferred, refuse_inputs  # the renames that commit
from ricecli.prepare import CaseInputs
from ricecli.signals import raise_if_interrupted

RESULT_FILE, STATUS_FILE, OVERVIEW_FILE = "result.json", "status.txt", "overview.png"
RESEARCH_ONLY = "RESEARCH USE ONLY: not for clinical decisions"


@dataclass(frozen=True)
class StudySettings:
    """What a run may choose (command line, or task.json's settings under mercure)."""

    model: Path | None = None  # None: the shipped model
    device: str = "auto"
    explain: bool = True  # occlusion map -> parametric map + overview.png
    event_study: str | None = None  # StudyInstanceUID of the event; None: the newest follow-up
    brain_extraction: bool = True


@dataclass(frozen=True)
class Missing:
    """A needed input the folder does not hold: its code (no_dose, no_post_op, no_event, ...)
    and why, in words."""

    code: str
    reason: str
    patient_id: str = ""


@dataclass(frozen=True)
class StudyOutcome:
    """What a run wrote and how it ended: exit code, the one status line, the files."""

    exit_code: int
    status: str
    files: tuple[str, ...]
    seconds: float


def choose_case(root: Path, event_study: str | None = None) -> Case | Missing:
    """The case of the one patient under `root`: post-op T1c, event T1c (the newest follow-up,
    or the study `event_study`), dose, dose frame and REG transform, by headers alone."""
    run = index_tree(root, {})
    cohort = build_cohort(run.entries, load_rules(None), None, {})
    patients = [p.patient_id for p in cohort.patients]
    if not patients:
        return Missing("no_dicom", f"no DICOM image series among {len(run.entries)} files")
    if len(patients) > 1:
        return Missing("several_patients", f"{len(patients)} patients ({', '.join(patients[:3])}"
                       f"); a study folder must hold one patient's studies")
    patient = patients[0]
    skip = next((s for s in cohort.skipped if s.what == "patient"), None)
    if not cohort.cases:
        if skip is not None:
            return Missing(skip.code, skip.reason, patient)
        return Missing("no_event", cohort.patients[0].outcome or "no follow-up forms a case",
                       patient)
    if event_study is None:
        return cohort.cases[-1]  # the timeline sorts the follow-ups by date
    for case in cohort.cases:
        if case.event.study_uid == event_study:
            return case
    return Missing("no_event", f"study {event_study} is not a follow-up with a usable contrast "
                   f"T1 after the planning study", patient)


def case_inputs(root: Path, case: Case, work: Path, brain_extraction: bool = True) -> CaseInputs:
    """The case as pipeline inputs: a folder of links to each series' files (in `work`), the
    dose (summed into `work` when the plan has partial doses) and the REG transform."""
    assert case.post_op.t1c is not None and case.event.t1c is not None
    dose = root / case.dose.files[0]
    if len(case.dose.files) != 1 or case.dose.summation != "PLAN":
        dose = work / "dose_gy.nii.gz"
        sitk.WriteImage(sum_doses(root, case.dose), str(dose), useCompression=True)
    transform = None
    if case.transform is not None:
        transform = work / "post_op_to_dose_frame.tfm"
        write_transform(case.transform, transform)

    def series_path(series: Series, name: str) -> Path:
        """A folder of links to the series' files alone: the reader then reads just them (not
        every header of a flat router folder, nor only the part of a series split over folders
        that lies beside its first file); where links cannot be made, one of its files."""
        try:
            link_series(root, series.files, work / name)
            return work / name
        except OSError:
            return root / series.files[0]

    frame = series_path(case.dose_frame, "dose_frame") if case.dose_frame is not None else None
    return CaseInputs(post_op=series_path(case.post_op.t1c, "post_op"),
                      event=series_path(case.event.t1c, "event"), dose=dose, dose_frame=frame,
                      dose_frame_transform=transform, brain_extraction=brain_extraction)


def case_record(case: Case) -> dict[str, Any]:
    """What result.json says about the choice: which series, dose and frame were taken."""
    assert case.post_op.t1c is not None and case.event.t1c is not None

    def day(visit: Visit) -> str:
        return visit.date.isoformat() if visit.date else ""

    return {"patient_id": case.patient_id,
            "post_op": {"study_uid": case.post_op.study_uid, "date": day(case.post_op),
                        "series_uid": case.post_op.t1c.series_uid,
                        "series": case.post_op.t1c.label()},
            "event": {"study_uid": case.event.study_uid, "date": day(case.event),
                      "series_uid": case.event.t1c.series_uid, "series": case.event.t1c.label()},
            "dose": {"files": list(case.dose.files), "summation": case.dose.summation,
                     "plan_uid": case.dose.plan_uid, "why": case.dose.reason},
            "dose_frame_series_uid": case.dose_frame.series_uid if case.dose_frame else None,
            "dose_frame_transform": case.transform.ravel().tolist()
            if case.transform is not None else None}


def check_folders(in_dir: Path, out_dir: Path) -> None:
    """InputError/OutputError unless IN_DIR is a folder and OUT_DIR is new or empty and
    neither lies in the other (nothing is written)."""
    from ricecli.errors import OutputError

    if not in_dir.is_dir():
        raise InputError("is not a folder", in_dir, fix="give the folder of the study's DICOM")
    refuse_inputs(out_dir.resolve(), [in_dir], "folder", "--out folder")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputError("the output exists and is not an empty folder", out_dir,
                          fix="give a new or empty --out folder")


@contextlib.contextmanager
def staged_files(out_dir: Path) -> Iterator[Path]:
    """A hidden staging folder inside OUT_DIR whose files are moved up only on success (OUT_DIR
    itself may be a mount point, which cannot be replaced by a rename); result.json last."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".ricecli-study.", suffix=".partial", dir=out_dir))
    try:
        yield stage
        raise_if_interrupted()
        with _signals_deferred():
            for name in sorted(os.listdir(stage), key=lambda n: (n == RESULT_FILE, n)):
                os.replace(stage / name, out_dir / name)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)


def status_line(record: dict[str, Any]) -> str:
    """The one line a router's log shows for the study."""
    status = record["status"]
    if status == "labelled":
        p = record["probabilities"]
        event = record["study"]["event"]
        return (f"ricecli study: {record['label']} (p recurrence {p['recurrence']:.3f}, "
                f"RICE {p['RICE']:.3f}) for event {event['date'] or event['study_uid']}; "
                f"{len(record['dicom_files'])} DICOM object(s) written; research use only")
    if status == "qa_failed":
        reasons = "; ".join(r["message"] for r in record["qa"]["reasons"])
        return f"ricecli study: no label, QA failed ({reasons}); no SR written"
    if status == "missing_input":
        return (f"ricecli study: no label, missing input {record['missing']['code']}: "
                f"{record['missing']['reason']}")
    return f"ricecli study: no label, input refused: {record['error']}"


def run_study(in_dir: Path, out_dir: Path, settings: StudySettings) -> StudyOutcome:
    """Index IN_DIR, choose the case, classify (and explain), write OUT_DIR; the exit code:
    0 labelled, 2 missing or refused input, 3 QA failed (result.json in every case)."""
    from ricecli.result import to_json

    start = time.perf_counter()
    check_folders(in_dir, out_dir)
    root = in_dir.resolve()
    with staged_files(out_dir) as stage, tempfile.TemporaryDirectory(prefix="ricecli-") as tmp:
        chosen = choose_case(root, settings.event_study)
        if isinstance(chosen, Missing):
            record: dict[str, Any] = {"status": "missing_input", "label": None,
                                      "missing": asdict(chosen)}
        else:
            try:
                record = _classify(root, chosen, settings, stage, Path(tmp))
            except RicenetError as err:  # a file the pipeline refuses: say so in result.json
                record = {"status": "refused", "label": None, "error": err.one_line()}
            record["study"] = case_record(chosen)
        record["settings"] = {k: str(v) if isinstance(v, Path) else v
                              for k, v in asdict(settings).items()}
        record["research_use_only"] = RESEARCH_ONLY
        record["study_seconds"] = round(time.perf_counter() - start, 2)
        line = status_line(record)
        (stage / STATUS_FILE).write_text(line + "\n", encoding="utf-8")
        (stage / RESULT_FILE).write_text(to_json(record), encoding="utf-8")
        files = tuple(sorted(os.listdir(stage)))
    code = {"labelled": EXIT_OK, "qa_failed": EXIT_QA_FAILED}.get(record["status"], EXIT_REFUSED)
    return StudyOutcome(code, line, files, time.perf_counter() - start)


def _classify(root: Path, case: Case, settings: StudySettings, stage: Path,
              work: Path) -> dict[str, Any]:
    """Classify the case (explain when asked and labelled); SR and map into `stage`."""
    from ricecli import pipeline
    from ricecli.explain.occlusion import OcclusionSettings

    inputs = case_inputs(root, case, work, settings.brain_extraction)
    model, engine = pipeline.open_model(settings.model, settings.device)
    result = pipeline.classify(inputs, model, engine)
    explained = None
    if result.labelled and settings.explain:
        (work / "explain").mkdir()
        explained = pipeline.explain(result, model, engine, OcclusionSettings(), work / "explain")
        shutil.copyfile(work / "explain" / OVERVIEW_FILE, stage / OVERVIEW_FILE)
    written = pipeline.write_dicom(result, stage, explained)
    record = result.record
    for key, series in (("post_op", case.post_op.t1c), ("event", case.event.t1c),
                        ("dose_frame", case.dose_frame)):  # a file of the series, not the
        if series is not None:  # links in `work`
            record["inputs"][key] = str(root / series.files[0])
    record["status"] = "labelled" if result.labelled else "qa_failed"
    record["dicom_files"] = [p.name for p in written]
    return record

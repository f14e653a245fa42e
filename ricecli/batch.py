"""Classify a cohort from a manifest: resumable, shardable (SLURM arrays), failure-tolerant.

Manifest: CSV with `case_id, post_op, event, dose` and optionally `label, mask, dose_unit,
dose_fractions, dose_relative_scale_gy, dose_frame` (the simulated cohort's layout); relative
paths are resolved against the manifest's folder. Results: one CSV row per case, appended
under a file lock and flushed, so a killed run or parallel shards never lose finished rows.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import multiprocessing as mp
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ricecli.errors import (
    EXIT_INTERNAL,
    EXIT_QA_FAILED,
    EXIT_REFUSED,
    InputError,
    Interrupted,
    OutputError,
    RicenetError,
    install_signal_handlers,
    raise_if_interrupted,
)
from ricecli.io.files import staged_output

REQUIRED = ("case_id", "post_op", "event", "dose")
RESULT_COLUMNS = ("case_id", "status", "label", "p_recurrence", "p_RICE", "votes_recurrence",
                  "votes_RICE", "members", "true_label", "warnings", "seconds", "error",
                  "explain_dir", "model_sha256", "engine", "qa_verdict", "qa_reasons",
                  "uncertain", "p_recurrence_raw", "member_sd")
DONE_STATUSES = ("ok", "qa_fail")  # recorded for good; "error" rows too unless --retry-failed


@dataclass(frozen=True)
class ManifestCase:
    """One manifest row: its index (for sharding), id, resolved inputs and known label."""

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

    def inputs(self):
        """The CaseInputs that prepare_case takes."""
        from ricecli.prepare import CaseInputs

        return CaseInputs(post_op=self.post_op, event=self.event, dose=self.dose,
                          mask=self.mask, dose_unit=self.dose_unit,
                          dose_fractions=self.dose_fractions, dose_frame=self.dose_frame,
                          dose_relative_scale_gy=self.dose_relative_scale_gy)


def _opt(row: dict, key: str) -> str | None:
    value = (row.get(key) or "").strip()
    return value or None


def read_manifest(path: Path) -> list[ManifestCase]:
    """Parse and check a manifest; paths relative to its folder become absolute."""
    path = Path(path)
    if not path.is_file():
        raise InputError("manifest not found", path, fix="pass the manifest.csv of a cohort "
                         "(e.g. made by 'ricecli simulate --out DIR')")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError as err:
        raise InputError(f"manifest is not UTF-8 text (byte {err.start})", path,
                         fix="save the manifest as a UTF-8 CSV file") from None
    except csv.Error as err:
        raise InputError(f"manifest is not a readable CSV ({err})", path,
                         fix="give a CSV with a header row") from None
    header = set(rows[0]) if rows else set()
    missing = [c for c in REQUIRED if c not in header]
    if not rows or missing:
        raise InputError(f"manifest has no rows or lacks columns {missing or list(REQUIRED)}",
                         path, fix=f"give a CSV with columns {', '.join(REQUIRED)} "
                         "(label, dose_unit, dose_fractions optional)")
    base = path.resolve().parent
    cases, seen = [], set()
    for i, row in enumerate(rows):
        where = f"row {i + 2}"
        cid = _opt(row, "case_id")
        if cid is None or cid in seen:
            raise InputError(f"{where}: case_id is {'empty' if cid is None else 'repeated'}",
                             path, fix="give every case a unique case_id")
        seen.add(cid)
        paths = {}
        for key in ("post_op", "event", "dose", "mask", "dose_frame"):
            value = _opt(row, key)
            if value is None and key in REQUIRED:
                raise InputError(f"{where} ({cid}): {key} is empty", path,
                                 fix=f"fill in the {key} path")
            paths[key] = None if value is None else (base / value).resolve() \
                if not Path(value).is_absolute() else Path(value)
        try:
            fractions = _opt(row, "dose_fractions")
            scale = _opt(row, "dose_relative_scale_gy")
            cases.append(ManifestCase(
                index=i, case_id=cid, label=_opt(row, "label"),
                dose_unit=_opt(row, "dose_unit") or "Gy",
                dose_fractions=None if fractions is None else int(float(fractions)),
                dose_relative_scale_gy=None if scale is None else float(scale),
                **paths))
        except ValueError as err:
            raise InputError(f"{where} ({cid}): {err}", path,
                             fix="dose_fractions must be an integer, "
                             "dose_relative_scale_gy a number") from None
    return cases


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' (0 <= i < n) -> (i, n); None -> (0, 1), i.e. the whole cohort."""
    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if n < 1 or not 0 <= i < n:
        raise RicenetError(f"--shard {text!r} is not i/n with 0 <= i < n",
                           fix="e.g. --shard 0/4 ... --shard 3/4, or "
                           "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    return i, n


def select_shard(cases: list[ManifestCase], shard: tuple[int, int]) -> list[ManifestCase]:
    """The cases of shard i of n: manifest row index modulo n (stable, disjoint, complete)."""
    i, n = shard
    return [c for c in cases if c.index % n == i]


def finished_cases(results: Path, retry_failed: bool = False) -> set[str]:
    """case_ids already recorded in results (ok rows; error rows too unless retrying)."""
    if not results.is_file() or results.stat().st_size == 0:
        return set()
    with open(results, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "case_id" not in reader.fieldnames \
                or "status" not in reader.fieldnames:
            raise OutputError("existing results file is not a ricecli batch results CSV",
                              results, fix="choose another --out or remove that file")
        keep = set(DONE_STATUSES) if retry_failed else {*DONE_STATUSES, "error"}
        done = {r["case_id"] for r in reader if r.get("status") in keep}
    return done


class ResultsWriter:
    """Append rows to the results CSV under an exclusive lock, header once, fsync per row."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_dir() or not self.path.parent.is_dir():
            raise OutputError("cannot write the results file here", self.path,
                              fix="give a file name in an existing folder, e.g. results.csv")

    def append(self, row: dict) -> None:
        with open(self.path, "a+", newline="") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.seek(0)
                # an existing file keeps its own columns (one written by an older version too)
                header = next(csv.reader([f.readline()]), None) or list(RESULT_COLUMNS)
                buf = io.StringIO()
                csv.DictWriter(buf, header, extrasaction="ignore",
                               lineterminator="\n").writerow(row)
                f.seek(0, os.SEEK_END)
                prefix = ""
                if f.tell() == 0:
                    prefix = ",".join(RESULT_COLUMNS) + "\n"
                else:
                    f.seek(f.tell() - 1)
                    if f.read(1) != "\n":  # a killed writer left half a row: close it
                        prefix = "\n"
                f.write(prefix + buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def result_row(case: ManifestCase, result: dict | None, error: str | None,
               seconds: float, explain_dir: str = "") -> dict:
    """The CSV row of one case (ok with its result, or error with the message)."""
    row = {"case_id": case.case_id, "true_label": case.label or "",
           "seconds": f"{seconds:.2f}", "explain_dir": explain_dir}
    if result is None:
        return {**row, "status": "error", "error": error or "unknown error"}
    qa = result.get("qa") or {}
    row.update(qa_verdict=qa.get("verdict", ""), qa_reasons=" | ".join(qa.get("reasons") or []))
    if result.get("label") is None:  # QA failed: no label, the reasons say why
        return {**row, "status": "qa_fail", "warnings": " | ".join(result["warnings"]),
                "error": "", "model_sha256": result["model"]["sha256"],
                "engine": result["engine"]["name"]}
    from ricecli.inference.calibration import csv_fields  # uncertain, p_recurrence_raw, member_sd

    probs, votes = result["probabilities"], result["votes"]
    return {**row, **csv_fields(result), "status": "ok", "label": result["label"],
            "p_recurrence": f"{probs['recurrence']:.6f}", "p_RICE": f"{probs['RICE']:.6f}",
            "votes_recurrence": votes.get("recurrence", 0), "votes_RICE": votes.get("RICE", 0),
            "members": len(result["members"]), "warnings": " | ".join(result["warnings"]),
            "error": "", "model_sha256": result["model"]["sha256"],
            "engine": result["engine"]["name"]}


# --- the per-process worker (one model and engine per process) --------------------------

_STATE: dict = {}


def init_worker(model_path: str | None, device: str, threads: int | None,
                explain: dict | None, explain_root: str | None,
                accept_qa_failure: bool = False, dicom_root: str | None = None) -> None:
    """Load the model and open the engine once per process."""
    from ricecli.inference.engine import OnnxRuntimeEngine, open_engine
    from ricecli.inference.model import load_model

    if threading.current_thread() is threading.main_thread() and \
            mp.current_process().name != "MainProcess":
        # a pool worker: Ctrl-C goes to the whole process group, the main process handles it
        # and ends the workers with SIGTERM: mid-case that unwinds the case's staged outputs,
        # idle the worker just exits (no traceback)
        install_signal_handlers()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _worker_sigterm)
        _STATE["worker"] = True
    model = load_model(model_path)
    if threads and model.format == "onnx" and device in ("cpu", "auto"):
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        engine = open_engine(model, device)
        if engine.providers[0] == "CPUExecutionProvider":
            engine = OnnxRuntimeEngine(model, ["CPUExecutionProvider"], threads=threads)
    else:
        engine = open_engine(model, device)
    _STATE.update(model=model, engine=engine, explain=explain,
                  accept_qa_failure=accept_qa_failure, dicom_root=dicom_root,
                  explain_root=None if explain_root is None else Path(explain_root))


def _worker_sigterm(signum, frame) -> None:
    if _STATE.get("running"):
        from ricecli.errors import _handler

        _handler(signum, frame)  # raises Interrupted (or defers it out of C++ callbacks)
    os._exit(128 + signum)


def run_case(case: ManifestCase) -> dict:
    """Classify (and explain) one case; any failure becomes an error row, never a crash.

    An interrupt stops it with no row; in a pool worker the process then exits (after its
    staged outputs were removed), since the main process is stopping the pool.
    """
    _STATE["running"] = True
    try:
        return _run_case(case)
    except Interrupted as stop:
        if _STATE.get("worker"):
            os._exit(stop.exit_code)
        raise
    finally:
        _STATE["running"] = False


def _run_case(case: ManifestCase) -> dict:
    start = time.perf_counter()
    explain_dir = ""
    try:
        result = _classify(case)
        if _STATE.get("explain") is not None and result.get("label") is not None:
            explain_dir = _explain(case, result)
        if _STATE.get("dicom_root") and result.get("label") is not None:
            from ricecli.outputs.dicom import write_for_batch_case  # --dicom-out DIR/<case_id>/

            write_for_batch_case(Path(_STATE["dicom_root"]) / case.case_id, result, case.event,
                                 explain_dir)
        return result_row(case, result, None, time.perf_counter() - start, explain_dir)
    except RicenetError as err:
        raise_if_interrupted()
        message = err.one_line()
    except Exception as err:  # noqa: BLE001 - one bad case must not stop a cohort
        raise_if_interrupted()  # a Ctrl-C that C++ code turned into an error: stop, no row
        message = f"internal error: {type(err).__name__}: {err}"
    return result_row(case, None, " ".join(message.split()), time.perf_counter() - start)


def _classify(case: ManifestCase) -> dict:
    from ricecli.outputs.report import classify_case

    return classify_case(case.inputs(), _STATE["model"], _STATE["engine"],
                         keep_case=_STATE.get("explain") is not None,
                         accept_qa_failure=_STATE.get("accept_qa_failure", False))


def _explain(case: ManifestCase, result: dict) -> str:
    """Occlusion maps of the case into EXPLAIN_ROOT/<case_id> (renamed into place when done)."""
    from ricecli.explain.occlusion import OcclusionSettings, explain_case, write_explain

    root: Path = _STATE["explain_root"]
    model, engine = _STATE["model"], _STATE["engine"]
    settings = OcclusionSettings(**_STATE["explain"])
    case_obj = result.pop("_case")
    explained = explain_case(case_obj, model, engine, settings)
    final = root / case.case_id
    shutil.rmtree(root / f".{case.case_id}.partial", ignore_errors=True)  # older versions' stage
    with staged_output(final, case.inputs().paths(), overwrite=True) as tmp:
        write_explain(explained, case_obj, tmp, model.spec.classes,
                      extra={"case_id": case.case_id, "classification": result["probabilities"],
                             "qa": result.get("qa")})
    return str(final)


def run_cases(cases: list[ManifestCase], jobs: int, init_args: tuple) -> Iterator[dict]:
    """Rows as cases finish: in this process for jobs=1, else in a spawn pool."""
    if jobs <= 1 or len(cases) <= 1:
        init_worker(*init_args)
        for case in cases:
            yield run_case(case)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                               initializer=init_worker, initargs=init_args)
    try:
        # workers start with Ctrl-C ignored (inherited through exec), so a Ctrl-C while they
        # import cannot print their tracebacks; the main process handles it for all
        with _sigint_ignored():
            futures = {pool.submit(run_case, c): c for c in cases}
        for fut in as_completed(futures):
            try:
                row = fut.result()
            except Exception as err:  # noqa: BLE001 - a dead worker: record and go on
                raise_if_interrupted()
                row = result_row(futures[fut], None, f"worker failed: {type(err).__name__}: "
                                 f"{err}", 0.0)
            raise_if_interrupted()
            yield row
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def stop_pool(pool) -> None:
    """Stop a pool at once: cancel queued cases, SIGTERM the workers (their staged outputs
    unwind), wait for them to exit."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        if proc.is_alive():
            proc.terminate()
    for proc in workers:
        proc.join(timeout=10)


def summarise(rows: Iterable[dict]) -> dict:
    """Counts of ok / error rows and, where true labels are known, the accuracy."""
    rows = list(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    labelled = [r for r in ok if r.get("true_label")]
    out = {"cases": len(rows), "ok": len(ok), "failed": len(rows) - len(ok)}
    qa_fail = sum(r["status"] == "qa_fail" for r in rows)
    if qa_fail:
        out["qa_fail"] = qa_fail
    if labelled:
        out["accuracy"] = sum(r["label"] == r["true_label"] for r in labelled) / len(labelled)
        out["labelled"] = len(labelled)
    return out


def exit_code(rows: list[dict]) -> int:
    """0 when a case of this run got a label (or none ran); when every case failed: 3 if any
    failed QA, else 1 if any internal error, else 2 (every case's input was refused)."""
    if not rows or any(r["status"] == "ok" for r in rows):
        return 0
    if any(r["status"] == "qa_fail" for r in rows):
        return EXIT_QA_FAILED
    if any("internal error" in (r.get("error") or "") or "worker failed" in (r.get("error") or "")
           for r in rows):
        return EXIT_INTERNAL
    return EXIT_REFUSED

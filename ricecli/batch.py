"""Classify a cohort from a manifest: resumable, shardable (SLURM arrays), failure-tolerant.

The cases come from `ricecli.io.manifest`, each goes through `ricecli.pipeline` (classify, and
explain with --explain) in this process or in a spawn pool of workers, and each becomes one
row of the results CSV (`ricecli.batch_results`). A failing case is a row, never a crash.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ricecli import pipeline
from ricecli.batch_results import Row, result_row
from ricecli.errors import RicenetError
from ricecli.explain.occlusion import ExplainResult, OcclusionSettings
from ricecli.inference.engine import Engine
from ricecli.inference.model import LoadedModel
from ricecli.io.files import staged_output
from ricecli.io.manifest import ManifestCase
from ricecli.prepare import CaseInputs
from ricecli.signals import (
    Interrupted,
    handle_signal,
    install_signal_handlers,
    raise_if_interrupted,
)


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


def case_inputs(case: ManifestCase) -> CaseInputs:
    """The pipeline's CaseInputs of a manifest row."""
    return CaseInputs(post_op=case.post_op, event=case.event, dose=case.dose, mask=case.mask,
                      dose_unit=case.dose_unit, dose_fractions=case.dose_fractions,
                      dose_frame=case.dose_frame,
                      dose_frame_transform=case.dose_frame_transform,
                      dose_relative_scale_gy=case.dose_relative_scale_gy)


@dataclass(frozen=True)
class BatchSettings:
    """What every worker needs to run a case (picklable: sent to spawned pool workers)."""

    model_path: str | None
    device: str
    threads: int | None = None  # ONNX Runtime / SimpleITK threads per worker (None: default)
    explain_root: str | None = None  # --explain: maps go to EXPLAIN_ROOT/<case_id>/
    accept_qa_failure: bool = False
    dicom_root: str | None = None  # --dicom-out: DICOM SR (+ map) into DICOM_ROOT/<case_id>/


@dataclass
class _Worker:
    """The per-process model and engine (opened once), and whether a case is running."""

    settings: BatchSettings
    model: LoadedModel
    engine: Engine
    in_pool: bool = False
    running: bool = False


_worker: _Worker | None = None  # this process's model and engine, once init_worker ran


def init_worker(settings: BatchSettings) -> None:
    """Load the model and open the engine once per process."""
    in_pool = threading.current_thread() is threading.main_thread() and \
        mp.current_process().name != "MainProcess"
    if in_pool:
        # a pool worker: Ctrl-C goes to the whole process group, the main process handles it
        # and ends the workers with SIGTERM: mid-case that unwinds the case's staged outputs,
        # idle the worker just exits (no traceback)
        install_signal_handlers()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _worker_sigterm)
    device, threads = settings.device, settings.threads
    model_path = None if settings.model_path is None else Path(settings.model_path)
    model, engine = pipeline.open_model(model_path, device)
    if threads and model.format == "onnx" and device in ("cpu", "auto"):
        import SimpleITK as sitk

        from ricecli.inference.engine import OnnxRuntimeEngine

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        if engine.providers[0] == "CPUExecutionProvider":
            engine = OnnxRuntimeEngine(model, ["CPUExecutionProvider"], threads=threads)
    global _worker
    _worker = _Worker(settings, model, engine, in_pool=in_pool)


def _worker_sigterm(signum: int, frame: FrameType | None) -> None:
    if _worker is not None and _worker.running:
        handle_signal(signum, frame)  # raises Interrupted (or defers it out of C++ callbacks)
    os._exit(128 + signum)


def run_case(case: ManifestCase) -> Row:
    """Classify (and explain) one case; any failure becomes an error row, never a crash.

    An interrupt stops it with no row; in a pool worker the process then exits (after its
    staged outputs were removed), since the main process is stopping the pool.
    """
    worker = _worker
    if worker is None:
        raise RuntimeError("run_case before init_worker")
    worker.running = True
    try:
        return _run_case(worker, case)
    except Interrupted as stop:
        if worker.in_pool:
            os._exit(stop.exit_code)
        raise
    finally:
        worker.running = False


def _run_case(worker: _Worker, case: ManifestCase) -> Row:
    start = time.perf_counter()
    settings, explain_dir, explained = worker.settings, "", None
    try:
        result = pipeline.classify(case_inputs(case), worker.model, worker.engine,
                                   accept_qa_failure=settings.accept_qa_failure)
        if settings.explain_root is not None and result.labelled:
            explain_dir, explained = _explain(worker, case, result, Path(settings.explain_root))
        if settings.dicom_root and result.labelled:  # --dicom-out DIR/<case_id>/
            pipeline.write_dicom(result, Path(settings.dicom_root) / case.case_id, explained)
        return result_row(case, result.result, None, time.perf_counter() - start, explain_dir)
    except RicenetError as err:
        raise_if_interrupted()
        message = err.one_line()
    except Exception as err:  # noqa: BLE001 - one bad case must not stop a cohort
        raise_if_interrupted()  # a Ctrl-C that C++ code turned into an error: stop, no row
        message = f"internal error: {type(err).__name__}: {err}"
    return result_row(case, None, " ".join(message.split()), time.perf_counter() - start)


def _explain(worker: _Worker, case: ManifestCase, result: pipeline.Classified,
             root: Path) -> tuple[str, ExplainResult]:
    """Occlusion maps of the case into ROOT/<case_id> (renamed into place when done)."""
    final = root / case.case_id
    shutil.rmtree(root / f".{case.case_id}.partial", ignore_errors=True)  # older versions' stage
    with staged_output(final, case.paths(), overwrite=True) as tmp:
        explained = pipeline.explain(result, worker.model, worker.engine, OcclusionSettings(),
                                     tmp, extra={"case_id": case.case_id})
    return str(final), explained


def run_cases(cases: list[ManifestCase], jobs: int, settings: BatchSettings) -> Iterator[Row]:
    """Rows as cases finish: in this process for jobs=1, else in a spawn pool."""
    if jobs <= 1 or len(cases) <= 1:
        init_worker(settings)
        for case in cases:
            yield run_case(case)
        return
    from concurrent.futures import as_completed

    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                               initializer=init_worker, initargs=(settings,))
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


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool at once: cancel queued cases, SIGTERM the workers (their staged outputs
    unwind), wait for them to exit."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        if proc.is_alive():
            proc.terminate()
    for proc in workers:
        proc.join(timeout=10)

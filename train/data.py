"""The cohort: manifest rows, prepared-case cache (.npz once per case), arrays in memory.

Torch-free on purpose: preparation workers import only ricecli and numpy.
Cache file = CACHE/<spec hash>/<case hash>.npz holding all three channels and the brain
mask; the case hash covers the spec's preparation key, the input files' identity (path,
size, mtime; the mask and dose_frame files too) and the per-case options, so a changed file or spec
is prepared again. Manifests are read by ricecli's own parser (ricecli.io.manifest).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ricecli import __version__
from ricecli.errors import InputError
from ricecli.io.files import write_atomic
from ricecli.io.manifest import read_manifest as parse_manifest
from ricecli.spec import CHANNELS, CLASSES, Spec

CACHE_FORMAT = 1  # bump when the .npz layout changes


@dataclass(frozen=True)
class CaseRecord:
    """One manifest row with absolute paths and the integer label (1 = recurrence)."""

    case_id: str
    patient_id: str
    post_op: str
    event: str
    dose: str
    label: int
    split: str = "cv"
    mask: str | None = None
    dose_unit: str = "Gy"
    dose_fractions: int | None = None
    dose_frame: str | None = None
    dose_relative_scale_gy: float | None = None
    dose_frame_transform: str | None = None


def default_cache_dir() -> Path:
    """The prepared cases' cache: `prepared/` under ricecli's one cache root."""
    from ricecli.runtime import cache_root

    return cache_root() / "prepared"


def _label(value: str | None, manifest: Path, case_id: str) -> int:
    v = (value or "").strip().lower()
    lookup = {CLASSES[0].lower(): 0, CLASSES[1].lower(): 1, "0": 0, "1": 1}
    if v not in lookup:
        raise InputError(f"case {case_id}: label {value or ''!r} is not one of {CLASSES}",
                         manifest, "write RICE or recurrence in the label column")
    return lookup[v]


def _split(value: str | None, manifest: Path, case_id: str) -> str:
    split = (value or "cv").lower()
    if re.fullmatch(r"fold\d+", split):  # ricecli cohort's patient-level folds: all CV cases
        return "cv"
    if split not in ("cv", "test"):
        raise InputError(f"case {case_id}: split {split!r} is not cv or test", manifest,
                         "use cv (cross-validation) or test (held out)")
    return split


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def read_manifest(path: str | Path) -> list[CaseRecord]:
    """Rows of a manifest CSV (ricecli's own parser, labels required); split defaults to cv."""
    path = Path(path)
    return [CaseRecord(
        case_id=c.case_id, patient_id=c.patient_id or c.case_id,
        post_op=str(c.post_op), event=str(c.event), dose=str(c.dose),
        label=_label(c.label, path, c.case_id), split=_split(c.split, path, c.case_id),
        mask=_str(c.mask), dose_unit=c.dose_unit, dose_fractions=c.dose_fractions,
        dose_frame=_str(c.dose_frame), dose_relative_scale_gy=c.dose_relative_scale_gy,
        dose_frame_transform=_str(c.dose_frame_transform),
    ) for c in parse_manifest(path, also_required=("label",))]


def _identity(path: str) -> list:
    """Path, size and mtime of a file, or of every file under a folder (DICOM series)."""
    p = Path(path)
    if not p.exists():
        raise InputError("input file not found", p, "fix the path in the manifest")
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    return [[str(q.resolve()), q.stat().st_size, q.stat().st_mtime_ns] for q in files]


def spec_hash(spec: Spec) -> str:
    return hashlib.sha256(spec.cache_key().encode()).hexdigest()[:16]


def case_key(record: CaseRecord, spec: Spec) -> str:
    """Hash of everything the prepared arrays depend on."""
    inputs = {k: _identity(getattr(record, k)) for k in ("post_op", "event", "dose")}
    # optional inputs: keys of cases without them unchanged
    for key in ("mask", "dose_frame", "dose_frame_transform"):
        if getattr(record, key):
            inputs[key] = _identity(getattr(record, key))
    options = {k: v for k, v in asdict(record).items()
               if (k.startswith("dose_") or k == "case_id")
               and not (k == "dose_frame_transform" and v is None)}
    blob = json.dumps({"spec": spec.cache_key(), "inputs": inputs, "options": options,
                       "format": CACHE_FORMAT, "ricecli": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_file(record: CaseRecord, spec: Spec, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / spec_hash(spec) / f"{record.case_id}-{case_key(record, spec)}.npz"


def write_cached(path: Path, channels: dict[str, np.ndarray], brain_mask: np.ndarray,
                 qa: dict | None = None) -> None:
    """Compressed .npz of all channels + mask, written atomically."""
    arrays: dict[str, Any] = {c: np.asarray(channels[c], np.float32) for c in CHANNELS}
    arrays.update(brain_mask=np.asarray(brain_mask, np.uint8),
                  qa=np.array(json.dumps(qa or {}, default=str)))
    with write_atomic(path) as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)


def _prepare_one(record: CaseRecord, spec_json: str, out: str) -> float:
    """Worker: ricecli's own preparation of one case into the cache; returns seconds."""
    from ricecli.prepare import CaseInputs, prepare_case
    from ricecli.result import qa_record

    t0 = time.perf_counter()
    inputs = CaseInputs(post_op=record.post_op, event=record.event, dose=record.dose,
                        mask=record.mask, dose_unit=record.dose_unit,
                        dose_fractions=record.dose_fractions, dose_frame=record.dose_frame,
                        dose_relative_scale_gy=record.dose_relative_scale_gy,
                        dose_frame_transform=record.dose_frame_transform)
    case = prepare_case(inputs, Spec.from_json(spec_json))
    write_cached(Path(out), case.channels, case.brain_mask, qa_record(case.qa))
    return time.perf_counter() - t0


def prepare_cohort(records: list[CaseRecord], spec: Spec, cache_dir: str | Path,
                   workers: int = 1, progress: Callable[[int, int], None] | None = None) -> dict:
    """Prepare every case not yet cached, in `workers` processes; returns counts and times."""
    todo = [(r, cache_file(r, spec, cache_dir)) for r in records]
    todo = [(r, p) for r, p in todo if not p.exists()]
    t0 = time.perf_counter()
    seconds: list[float] = []
    if todo and workers <= 1:
        for i, (r, p) in enumerate(todo):
            seconds.append(_run_prepare(r, spec, p))
            if progress:
                progress(i + 1, len(todo))
    elif todo:
        ctx = mp.get_context("spawn")  # no forked torch/OpenMP state in the workers
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [(r, pool.submit(_prepare_one, r, spec.to_json(), str(p))) for r, p in todo]
            for i, (r, fut) in enumerate(futures):
                seconds.append(_result(r, fut))
                if progress:
                    progress(i + 1, len(todo))
    return {"cases": len(records), "prepared": len(todo), "cached": len(records) - len(todo),
            "wall_s": round(time.perf_counter() - t0, 2),
            "mean_case_s": round(float(np.mean(seconds)), 2) if seconds else 0.0}


def _run_prepare(record: CaseRecord, spec: Spec, path: Path) -> float:
    try:
        return _prepare_one(record, spec.to_json(), str(path))
    except InputError:
        raise
    except Exception as err:  # a failing case names itself, not a traceback
        raise InputError(f"case {record.case_id}: preparation failed ({err})",
                         record.event) from err


def _result(record: CaseRecord, fut: Future[float]) -> float:
    try:
        return fut.result()
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"case {record.case_id}: preparation failed ({err})",
                         record.event) from err


@dataclass
class CohortArrays:
    """All cases of a cohort in memory: x [N, C, z, y, x] (float16 to halve RAM), labels."""

    x: np.ndarray
    y: np.ndarray
    case_ids: list[str]
    channels: tuple[str, ...]


def load_cohort(records: list[CaseRecord], spec: Spec, cache_dir: str | Path,
                workers: int = 4, dtype: DTypeLike = np.float16) -> CohortArrays:
    """Read the cached channels of `spec.channels` for every record into one array."""
    shape = spec.model_space.shape_zyx
    x = np.empty((len(records), len(spec.channels), *shape), dtype=dtype)

    def load(i: int) -> None:
        path = cache_file(records[i], spec, cache_dir)
        if not path.exists():
            raise InputError(f"case {records[i].case_id} is not prepared", path,
                             "fit, evaluate and ablate prepare every case into --cache "
                             "first; under torchrun give all ranks the same --cache folder")
        with np.load(path) as z:
            for c, name in enumerate(spec.channels):
                arr = z[name]
                if arr.shape != shape:
                    raise InputError(f"cached array has shape {arr.shape}, spec wants {shape}",
                                     path, "delete the cache folder and prepare again")
                x[i, c] = arr

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # zlib releases the GIL
        list(pool.map(load, range(len(records))))
    return CohortArrays(x=x, y=np.array([r.label for r in records], np.int64),
                        case_ids=[r.case_id for r in records], channels=tuple(spec.channels))

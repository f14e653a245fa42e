"""A cohort of simulated patients written to disk (NIfTI or DICOM) with a manifest.csv,
in parallel processes; each case is `case.simulate_case(i, seed)`, whatever --n or --jobs.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ricecli.simulate.case import SimConfig, SimulatedCase, simulate_case

Row = dict[str, Any]  # one manifest row: column -> value, written as CSV

MANIFEST_COLUMNS = (
    "case_id", "post_op", "event", "dose", "label", "split", "dose_unit", "dose_fractions",
    "lesion_mask", "truth", "lesion_x_mm", "lesion_y_mm", "lesion_z_mm", "lesion_site",
    "solidity", "multifocal", "regimen", "prescription_gy", "fractions", "p_recurrence",
    "difficulty", "format", "seed", "skull_on", "mask",
)


def write_case(case: SimulatedCase, root: Path, fmt: str) -> Row:
    """Write one case under root/cases/<id>/; return its manifest row (paths relative to root)."""
    rel = Path("cases") / case.case_id
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "dicom":
        from pydicom.uid import generate_uid

        from ricecli.io.dicom_write import write_mr_series, write_rtdose

        study, planning_frame = generate_uid(), generate_uid()
        write_mr_series(case.post_op, folder / "post_op", "T1c post-op", 1, study_uid=study,
                        frame_of_reference_uid=planning_frame)
        write_mr_series(case.event, folder / "event", "T1c event", 2,
                        frame_of_reference_uid=generate_uid())
        write_rtdose(case.dose_gy, folder / "RD.dose.dcm", summation="PLAN", units="GY",
                     frame_of_reference_uid=planning_frame, study_uid=study)
        names = {"post_op": "post_op", "event": "event", "dose": "RD.dose.dcm"}
    else:
        names = {"post_op": "post_op.nii.gz", "event": "event.nii.gz", "dose": "dose.nii.gz"}
        sitk.WriteImage(case.post_op, str(folder / names["post_op"]), True)
        sitk.WriteImage(case.event, str(folder / names["event"]), True)
        sitk.WriteImage(case.dose_gy, str(folder / names["dose"]), True)
    sitk.WriteImage(case.lesion_mask, str(folder / "event_lesion_mask.nii.gz"), True)
    sitk.WriteImage(case.brain_mask, str(folder / "event_brain_mask.nii.gz"), True)
    (folder / "truth.json").write_text(json.dumps(case.truth, indent=1))
    t = case.truth
    x, y, z = t["lesion"]["centre_event_mm"]
    return {
        "case_id": case.case_id,
        "post_op": str(rel / names["post_op"]),
        "event": str(rel / names["event"]),
        "dose": str(rel / names["dose"]),
        "label": case.label,
        "split": "",
        "dose_unit": "Gy",
        "dose_fractions": "",
        "lesion_mask": str(rel / "event_lesion_mask.nii.gz"),
        "truth": str(rel / "truth.json"),
        "lesion_x_mm": x, "lesion_y_mm": y, "lesion_z_mm": z,
        "lesion_site": t["lesion"]["site"],
        "solidity": t["lesion"]["solidity"],
        "multifocal": int(t["lesion"]["multifocal"]),
        "regimen": t["plan"]["regimen"],
        "prescription_gy": t["plan"]["prescription_gy"],
        "fractions": t["plan"]["fractions"],
        "p_recurrence": t["p_recurrence"],
        "difficulty": t["config"]["difficulty"],
        "format": fmt,
        "seed": t["seed"],
        "skull_on": int(t["skull_on"]),
        "mask": str(rel / "event_brain_mask.nii.gz"),  # batch/train use it as the brain
    }


def _make(index: int, seed: int, config: SimConfig, root: str) -> Row:
    return write_case(simulate_case(index, seed, config), Path(root), config.fmt)


def _init_worker() -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # processes, not threads, share cores


def assign_splits(rows: list[Row], seed: int, test_fraction: float) -> None:
    """Stratified by label, deterministic by seed: ~test_fraction of each class is 'test'."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7_777_777]))
    for label in sorted({r["label"] for r in rows}):
        members = sorted((r for r in rows if r["label"] == label), key=lambda r: r["case_id"])
        n_test = int(math.floor(test_fraction * len(members) + 0.5))
        test = set(rng.permutation(len(members))[:n_test].tolist())
        for k, r in enumerate(members):
            r["split"] = "test" if k in test else "cv"


def write_manifest(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        for r in sorted(rows, key=lambda r: r["case_id"]):
            w.writerow(r)


def generate_cohort(root: Path, n: int, seed: int, config: SimConfig, jobs: int = 1,
                    test_fraction: float = 0.15,
                    on_case: Callable[[Row], None] | None = None) -> list[Row]:
    """Write n cases and manifest.csv into root (an existing, empty, staging folder)."""
    rows: list[Row] = []
    if jobs <= 1:
        for i in range(n):
            rows.append(_make(i, seed, config, str(root)))
            if on_case:
                on_case(rows[-1])
    else:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(min(jobs, n), mp_context=ctx, initializer=_init_worker) as pool:
            futures = [pool.submit(_make, i, seed, config, str(root)) for i in range(n)]
            for fut in as_completed(futures):
                rows.append(fut.result())
                if on_case:
                    on_case(rows[-1])
    assign_splits(rows, seed, test_fraction)
    write_manifest(rows, root / "manifest.csv")
    return sorted(rows, key=lambda r: r["case_id"])

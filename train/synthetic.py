"""An easy synthetic cohort written straight into the prepared-case cache.

For tests and the throughput benchmark: each case gets tiny real input files (so the
manifest and the cache key are the real ones) and cached arrays standing in for what
`prepare_case` would produce. The label is visible to a small network: a recurrence
lesion on the event scan lies outside the high-dose region and is brighter; a RICE
lesion sits inside the high-dose region. No registration runs, so it takes seconds.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ricecli.spec import TEST_PRESET, Spec
from train.data import cache_file, read_manifest, write_cached

# A small model space for tests (with the tiny architecture): 16^3 voxels of 12 mm.
SMALL_GRID = {"preset": TEST_PRESET, "size_xyz": (16, 16, 16), "spacing_mm": 12.0}


def _blob(shape: tuple[int, int, int], centre: np.ndarray, radius: float) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    d2 = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
    return np.exp(-d2 / (2 * radius**2)).astype(np.float32)


def synthetic_case(shape: tuple[int, int, int], label: int, rng: np.random.Generator
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Channels (post_op, event, dose) normalised as preparation leaves them, and a mask."""
    s = np.array(shape, dtype=np.float32)
    brain = _blob(shape, s / 2, min(shape) / 3) > 0.2
    t1 = rng.normal(0, 1, shape).astype(np.float32) * 0.3 + brain * 1.0
    target = s / 2 + rng.uniform(-0.12, 0.12, 3) * s
    dose = 1.0 * _blob(shape, target, min(shape) / 6)
    away = target + np.array([0, 1, 1]) * rng.choice([-1, 1]) * s * 0.22
    lesion_at = away if label == 1 else target + rng.normal(0, 0.5, 3)
    lesion = _blob(shape, lesion_at, min(shape) / 8) * (3.0 if label == 1 else 1.0)
    event = t1 + lesion + rng.normal(0, 0.2, shape).astype(np.float32)
    post_op = t1 + rng.normal(0, 0.2, shape).astype(np.float32)
    chans = {"post_op": post_op, "event": event.astype(np.float32),
             "dose": (dose * brain).astype(np.float32)}
    return chans, brain.astype(np.uint8)


def write_synthetic_cohort(root: str | Path, spec: Spec, n_cv: int, n_test: int = 0,
                           cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """root/manifest.csv + tiny input files; cached arrays for `spec` in cache_dir."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stub = sitk.Image(4, 4, 4, sitk.sitkFloat32)
    rows = []
    for i in range(n_cv + n_test):
        cid = f"case{i:04d}"
        for ch in ("post_op", "event", "dose"):
            stub[0, 0, 0] = float(i)  # distinct content -> distinct file identities
            sitk.WriteImage(stub, str(root / f"{cid}_{ch}.nii.gz"))
        rows.append({"case_id": cid, "post_op": f"{cid}_post_op.nii.gz",
                     "event": f"{cid}_event.nii.gz", "dose": f"{cid}_dose.nii.gz",
                     "label": "recurrence" if i % 2 else "RICE",
                     "split": "cv" if i < n_cv else "test"})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if cache_dir is not None:
        for rec in read_manifest(manifest):
            chans, mask = synthetic_case(spec.model_space.shape_zyx, rec.label, rng)
            write_cached(cache_file(rec, spec, cache_dir), chans, mask, {"synthetic": True})
    return manifest

"""Time `ricecli prepare` end to end on a realistic case; print one JSON line last.

The case: two 256x256x180 1 mm T1c volumes (the shared BraTS T1c, or the shipped template when
../shared/data is absent, padded and moved rigidly: post-op axis-aligned, event oblique) and a
2.5 mm dose grid in the post-op frame, written as .nii.gz in a temp folder.

    python benchmarks/prepare.py [--repeat 3] [--preset edge]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
BRATS = ROOT.parent / "shared" / "data" / "mri" / "BraTS-GLI-00001-000"
BRATS = BRATS / "BraTS-GLI-00001-000-t1c.nii.gz"


def _source() -> tuple[sitk.Image, str]:
    """A real skull-stripped T1c when available, else the template T1 (scaled like an MR)."""
    if BRATS.exists():
        return sitk.ReadImage(str(BRATS), sitk.sitkFloat32), "BraTS-GLI-00001-000 t1c"
    sys.path.insert(0, str(ROOT))
    from ricecli.geometry.template import load_template

    return load_template().t1 * 1000.0, "ricecli template T1"


def _grid(centre: np.ndarray, size: tuple[int, int, int], spacing: float,
          angles_rad: tuple[float, float, float]) -> sitk.Image:
    """An empty grid of `size` voxels centred at `centre`, rotated by `angles_rad`."""
    rot = sitk.Euler3DTransform()
    rot.SetRotation(*angles_rad)
    direction = np.asarray(rot.GetMatrix()).reshape(3, 3)
    grid = sitk.Image(list(size), sitk.sitkFloat32)
    grid.SetSpacing([spacing] * 3)
    grid.SetDirection(direction.ravel().tolist())
    half = spacing * (np.asarray(size) - 1) / 2.0
    grid.SetOrigin((centre - direction @ half).tolist())
    return grid


def build_case(folder: Path) -> dict:
    """Write post_op.nii.gz, event.nii.gz (256x256x180, int16) and dose.nii.gz (2.5 mm)."""
    src, name = _source()
    centre = np.asarray(src.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in src.GetSize()]))
    size = (256, 256, 180)
    motion = sitk.Euler3DTransform()
    motion.SetCenter(centre.tolist())
    motion.SetRotation(0.08, -0.05, 0.1)
    motion.SetTranslation((6.0, -9.0, 4.0))
    post = sitk.Resample(src, _grid(centre, size, 1.0, (0, 0, 0)), motion, sitk.sitkLinear, 0.0)
    event = sitk.Resample(src, _grid(centre, size, 1.0, (0.1, 0.0, -0.07)), sitk.Transform(),
                          sitk.sitkLinear, 0.0)
    for label, image in (("post_op", post), ("event", event)):
        sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(folder / f"{label}.nii.gz"), True)
    dose_grid = _grid(centre, (100, 110, 90), 2.5, (0, 0, 0))
    zyx = np.indices(dose_grid.GetSize()[::-1]).astype(np.float32)
    peak = np.asarray(dose_grid.GetSize()[::-1], np.float32)[:, None, None, None] / 2 + 5
    r_mm = np.sqrt(((zyx - peak) ** 2).sum(0)) * 2.5
    dose = sitk.GetImageFromArray((60.0 * np.exp(-((r_mm / 45.0) ** 2))).astype(np.float32))
    dose.CopyInformation(dose_grid)
    sitk.WriteImage(dose, str(folder / "dose.nii.gz"), True)
    return {"source": name, "t1_size": list(size), "dose_size": list(dose_grid.GetSize()),
            "dose_spacing_mm": 2.5}


def run_once(folder: Path, out: Path, preset: str) -> dict:
    """One `ricecli prepare` subprocess: wall time, child CPU time and the stage timings."""
    cmd = [sys.executable, "-m", "ricecli.cli", "prepare",
           "--t1", str(folder / "post_op.nii.gz"), "--t1", str(folder / "event.nii.gz"),
           "--dose", str(folder / "dose.nii.gz"), "--out", str(out), "--overwrite",
           "--preset", preset]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"ricecli prepare failed ({proc.returncode}): {proc.stderr.strip()}")
    qa = json.loads((out / "qa.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "stages_s": qa["timings_s"],
            "registrations_failed": [k for k, v in qa["registration"].items()
                                     if v["likely_failed"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--preset", default="edge")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ricenet-bench-prepare-") as tmp:
        folder = Path(tmp)
        case = build_case(folder)
        runs = [run_once(folder, folder / "out", args.preset) for _ in range(args.repeat)]
    for i, run in enumerate(runs):
        print(f"run {i}: wall {run['wall_s']:.2f} s, cpu {run['cpu_s']:.2f} s, "
              f"stages {run['stages_s']}")
    walls = [r["wall_s"] for r in runs]
    stages = {k: round(statistics.median(r["stages_s"][k] for r in runs), 3)
              for k in runs[0]["stages_s"]}
    print(json.dumps({
        "benchmark": "prepare", "preset": args.preset, "case": case,
        "cpus": os.cpu_count(), "repeat": args.repeat,
        "wall_s_median": round(statistics.median(walls), 3), "wall_s_min": round(min(walls), 3),
        "cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 3),
        "stages_s_median": stages, "target_s": 6.0,
        "registrations_failed": sorted({k for r in runs for k in r["registrations_failed"]}),
    }))


if __name__ == "__main__":
    main()

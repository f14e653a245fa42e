"""Time brain extraction (ricecli.geometry.brain) and the skull-stripped check; print one
JSON line last.

Cases: the real skull-on TCGA-FG-6692 T1c (256x224x26, 5.5 mm slices) and a 256x256x180 1 mm
volume (the shared BraTS T1c padded, or the shipped template when ../shared/data is absent).
Wall and CPU seconds per call are medians over --repeat calls after one warm-up call (which
loads the two ONNX sessions); ONNX Runtime runs on 2 intra-op threads.

    python benchmarks/brain.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ricecli.geometry import brain, stripped

ROOT = Path(__file__).resolve().parents[1]
MRI = ROOT.parent / "shared" / "data" / "mri"
TCGA = MRI / "TCGA-FG-6692"
BRATS = MRI / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1c.nii.gz"


def _volume_256x256x180() -> tuple[sitk.Image, str]:
    """A 256x256x180 1 mm volume centred on a real head (or the template's brain)."""
    if BRATS.exists():
        source, name = sitk.ReadImage(str(BRATS), sitk.sitkFloat32), "BraTS-GLI-00001-000 t1c"
    else:
        from ricecli.geometry.template import load_template

        source, name = load_template().t1 * 1000.0, "ricecli template T1"
    grid = sitk.Image([256, 256, 180], sitk.sitkFloat32)
    grid.SetDirection(source.GetDirection())
    direction = np.asarray(source.GetDirection()).reshape(3, 3)
    centre = source.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in source.GetSize()])
    grid.SetOrigin((np.asarray(centre) - direction @ np.array([127.5, 127.5, 89.5])).tolist())
    return sitk.Resample(source, grid, sitk.Transform(), sitk.sitkLinear, 0.0), name


def _time(call, repeat: int) -> dict:
    call()  # warm-up: sessions load once per process
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": round(statistics.median(walls), 3),
            "cpu_s": round(statistics.median(cpus), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cases = []
    if TCGA.exists():
        scan = sitk.ReadImage(str(TCGA / "TCGA-FG-6692_t1c.nii.gz"))
        cases.append(("TCGA-FG-6692 t1c 256x224x26", scan))
    big, name = _volume_256x256x180()
    cases.append((f"256x256x180 1 mm ({name})", big))
    result = {"benchmark": "brain", "grid": brain.GRID, "threads": brain.ORT_THREADS, "cases": []}
    for label, image in cases:
        row = {"case": label,
               "extract_brain": _time(lambda image=image: brain.extract_brain(image), args.repeat),
               "looks_skull_stripped": _time(
                   lambda image=image: stripped.looks_skull_stripped(image), args.repeat)}
        if label.startswith("TCGA"):
            ref = sitk.ReadImage(str(TCGA / "TCGA-FG-6692_t1c_brainmask.nii.gz"))
            mask = sitk.GetArrayFromImage(brain.extract_brain(image)) > 0
            want = sitk.GetArrayFromImage(ref) > 0
            row["dice_vs_reference"] = round(float(2 * (mask & want).sum()
                                                   / (mask.sum() + want.sum())), 4)
        print(label, row, flush=True)
        result["cases"].append(row)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

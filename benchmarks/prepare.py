"""Time `ricecli prepare` (or `classify`) end to end on a realistic case; print one JSON line last.

The case: two 256x256x180 1 mm T1c volumes (the shared BraTS T1c, or the shipped template when
../shared/data is absent, padded and moved rigidly: post-op axis-aligned, event oblique) and a
2.5 mm dose grid in the post-op frame, written as .nii.gz in a temp folder; with --skull-on the
real TCGA-FG-6692 pair (skull on, 5.5 mm slices: brain extraction on both) and a 60 Gy dose.
With --baseline DIR (a folder holding another `ricecli` package, e.g. a git worktree) each
repeat runs the baseline then this checkout (A B A B ...) on the shared machine, and the JSON
gives both medians, their ratio and the load average. Each run also times the CLI's start
(`import ricecli.cli`).

    python benchmarks/prepare.py [--repeat 3] [--preset edge] [--command classify]
                                 [--skull-on] [--baseline /tmp/old] [--out results/x.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
TCGA = ROOT.parent / "shared" / "data" / "mri" / "TCGA-FG-6692"


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


def build_skull_on_case(folder: Path) -> dict:
    """The real TCGA pair as post-op (t1) and event (t1c), and a 60 Gy dose in its frame."""
    sys.path.insert(0, str(ROOT))
    from ricecli.simulate.treatment import gaussian_dose

    for label, name in (("post_op", "TCGA-FG-6692_t1.nii.gz"),
                        ("event", "TCGA-FG-6692_t1c.nii.gz")):
        sitk.WriteImage(sitk.ReadImage(str(TCGA / name)), str(folder / f"{label}.nii.gz"), True)
    post = sitk.ReadImage(str(TCGA / "TCGA-FG-6692_t1.nii.gz"), sitk.sitkFloat32)
    sitk.WriteImage(gaussian_dose(post), str(folder / "dose.nii.gz"), True)
    return {"source": "TCGA-FG-6692 t1 / t1c (skull on, 0.9x0.9x5.5 mm)",
            "t1_size": list(post.GetSize())}


def run_once(folder: Path, out: Path, preset: str, command: str = "prepare",
             code: Path | None = None) -> dict:
    """One `ricecli prepare|classify` subprocess (the package in `code`, else this checkout):
    wall time, child CPU time and the stage timings."""
    target = ["--out", str(out), "--preset", preset] if command == "prepare" else \
        ["--json", str(out / "result.json")]
    cmd = [sys.executable, "-m", "ricecli.cli", command,
           "--t1", str(folder / "post_op.nii.gz"), "--t1", str(folder / "event.nii.gz"),
           "--dose", str(folder / "dose.nii.gz"), *target, "--overwrite"]
    env = {**os.environ, "PYTHONPATH": str(code or ROOT)}
    out.mkdir(exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=folder, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 3):  # 3: ran, QA failed (still a full run)
        raise SystemExit(f"ricecli {command} failed ({proc.returncode}): {proc.stderr.strip()}")
    if command == "prepare":
        qa = json.loads((out / "qa.json").read_text())
        stages, failed = qa["timings_s"], [k for k, v in qa["registration"].items()
                                           if v["likely_failed"]]
    else:
        record = json.loads((out / "result.json").read_text())
        stages, failed = record.get("timings_s", {}), []
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "stages_s": stages, "registrations_failed": failed}


def import_seconds(code: Path | None) -> float:
    """Wall time of `python -c "import ricecli.cli"` (the CLI's start before any command)."""
    env = {**os.environ, "PYTHONPATH": str(code or ROOT)}
    t0 = time.perf_counter()  # run in `code`: `-c` puts the working directory first on the path
    subprocess.run([sys.executable, "-c", "import ricecli.cli"], check=True, env=env,
                   cwd=code or ROOT)
    return time.perf_counter() - t0


def machine() -> dict:
    """CPU model, core count, versions: what a timing means depends on them."""
    import numpy
    import onnxruntime

    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version(),
            "simpleitk": sitk.Version_VersionString(), "onnxruntime": onnxruntime.__version__,
            "numpy": numpy.__version__}


def _summary(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    keys = [k for k in runs[0]["stages_s"] if isinstance(runs[0]["stages_s"][k], (int, float))]
    return {"wall_s": [round(w, 3) for w in walls],
            "wall_s_median": round(statistics.median(walls), 3), "wall_s_min": round(min(walls), 3),
            "cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 3),
            "import_s_median": round(statistics.median(r["import_s"] for r in runs), 3),
            "stages_s_median": {k: round(statistics.median(r["stages_s"][k] for r in runs), 3)
                                for k in keys},
            "registrations_failed": sorted({k for r in runs for k in r["registrations_failed"]})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--preset", default="edge")
    parser.add_argument("--command", choices=("prepare", "classify"), default="prepare")
    parser.add_argument("--skull-on", action="store_true", help="the real skull-on TCGA pair")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a folder holding the ricecli package to compare with (A B A B)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory(prefix="ricenet-bench-prepare-") as tmp:
        folder = Path(tmp)
        case = build_skull_on_case(folder) if args.skull_on else build_case(folder)
        for i in range(args.repeat):
            for name, code in (("baseline", args.baseline), ("current", None)):
                if name == "baseline" and code is None:
                    continue
                run = run_once(folder, folder / f"out_{name}", args.preset, args.command, code)
                run["import_s"] = import_seconds(code)
                runs[name].append(run)
                print(f"run {i} {name}: wall {run['wall_s']:.2f} s, cpu {run['cpu_s']:.2f} s, "
                      f"stages {run['stages_s']}", flush=True)
    result = {"benchmark": args.command, "preset": args.preset, "case": case,
              "machine": machine(), "repeat": args.repeat,
              "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
              **_summary(runs["current"]), "target_s": 6.0 if args.command == "prepare"
              or args.skull_on else 3.0}
    if runs["baseline"]:
        result["baseline"] = {"code": str(args.baseline), **_summary(runs["baseline"])}
        result["speedup_median"] = round(result["baseline"]["wall_s_median"]
                                         / result["wall_s_median"], 3)
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

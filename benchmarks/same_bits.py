"""Same bits before and after a change: run prepare, classify and explain of one code tree on
fixed cases and keep every number they produce; compare two such runs bit for bit.

    python benchmarks/same_bits.py run --code /tmp/base --cases DIR --out /tmp/bits/base
    python benchmarks/same_bits.py run --cases DIR --out /tmp/bits/new      # this checkout
    python benchmarks/same_bits.py compare /tmp/bits/base /tmp/bits/new

DIR holds one folder per case with post_op.nii.gz, event.nii.gz and dose.nii.gz (e.g. the
demo's `cases/`). What is compared: the prepared channels (post_op, event, dose .nii.gz), the
label, the calibrated and uncalibrated probabilities, each member's probabilities and the QA
verdict of classify, and the occlusion maps of explain (occlusion*.nii.gz), np.array_equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]


def _ricecli(code: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.run([sys.executable, "-m", "ricecli.cli", *args], env=env,
                          capture_output=True, text=True)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"ricecli {args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def numbers(record: dict) -> dict[str, object]:
    """The answer's numbers from a result JSON, whatever the layout of its member rows."""
    members = []
    for row in record.get("members") or []:
        members.append({k: v for k, v in row.items() if k.startswith("probabilities")})
    qa = record.get("qa") or {}
    return {"label": record.get("label"), "probabilities": record.get("probabilities"),
            "probabilities_uncalibrated": record.get("probabilities_uncalibrated"),
            "members": members, "verdict": qa.get("verdict")}


def run(code: Path, cases: Path, out: Path, explain: bool) -> None:
    """Every number and array the three commands give on each case, saved under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for case in sorted(p for p in cases.iterdir() if (p / "event.nii.gz").exists()):
        t1 = ["--t1", str(case / "post_op.nii.gz"), "--t1", str(case / "event.nii.gz"),
              "--dose", str(case / "dose.nii.gz")]
        work = out / case.name
        _ricecli(code, "prepare", *t1, "--out", str(work / "prepared"), "--overwrite")
        _ricecli(code, "classify", *t1, "--json", str(work / "result.json"), "--overwrite")
        if explain:
            _ricecli(code, "explain", *t1, "--out", str(work / "explain"), "--overwrite")
        print(f"{case.name}: done", flush=True)


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
            for p in sorted(folder.rglob("*.nii.gz"))}


def compare(a: Path, b: Path) -> int:
    """Print each difference; 0 when every array and number is the same bits."""
    differences = 0
    for case in sorted(p.name for p in a.iterdir() if p.is_dir()):
        arrays_a, arrays_b = _arrays(a / case), _arrays(b / case)
        for name in sorted(set(arrays_a) | set(arrays_b)):
            x, y = arrays_a.get(name), arrays_b.get(name)
            if x is None or y is None:
                print(f"{case}/{name}: only in {'b' if x is None else 'a'}")
                differences += 1
            elif x.shape != y.shape or not np.array_equal(x, y):
                diff = np.abs(x.astype(float) - y.astype(float)).max() if x.shape == y.shape \
                    else "shape"
                print(f"{case}/{name}: differs (max |a-b| {diff})")
                differences += 1
        na = numbers(json.loads((a / case / "result.json").read_text()))
        nb = numbers(json.loads((b / case / "result.json").read_text()))
        for key in na:
            if na[key] != nb[key]:
                print(f"{case}/result.json {key}: {na[key]} != {nb[key]}")
                differences += 1
        print(f"{case}: {len(arrays_a)} arrays, result numbers compared")
    print("same bits" if differences == 0 else f"{differences} differences")
    return 1 if differences else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("--code", type=Path, default=ROOT, help="the tree whose ricecli runs")
    r.add_argument("--cases", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--no-explain", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.what == "run":
        run(args.code, args.cases, args.out, not args.no_explain)
    else:
        raise SystemExit(compare(args.a, args.b))


if __name__ == "__main__":
    main()

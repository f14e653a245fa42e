"""Calibrate / re-check the input gate and the QA verdict on real and simulated pairs.

    python scripts/qa_calibration.py --sim-dir /tmp/qa-sim --out /tmp/qa-calibration.json

Same-patient pairs (must not fail): BraTS-GLI t1n -> t1c, BraTS-MET t1 -> t1c, TCGA t1 -> t1c
(../shared/data), each T1c against a rigidly moved copy of itself, and simulated cases
(`ricecli simulate`, NIfTI and DICOM). Different-patient pairs (must fail): every ordered pair
of the three real patients. Wrong inputs from issue 10 (must be refused, exit 2, or fail QA).
Each case runs through prepare_case (the edge model space) with a 60 Gy dose ball in the post-op
frame. Prints one JSON line per case and the pass/fail rates; docs/qa.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from ricecli.errors import RicenetError
from ricecli.prepare import CaseInputs, prepare_case
from ricecli.simulate.treatment import centred_dose
from ricecli.spec import PRESETS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mri"


def moved(image: sitk.Image, deg=(8, -5, 6), shift=(7, -5, 9)) -> sitk.Image:
    t = sitk.Euler3DTransform()
    t.SetCenter(image.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in image.GetSize()]))
    t.SetRotation(*np.deg2rad(deg))
    t.SetTranslation(shift)
    return sitk.Resample(image, image, t, sitk.sitkLinear, 0.0)


def run(name: str, kind: str, post, event, dose=None, tmp: Path = Path("."), **opts) -> dict:
    """prepare_case on one pair; images are written to tmp first, paths are used as they are."""
    paths = {}
    for role, item in (("post_op", post), ("event", event), ("dose", dose)):
        if isinstance(item, sitk.Image):
            paths[role] = tmp / f"{name.replace(' ', '_')}_{role}.nii.gz"
            sitk.WriteImage(item, str(paths[role]))
        else:
            paths[role] = item
    if paths["dose"] is None:
        paths["dose"] = tmp / f"{name.replace(' ', '_')}_dose.nii.gz"
        sitk.WriteImage(centred_dose(sitk.ReadImage(str(_first_file(paths["post_op"])),
                                                 sitk.sitkFloat32)), str(paths["dose"]))
    t0 = time.perf_counter()
    row = {"kind": kind, "name": name}
    try:
        report = prepare_case(CaseInputs(paths["post_op"], paths["event"], paths["dose"],
                                         **opts), PRESETS["edge"]).qa
        qa, regs = report.measures, report.measures["registration"]
        row.update(outcome=report.verdict, reasons=[f.message for f in report.reasons],
                   agreement=qa["agreement"]["post_op_event"],
                   ncc=regs["post_op_to_event"]["ncc"],
                   on_head=regs["post_op_to_event"]["on_head"],
                   template_on_head=regs["event_to_template"]["on_head"],
                   dose_coverage=qa["dose"]["coverage_of_brain"],
                   high_dose_in_brain=qa["dose"].get("high_dose_in_brain"),
                   max_in_brain_gy=qa["dose"]["max_in_brain_gy"])
    except RicenetError as err:
        row.update(outcome="refused", reasons=[err.one_line()])
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(row), flush=True)
    return row


def _first_file(path: Path) -> Path:
    """A file sitk can read for the dose grid: the image, or a DICOM series' folder via ricecli."""
    if Path(path).is_dir():
        from ricecli.io.volume import read_mr

        out = Path(tempfile.mkdtemp()) / "series.nii.gz"
        sitk.WriteImage(read_mr(path), str(out))
        return out
    return Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim-dir", type=Path, required=True)
    parser.add_argument("--n-sim", type=int, default=6)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only-wrong", action="store_true", help="only the wrong inputs")
    parser.add_argument("--only-doses", action="store_true",
                        help="only the dose pairs: each simulated case's own dose, another "
                        "case's dose, and the real RTDOSE with the real scans")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qa-cal-"))
    gli = DATA / "BraTS-GLI-00001-000"
    met = DATA / "BraTS-MET-00110-000"
    tcga = DATA / "TCGA-FG-6692"
    t1c = {"GLI": gli / "BraTS-GLI-00001-000-t1c.nii.gz", "MET": next(met.glob("*t1c.nii.gz")),
           "TCGA": tcga / "TCGA-FG-6692_t1c.nii.gz"}
    t1 = {"GLI": gli / "BraTS-GLI-00001-000-t1n.nii.gz", "MET": next(met.glob("*t1.nii.gz")),
          "TCGA": tcga / "TCGA-FG-6692_t1.nii.gz"}
    sims = {}
    for fmt in ("nifti", "dicom"):
        root = args.sim_dir / fmt
        if not (root / "manifest.csv").exists():
            subprocess.run([sys.executable, "-m", "ricecli.cli", "simulate", "--out", str(root),
                            "--n", str(args.n_sim if fmt == "nifti" else 2), "--seed", "7",
                            "--format", fmt], check=True, capture_output=True)
        sims[fmt] = sorted((root / "cases").iterdir())
    gli_t1c = t1c["GLI"]
    rows = []
    if args.only_doses:
        rows = dose_pairs(sims["nifti"], t1, t1c, tmp)
        args.out.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
        return
    if args.only_wrong:
        t1c, t1 = {}, {}
    for p in t1c:  # same patient
        rows.append(run(f"{p} T1 -> T1c", "same", t1[p], t1c[p], tmp=tmp))
        image = sitk.ReadImage(str(t1c[p]), sitk.sitkFloat32)
        rows.append(run(f"{p} T1c moved -> T1c", "same", moved(image), t1c[p], tmp=tmp))
    for fmt, cases in ({} if args.only_wrong else sims).items():
        for case in cases:
            ext = ".nii.gz" if fmt == "nifti" else ""
            dose = case / ("dose.nii.gz" if fmt == "nifti" else "RD.dose.dcm")
            rows.append(run(f"sim {fmt} {case.name}", "same", case / f"post_op{ext}",
                            case / f"event{ext}", dose, tmp=tmp))
    for a in t1c:  # different patients
        for b in t1c:
            if a != b:
                rows.append(run(f"{a} -> {b} (T1c)", "different", t1c[a], t1c[b], tmp=tmp))
    if t1:
        rows.append(run("GLI T1 -> MET T1", "different", t1["GLI"], t1["MET"], tmp=tmp))
    rows += wrong_inputs(gli_t1c, sims, tmp)
    summary = {}
    for kind in ("same", "different", "wrong"):
        got = [r for r in rows if r["kind"] == kind]
        summary[kind] = {"cases": len(got),
                         **{o: sum(r["outcome"] == o for r in got)
                            for o in ("pass", "warn", "fail", "refused")}}
    print(json.dumps(summary, indent=1))
    args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")


def dose_pairs(cases: list[Path], t1: dict, t1c: dict, tmp: Path) -> list[dict]:
    """Doses that fit the brain (each simulated case's own) and doses that do not: case j's dose
    with case i's scans (another patient, its plan in the frame of another scanner session),
    and the real Pinnacle RTDOSE (not of these patients) with each real T1 -> T1c pair."""
    rows = []
    for i, case in enumerate(cases):
        for j, other in enumerate(cases):
            kind = "own dose" if i == j else "other dose"
            rows.append(run(f"sim {case.name} + dose of {other.name}", kind,
                            case / "post_op.nii.gz", case / "event.nii.gz",
                            other / "dose.nii.gz", tmp=tmp))
    rtdose = DATA.parent / "rtdose" / "pinnacle" / "RD.pinnacle.dcm"
    for p in t1c:
        rows.append(run(f"{p} T1 -> T1c + Pinnacle RTDOSE", "other dose", t1[p], t1c[p],
                        rtdose, tmp=tmp))
    return rows


def wrong_inputs(t1c: Path, sims: dict, tmp: Path) -> list[dict]:
    """The wrong inputs of issue 10: each must be refused or fail QA."""
    rows = []
    post = sitk.ReadImage(str(t1c), sitk.sitkFloat32)
    event = moved(post, (3, 2, -4), (4, 3, -2))
    dose = centred_dose(post)
    head = sitk.GetArrayFromImage(post) > 0
    hu = np.where(head, 40.0 + sitk.GetArrayFromImage(post) / 100.0, -1000.0)
    hu[head & ~sitk.GetArrayFromImage(sitk.BinaryErode(sitk.GetImageFromArray(
        head.astype(np.uint8)), [4, 4, 4])).astype(bool)] = 1500.0
    ct = sitk.GetImageFromArray(hu.astype(np.float32))
    ct.CopyInformation(post)
    rows.append(run("CT as the post-op --t1", "wrong", ct, event, dose, tmp=tmp))
    rows.append(run("dose as the event --t1", "wrong", post, dose, dose, tmp=tmp))
    rows.append(run("event T1c as --dose, cGy", "wrong", post, event, event, tmp=tmp,
                    dose_unit="cGy"))
    cube = sitk.GetImageFromArray(np.pad(np.full((4, 4, 4), 500.0, np.float32), 2))
    cube.SetSpacing((30.0, 30.0, 30.0))
    cube.SetOrigin((-105.0, -105.0, -105.0))
    rows.append(run("8^3 phantom at 30 mm as the event", "wrong", post, cube, dose, tmp=tmp))
    nii = tmp / "pix0.nii"
    sitk.WriteImage(event, str(nii))
    raw = bytearray(nii.read_bytes())
    raw[80:92] = np.zeros(3, "<f4").tobytes()
    nii.write_bytes(bytes(raw))
    rows.append(run("NIfTI with pixdim 0 as the event", "wrong", post, nii, dose, tmp=tmp))
    low = centred_dose(post, peak_gy=0.58, sigma_mm=60.0)  # the 0.58 Gy plan
    size = list(low.GetSize())
    start = [0, 0, int(size[2] * 0.45)]
    size[2] = max(2, int(size[2] * 0.12))  # a slab: ~13 % of the brain
    rows.append(run("dose covering ~13% of the brain, 0.58 Gy", "wrong", post, event,
                    sitk.RegionOfInterest(low, size, start), tmp=tmp))
    rows.append(run("dose covering the brain, 0.58 Gy", "wrong", post, event, low, tmp=tmp))
    case = sims["dicom"][0]
    swapped = tmp / "swapped"
    for role, date in (("post_op", "20251001"), ("event", "20250301")):
        (swapped / role).mkdir(parents=True, exist_ok=True)
        for f in (case / role).iterdir():
            ds = pydicom.dcmread(f)
            ds.StudyDate = ds.SeriesDate = date
            ds.save_as(swapped / role / f.name)
    rows.append(run("visits swapped (DICOM dates)", "wrong", swapped / "post_op",
                    swapped / "event", case / "RD.dose.dcm", tmp=tmp))
    return rows


if __name__ == "__main__":
    main()

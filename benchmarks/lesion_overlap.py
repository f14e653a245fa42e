"""Does the occlusion map show the lesion? On simulated cases, where the lesion is known.

For each simulated case (`ricecli simulate`, default settings) the shipped model classifies
and explains it exactly as `ricecli explain` does (16 mm cubes, calibrated delta p), and the
model-space map is compared with the simulator's true lesion mask carried into model space:
whether the map's top 5 % (brain voxels by |delta p|) touches the lesion, what share of it lies
inside, the distance from the map's strongest voxel to the lesion, whether the map would be
painted at all (its strongest |delta p| at least the members' SD), and how well the lesion
`explain` finds by itself (new enhancement post-op -> event) overlaps the true one (Dice).
A fact for users (docs/explain.md), not a target.

    python benchmarks/lesion_overlap.py [--n 20] [--seed 11] [--out results/lesion_overlap.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ricecli import pipeline
from ricecli.explain.lesion import Lesion, find_lesion, lesion_from_mask, map_on_lesion
from ricecli.explain.occlusion import OcclusionSettings, explain_case
from ricecli.inference.engine import Engine
from ricecli.inference.model import LoadedModel
from ricecli.prepare import CaseInputs, PreparedCase


def true_lesion(mask_path: Path, case: PreparedCase) -> Lesion:
    """The simulator's lesion mask (event grid) in model space."""
    return lesion_from_mask(sitk.ReadImage(str(mask_path)), mask_path, case)


def distance_mm(delta_p: np.ndarray, lesion: np.ndarray, spacing_zyx: np.ndarray) -> float:
    """mm from the map's strongest voxel (largest |delta p|) to the nearest lesion voxel."""
    peak = np.unravel_index(int(np.argmax(np.abs(delta_p))), delta_p.shape)
    to_lesion = ndimage.distance_transform_edt(~lesion, sampling=spacing_zyx)
    return float(to_lesion[peak])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (0 when both are empty)."""
    total = int(a.sum() + b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 0.0


def one_case(row: dict[str, str], root: Path, model: LoadedModel,
             engine: Engine) -> dict[str, object]:
    """Classify and explain one case; compare its map with the true and the found lesion."""
    inputs = CaseInputs(post_op=root / row["post_op"], event=root / row["event"],
                        dose=root / row["dose"])
    start = time.perf_counter()
    result = pipeline.classify(inputs, model, engine)
    out: dict[str, object] = {"case_id": row["case_id"], "truth": row["label"],
                              "lesion_site": row["lesion_site"],
                              "predicted": result.record["label"],
                              "qa_verdict": result.record["qa"].get("verdict")}
    if not result.labelled:
        return {**out, "explained": False}
    case = result.case
    explained = explain_case(case, model, engine, OcclusionSettings())
    delta_p = explained.model_maps.maps["all"]
    truth, found = true_lesion(root / row["lesion_mask"], case), find_lesion(case)
    on_truth = map_on_lesion(delta_p, truth, case.brain_mask)
    brain = np.asarray(case.brain_mask) > 0
    spread = float(result.record["uncertainty"]["member_sd_p_recurrence"])
    max_abs = float(np.abs(delta_p).max())
    spacing = np.asarray(case.reference.GetSpacing()[::-1], float)
    return {**out, "explained": True,
            "p_recurrence": round(float(result.record["probabilities"]["recurrence"]), 4),
            "max_abs_delta_p": round(max_abs, 4), "members_sd_p": round(spread, 4),
            "painted": max_abs >= spread,
            "top5_touches_lesion": on_truth["top_touches_lesion"],
            "top5_fraction_in_lesion": on_truth["top_fraction_in_lesion"],
            "lesion_share_of_brain": round(float((truth.mask & brain).sum() / brain.sum()), 4),
            "peak_to_lesion_mm": round(distance_mm(delta_p, truth.mask, spacing), 1),
            "map_in_lesion": on_truth["lesion"], "map_elsewhere": on_truth["elsewhere"],
            "found_lesion_dice": round(dice(found.mask, truth.mask), 3),
            "found_lesion_voxels": int(found.mask.sum()),
            "seconds": round(time.perf_counter() - start, 1)}


def summarise(rows: list[dict[str, object]]) -> dict[str, object]:
    """The figures docs/explain.md quotes."""
    done = [r for r in rows if r.get("explained")]

    def share(key: str) -> float:
        return round(float(np.mean([bool(r[key]) for r in done])), 3) if done else 0.0

    def median(key: str) -> float:
        values = [float(str(r[key])) for r in done]
        return round(float(np.median(values)), 4) if values else 0.0

    return {"cases": len(rows), "explained": len(done),
            "top5_touches_lesion_share": share("top5_touches_lesion"),
            "median_top5_fraction_in_lesion": median("top5_fraction_in_lesion"),
            "median_lesion_share_of_brain": median("lesion_share_of_brain"),
            "median_peak_to_lesion_mm": median("peak_to_lesion_mm"),
            "painted_share": share("painted"),
            "median_max_abs_delta_p": median("max_abs_delta_p"),
            "median_members_sd_p": median("members_sd_p"),
            "median_found_lesion_dice": median("found_lesion_dice"),
            "found_lesion_dice_at_least_0_5_share": round(float(np.mean(
                [float(str(r["found_lesion_dice"])) >= 0.5 for r in done])), 3) if done else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" /
                    "lesion_overlap.json")
    args = ap.parse_args()
    start = time.perf_counter()
    model, engine = pipeline.open_model(None, "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sim"
        subprocess.run(["ricecli", "simulate", "--n", str(args.n), "--seed", str(args.seed),
                        "--out", str(root)], check=True, capture_output=True)
        with open(root / "manifest.csv", newline="") as f:
            manifest = list(csv.DictReader(f))
        for row in manifest:
            rows.append(one_case(row, root, model, engine))
            print(json.dumps(rows[-1]), flush=True)
    record = {"what": __doc__.splitlines()[0],
              "command": f"python benchmarks/lesion_overlap.py --n {args.n} --seed {args.seed}",
              "settings": {"cube_mm": 16, "stride_mm": 16, "top_share": 0.05,
                           "model": model.summary()},
              "summary": summarise(rows), "cases": rows,
              "seconds": round(time.perf_counter() - start, 1),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}
    args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(json.dumps(record["summary"], indent=1))


if __name__ == "__main__":
    main()

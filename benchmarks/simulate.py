"""Seconds per simulated case on ONE core (generation + writing), default resolution.

    python benchmarks/simulate.py --cases 6 --seed 0 [--format nifti|dicom] [--voxel-scale 1]
        [--skull-on-share 0.5]

Prints one line per case, then a final JSON line (wall and CPU seconds per case; on a shared
machine the CPU figure is the fairer one), also split by skull-on / skull-stripped cases.
Target (issue 3): <= 3 s per case per core.

    python benchmarks/simulate.py --calibrate 100 --jobs 2

instead draws 100 patients' treatment geometry (no scans), re-derives the risk-factor
standardisation and estimates each channel subset's ideal-observer accuracy / macro F1
(docs/simulation.md, "Achievable accuracy").
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

from ricecli.geometry.template import load_template
from ricecli.simulate.case import SimConfig, simulate_case
from ricecli.simulate.cohort import write_case


def _geometry(index: int) -> dict:
    """Risk factors and event-visible proxies of one patient (no scans rendered)."""
    import numpy as np

    from ricecli.simulate.anatomy import build_anatomy
    from ricecli.simulate.case import case_rng
    from ricecli.simulate.treatment import place_resection, plan_dose

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    config = SimConfig()
    rng = case_rng(10_000 + index, 0)
    anat = build_anatomy(rng, config.work_mm, config.warp_mm)
    res = place_resection(rng, anat, config.residual_fraction)
    hypo = bool(rng.random() < config.hypofractionated_fraction)
    plan = plan_dose(rng, anat, res, "40.05Gy/15fx" if hypo else "60Gy/30fx")
    idx = anat.grid.TransformPhysicalPointToIndex(res.centre_mm.tolist())
    return {
        "regimen_60": float(not hypo),
        "log_v95_cm3": float(np.log(max(plan.v95_cm3, 1.0))),
        "periventricular_v95": plan.periventricular_v95,
        "residual_cm3": res.residual_cm3,
        "hotspot": plan.hotspot,
        "cavity_radius_mm": res.radius_mm,
        "cavity_ventricle_mm": float(anat.dist_ventricles_mm[idx[2], idx[1], idx[0]]),
        "has_residual": float(res.residual_cm3 > 0),
    }


def _fit_logistic(x, y, iters: int = 25):
    """Plain IRLS logistic regression with a tiny ridge (numpy only)."""
    import numpy as np

    x = np.c_[np.ones(len(x)), x]
    w = np.zeros(x.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-x @ w))
        hess = x.T @ (x * (p * (1 - p))[:, None]) + 1e-3 * np.eye(x.shape[1])
        w += np.linalg.solve(hess, x.T @ (y - p))
    return w


def _macro_f1(y, pred) -> float:
    import numpy as np

    f1 = []
    for c in (0, 1):
        tp = np.sum((pred == c) & (y == c))
        f1.append(2 * tp / max(np.sum(pred == c) + np.sum(y == c), 1))
    return float(np.mean(f1))


def calibrate(n_geometry: int, jobs: int, draws: int = 40, cache: Path | None = None) -> dict:
    """Feature statistics and the ideal observer's accuracy per channel subset."""
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

    from ricecli.simulate import risk

    if cache and cache.is_file():
        geo = json.loads(cache.read_text())[:n_geometry]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            geo = list(pool.map(_geometry, range(n_geometry)))
        if cache:
            cache.write_text(json.dumps(geo))
    keys = list(risk.FEATURE_STATS)
    stats = {k: (round(float(np.mean([g[k] for g in geo])), 4),
                 round(float(np.std([g[k] for g in geo])), 4)) for k in keys}
    rng = np.random.default_rng(0)
    rows = []
    sites = list(risk.SITES["recurrence"])
    for g in geo:
        z = risk.risk_features(bool(g["regimen_60"]), float(np.exp(g["log_v95_cm3"])),
                               g["periventricular_v95"], g["residual_cm3"], g["hotspot"])
        prior = risk.prior_logit_rice(z, "standard", 0.5)
        for _ in range(draws):
            label = "RICE" if rng.random() < risk.sigmoid(prior) else "recurrence"
            probs = [risk.SITES[label][s] for s in sites]
            site = sites[int(rng.choice(len(sites), p=probs))]
            t = float(rng.beta(*risk.MORPHOLOGY["standard"][label]))
            multi = bool(rng.random() < risk.MULTIFOCAL[label])
            lr = risk.appearance_log_lr(site, t, multi, "standard")
            rows.append({**g, **{f"z_{k}": v for k, v in z.items()}, "y": label == "recurrence",
                         "p": risk.posterior_recurrence(prior, lr),
                         "logit_t": np.log(t / (1 - t)), "multi": float(multi),
                         "near_cavity": float(site == "cavity_margin"),
                         "far": float(site in ("marginal", "distant")),
                         "distant": float(site == "distant"),
                         "pv_site": float(site == "periventricular")})
    y = np.array([r["y"] for r in rows], float)
    visible = {  # what each channel shows (after preparation, in model space)
        "dose": ["z_regimen_60", "z_log_v95_cm3", "z_periventricular_v95", "z_hotspot"],
        "post_op": ["z_residual_cm3", "has_residual", "cavity_radius_mm", "cavity_ventricle_mm"],
        "event": ["logit_t", "multi", "near_cavity", "far", "pv_site", "cavity_radius_mm",
                  "cavity_ventricle_mm"],
    }
    # event + dose also tells marginal (in the fall-off) from distant (out of field)
    subsets = {"event": ["event"], "post_op": ["post_op"], "dose": ["dose"],
               "post_op+event": ["post_op", "event"], "post_op+dose": ["post_op", "dose"],
               "event+dose": ["event", "dose"], "all": ["post_op", "event", "dose"]}
    half = len(rows) // 2
    order = rng.permutation(len(rows))
    train, test = order[:half], order[half:]
    result = {}
    for name, chans in subsets.items():
        cols = sorted({c for ch in chans for c in visible[ch]})
        if "event" in chans and "dose" in chans:
            cols.append("distant")
        x = np.array([[r[c] for c in cols] for r in rows], float)
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-9
        x = (x - mu) / sd
        w = _fit_logistic(x[train], y[train])
        pred = (np.c_[np.ones(len(x)), x][test] @ w > 0).astype(float)
        result[name] = {"accuracy": round(float(np.mean(pred == y[test])), 3),
                        "macro_f1": round(_macro_f1(y[test], pred), 3)}
    p = np.array([r["p"] for r in rows])
    bayes = (p > 0.5).astype(float)
    result["bayes_all_latents"] = {"accuracy": round(float(np.mean(bayes == y)), 3),
                                   "macro_f1": round(_macro_f1(y, bayes), 3)}
    return {"benchmark": "simulate_calibration", "geometries": n_geometry, "draws": draws,
            "recurrence_share": round(float(y.mean()), 3), "feature_stats": stats,
            "ideal_observer": result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", default="nifti", choices=("nifti", "dicom"))
    ap.add_argument("--voxel-scale", type=float, default=1.0)
    ap.add_argument("--skull-on-share", type=float, default=SimConfig.skull_on_share)
    ap.add_argument("--calibrate", type=int, default=0, metavar="N_GEOMETRY")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--geometry-cache", type=Path, default=None,
                    help="JSON file to keep the drawn geometries in (re-used when present)")
    args = ap.parse_args()
    if args.calibrate:
        print(json.dumps(calibrate(args.calibrate, args.jobs, cache=args.geometry_cache)))
        return
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # one core, as --jobs workers run
    load_template()  # once per worker process; not part of a case
    config = SimConfig(fmt=args.format, voxel_scale=args.voxel_scale,
                       skull_on_share=args.skull_on_share)
    gen, write, total, cpu, skull = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.cases):
            c0 = time.process_time()
            t0 = time.perf_counter()
            case = simulate_case(i, args.seed, config)
            t1 = time.perf_counter()
            write_case(case, Path(tmp), args.format)
            t2 = time.perf_counter()
            gen.append(t1 - t0)
            write.append(t2 - t1)
            total.append(t2 - t0)
            cpu.append(time.process_time() - c0)
            skull.append(bool(case.truth["skull_on"]))
            vox = sum(im.GetNumberOfPixels() for im in (case.post_op, case.event))
            kind = "skull on" if skull[-1] else "stripped"
            print(f"{case.case_id} {case.label:10s} {kind:8s} generate {t1 - t0:5.2f} s  "
                  f"write {t2 - t1:5.2f} s  cpu {cpu[-1]:5.2f} s  ({vox / 1e6:.1f} M MR voxels)",
                  flush=True)

    def cpu_mean(on: bool) -> float | None:
        values = [c for c, s in zip(cpu, skull, strict=True) if s == on]
        return round(statistics.mean(values), 3) if values else None

    print(json.dumps({
        "benchmark": "simulate",
        "cases": args.cases,
        "format": args.format,
        "voxel_scale": args.voxel_scale,
        "threads": 1,
        "seconds_per_case_mean": round(statistics.mean(total), 3),
        "seconds_per_case_median": round(statistics.median(total), 3),
        "cpu_s_per_case_mean": round(statistics.mean(cpu), 3),
        "generate_s_mean": round(statistics.mean(gen), 3),
        "write_s_mean": round(statistics.mean(write), 3),
        "skull_on_share": args.skull_on_share,
        "skull_on_cases": sum(skull),
        "cpu_s_skull_on_mean": cpu_mean(True),
        "cpu_s_skull_stripped_mean": cpu_mean(False),
        "target_s": 3.0,
    }))


if __name__ == "__main__":
    main()

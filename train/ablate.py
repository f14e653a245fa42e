"""`python -m train ablate`: the paper's channel ablation, all 7 subsets on the same folds.

The cohort is prepared once (the cache key does not depend on the channels); each subset
is a normal fit run in DIR/<subset>/ reading DIR/folds.json, then evaluated on the test
split. `--jobs J` trains J subsets at once in separate processes (a GPU is far from full
with one small 3D ResNet). Writes DIR/ablation.md and DIR/ablation.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ricecli.errors import OutputError, RicenetError
from train.data import default_cache_dir, prepare_cohort, read_manifest
from train.evaluate import run_evaluate
from train.fit import FitConfig, console, run_fit, run_spec
from train.folds import make_folds, save_folds

SUBSETS: list[tuple[str, ...]] = [
    ("event",), ("post_op",), ("dose",), ("post_op", "event"), ("post_op", "dose"),
    ("event", "dose"), ("post_op", "event", "dose"),
]
# RICE-NET (arXiv 2603.11827) ablation, cross-validation macro F1.
PAPER_CV_F1 = {"event": 0.58, "post_op": 0.70, "dose": 0.78, "post_op+event": 0.70,
               "post_op+dose": 0.83, "event+dose": 0.83, "post_op+event+dose": 0.80}


def subset_name(channels: tuple[str, ...]) -> str:
    return "+".join(channels)


def _fit_subprocess(cfg: FitConfig) -> None:
    """Run one fit in its own process (used with --jobs > 1)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out.parent / f".{out.name}.config.json"
    cfg_path.write_text(json.dumps(asdict(cfg)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "train", "fit-config", str(cfg_path)], env=env,
                         capture_output=True, text=True)
    (out.parent / f".{out.name}.log").write_text(res.stdout + res.stderr)
    if res.returncode:
        tail = (res.stderr.strip().splitlines() or ["?"])[-1]
        raise RicenetError(f"subset {out.name} failed: {tail}", out.parent / f".{out.name}.log")


def run_ablate(cfg: FitConfig, jobs: int = 1, subsets: list[tuple[str, ...]] | None = None,
               n_boot: int = 1000) -> dict:
    """Train and evaluate every subset; returns ablation.json's content."""
    t0 = time.time()
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise OutputError("ablation folder exists and is not empty", out, "choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    subsets = subsets or SUBSETS
    cache = cfg.cache or str(default_cache_dir())
    records = read_manifest(cfg.manifest)
    spec = run_spec(cfg)
    console.log(f"preparing {len(records)} cases once for all subsets ({cfg.workers} workers)")
    prep = prepare_cohort(records, spec, cache, cfg.workers)
    folds = make_folds(records, cfg.folds, cfg.seed)
    save_folds(folds, out / "folds.json")
    has_test = any(r.split == "test" for r in records)
    budget = 0.0
    if cfg.max_minutes:  # share what is left among the subsets, keep ~10 % for evaluation
        left = cfg.max_minutes - (time.time() - t0) / 60
        budget = max(0.1, 0.9 * left * min(jobs, len(subsets)) / len(subsets))
    runs = [replace(cfg, channels=s, out=str(out / subset_name(s)), cache=cache,
                    folds_file=str(out / "folds.json"), max_minutes=budget) for s in subsets]
    if jobs <= 1:
        for r in runs:
            run_fit(r)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(_fit_subprocess, runs))
    rows = []
    for s, r in zip(subsets, runs, strict=True):
        summary = json.loads((Path(r.out) / "summary.json").read_text())
        row = {"channels": subset_name(s), "cv_macro_f1_mean": summary["cv_macro_f1_mean"],
               "cv_macro_f1_sd": summary["cv_macro_f1_sd"],
               "fold_f1": [f["val_macro_f1"] for f in summary["folds"]],
               "epochs_done": [f["epochs_done"] for f in summary["folds"]],
               "train_s": summary["wall_s"], "paper_cv_macro_f1": PAPER_CV_F1.get(subset_name(s))}
        if has_test:
            ev = run_evaluate(r.out, cfg.manifest, "test", cache, cfg.device, cfg.workers,
                              n_boot=n_boot, seed=cfg.seed, quiet=True)
            row["test_macro_f1_vote"] = ev["majority_vote"]["metrics"]["macro_f1"]
            row["test_macro_f1_vote_ci95"] = ev["majority_vote"]["ci95"]["macro_f1"]
            row["test_auc"] = ev["majority_vote"]["metrics"]["auc"]
        rows.append(row)
    result = {"manifest": str(cfg.manifest), "n_cv": folds["n_cases"],
              "n_test": sum(r.split == "test" for r in records), "folds": cfg.folds,
              "preset": cfg.preset, "epochs": cfg.epochs, "seed": cfg.seed, "jobs": jobs,
              "max_minutes": cfg.max_minutes, "prepare": prep,
              "wall_s": round(time.time() - t0, 1), "rows": rows}
    (out / "ablation.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "ablation.md").write_text(ablation_markdown(result))
    console.print(ablation_markdown(result))
    return result


def ablation_markdown(result: dict) -> str:
    """The paper-style table: ours beside RICE-NET's CV macro F1."""
    lines = [f"Channel ablation: {result['n_cv']} CV cases in {result['folds']} folds, "
             f"{result['n_test']} test cases, preset {result['preset']}, "
             f"{result['epochs']} epochs max, seed {result['seed']}, "
             f"{result['wall_s'] / 60:.1f} min in all.", "",
             "| channels | CV macro F1 (mean ± sd over folds) | test macro F1, majority vote "
             "[95% CI] | paper CV macro F1 |", "|---|---|---|---|"]
    for r in result["rows"]:
        test = "—"
        if "test_macro_f1_vote" in r:
            lo, hi = r["test_macro_f1_vote_ci95"]
            test = f"{r['test_macro_f1_vote']:.2f} [{lo:.2f}, {hi:.2f}]"
        paper = r["paper_cv_macro_f1"]
        lines.append(f"| {r['channels']} | {r['cv_macro_f1_mean']:.2f} ± "
                     f"{r['cv_macro_f1_sd']:.2f} | {test} | "
                     f"{'—' if paper is None else f'{paper:.2f}'} |")
    best = max(result["rows"], key=lambda r: r["cv_macro_f1_mean"])
    lines += ["", f"Best CV subset: {best['channels']} "
              f"({best['cv_macro_f1_mean']:.2f}); mean epochs done per fold: "
              f"{np.mean([np.mean(r['epochs_done']) for r in result['rows']]):.1f}.",
              "CV macro F1 is each fold's best-epoch validation score (the model is "
              "selected on it, so it is optimistic, as a CV number in the paper's protocol "
              "is)."]
    return "\n".join(lines) + "\n"

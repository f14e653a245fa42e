"""`python -m train evaluate`: the fold ensemble on held-out cases, or out-of-fold on cv.

--split test: every fold's best model predicts every test case; the ensemble answers by
majority vote (the paper) and by mean probability. --split cv: each fold's model predicts
its own validation cases (out-of-fold). Writes RUN/eval-<split>/metrics.json and
per_case.csv; AUC always uses the mean probability of recurrence.

Calibration (when RUN/calibration.json exists): Brier score and expected calibration error
(10 equal-width bins of p(recurrence)) with bootstrap 95 % CIs, raw and calibrated (the
temperature applied to each member, then the mean, as ricecli does), the uncertainty rule's
flag rate and accuracy on flagged/unflagged cases, and RUN/eval-<split>/reliability.png.
On --split cv the temperature was fitted on these very cases (one parameter: in-sample).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ricecli.errors import InputError, ModelError
from ricecli.io.files import write_text_atomic
from train.calibrate import calibration_metrics, load_calibration, reliability_png
from train.checkpoint import load_checkpoint
from train.data import default_cache_dir, load_cohort, prepare_cohort, read_manifest
from train.dist import resolve_device
from train.metrics import binary_metrics, bootstrap_ci, confusion, majority_vote

console = Console(stderr=True)


def fold_checkpoints(run: Path) -> list[Path]:
    paths = sorted(run.glob("fold*/best.safetensors"), key=lambda p: int(p.parent.name[4:]))
    if not paths:
        raise ModelError("no fold checkpoints (fold*/best.safetensors)", run,
                         "give a run folder written by 'python -m train fit'")
    return paths


def _score(y: np.ndarray, member_probs: np.ndarray, n_boot: int, seed: int) -> dict:
    mean_p = member_probs.mean(axis=1)
    out = {}
    for mode, pred in (("majority_vote", majority_vote(member_probs)),
                       ("mean_probability", (mean_p[:, 1] >= 0.5).astype(int))):
        out[mode] = {"metrics": binary_metrics(y, pred, mean_p[:, 1]),
                     "ci95": bootstrap_ci(y, pred, mean_p[:, 1], n=n_boot, seed=seed),
                     "confusion": confusion(y, pred).tolist(), "pred": pred}
    return out


def run_evaluate(run: str | Path, manifest: str | Path, split: str = "test", cache: str = "",
                 device: str = "auto", workers: int = 4, n_boot: int = 2000,
                 seed: int = 0, quiet: bool = False) -> dict:
    """Evaluate RUN on the manifest's `split` cases; returns metrics.json's content."""
    run = Path(run)
    if split not in ("test", "cv"):
        raise InputError(f"unknown split {split!r}", fix="use --split test or --split cv")
    ckpts = [load_checkpoint(p) for p in fold_checkpoints(run)]
    spec = ckpts[0].spec
    records = [r for r in read_manifest(manifest) if r.split == split]
    if not records:
        raise InputError(f"manifest has no {split} cases", manifest,
                         "set the split column to test for held-out cases")
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
    cache = cache or config.get("cache") or str(default_cache_dir())
    prepare_cohort(records, spec, cache, workers)
    data = load_cohort(records, spec, cache, workers)
    dev = resolve_device(device)
    x = torch.from_numpy(data.x).to(dev)
    from train.loop import predict

    nets = [c.network().to(dev) for c in ckpts]
    if split == "test":
        idx = list(range(len(records)))
        member = np.stack([predict(n, x, idx, 8, False, dev) for n in nets], axis=1)
        keep = np.arange(len(records))
    else:
        folds = json.loads((run / "folds.json").read_text())
        member = np.full((len(records), 1, 2), np.nan)
        pos = {c: i for i, c in enumerate(data.case_ids)}
        for ck, net in zip(ckpts, nets, strict=True):
            idx = [pos[c] for c in folds["val"][ck.fold] if c in pos]
            member[idx, 0] = predict(net, x, idx, 8, False, dev)
        keep = np.flatnonzero(~np.isnan(member[:, 0, 0]))
        member = member[keep]
    y = data.y[keep]
    scored = _score(y, member, n_boot, seed)
    out_dir = run / f"eval-{split}"
    out_dir.mkdir(exist_ok=True)
    cal_report, per_case_cal = calibration_report(run, y, member, spec.classes, n_boot, seed,
                                                  out_dir, split)
    _write_cases(out_dir / "per_case.csv", [data.case_ids[i] for i in keep], y, member, scored,
                 per_case_cal)
    result = {"split": split, "n_cases": int(len(y)), "members": len(ckpts),
              "n_recurrence": int(y.sum()), "n_rice": int(len(y) - y.sum()),
              "channels": list(spec.channels), "bootstrap": n_boot,
              **{m: {k: v for k, v in s.items() if k != "pred"} for m, s in scored.items()},
              "calibration": cal_report}
    write_text_atomic(out_dir / "metrics.json", json.dumps(result, indent=1) + "\n")
    if not quiet:
        _print(result)
    return result


def calibration_report(run: Path, y: np.ndarray, member: np.ndarray, classes, n_boot: int,
                       seed: int, out_dir: Path, split: str) -> tuple[dict | None, dict]:
    """Brier/ECE raw vs calibrated, the uncertainty flag's figures, the reliability PNG."""
    from ricecli.inference.calibration import calibrate_members, uncertainty

    path = run / "calibration.json"
    raw = member.mean(axis=1)[:, 1]
    if not path.is_file():
        reliability_png({"raw": (raw, y)}, out_dir / "reliability.png",
                        f"{split}: {len(y)} cases (no calibration.json)")
        return None, {}
    cal = load_calibration(path)
    member_cal = calibrate_members(member, cal)
    mean_cal = member_cal.mean(axis=1)
    p_cal = mean_cal[:, 1]
    flags = [uncertainty(member_cal[i], mean_cal[i], cal, tuple(classes)) for i in range(len(y))]
    uncertain = np.array([f["uncertain"] for f in flags], bool)
    pred = (p_cal >= 0.5).astype(int)
    covered = [classes[int(t)] in f.get("prediction_set", []) for t, f in zip(y, flags,
                                                                                strict=True)]

    def acc(sel: np.ndarray) -> float | None:
        return float((pred[sel] == y[sel]).mean()) if sel.any() else None

    report = {
        "calibration": {"temperature": cal.temperature, "conformal_qhat": cal.conformal_qhat,
                        "conformal_alpha": cal.conformal_alpha, "n_oof_cases": cal.n_cases},
        "raw": calibration_metrics(raw, y, n_boot, seed),
        "calibrated": calibration_metrics(p_cal, y, n_boot, seed),
        "metrics_calibrated_mean": binary_metrics(y, pred, p_cal),
        "uncertain_fraction": float(uncertain.mean()),
        "accuracy_certain": acc(~uncertain), "accuracy_uncertain": acc(uncertain),
        "n_uncertain": int(uncertain.sum()),
        "conformal_coverage": float(np.mean(covered)),
        "mean_set_size": float(np.mean([len(f.get("prediction_set", [])) for f in flags])),
        "in_sample": split == "cv",
        "ece_bins": 10,
    }
    reliability_png({"raw": (raw, y), f"calibrated (T={cal.temperature:.2f})": (p_cal, y)},
                    out_dir / "reliability.png", f"{split}: {len(y)} cases, {member.shape[1]} "
                    "member(s)")
    return report, {"p_cal": p_cal, "uncertain": uncertain}


def _write_cases(path: Path, ids: list[str], y: np.ndarray, member: np.ndarray,
                 scored: dict, cal: dict | None = None) -> None:
    cal = cal or {}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        m = member.shape[1]
        extra = ["p_recurrence_calibrated", "uncertain"] if cal else []
        w.writerow(["case_id", "label", "p_recurrence_mean", "votes_recurrence", "members",
                    "pred_majority_vote", "pred_mean_probability",
                    *[f"p_recurrence_member{k}" for k in range(m)], *extra])
        votes = member.argmax(axis=2).sum(axis=1)
        for i, cid in enumerate(ids):
            more = [f"{cal['p_cal'][i]:.6f}", int(cal["uncertain"][i])] if cal else []
            w.writerow([cid, int(y[i]), f"{member[i, :, 1].mean():.6f}", int(votes[i]), m,
                        int(scored["majority_vote"]["pred"][i]),
                        int(scored["mean_probability"]["pred"][i]),
                        *[f"{p:.6f}" for p in member[i, :, 1]], *more])


def _print(result: dict) -> None:
    t = Table(title=f"{result['split']}: {result['n_cases']} cases, {result['members']} members")
    t.add_column("metric")
    for mode in ("majority_vote", "mean_probability"):
        t.add_column(mode.replace("_", " "))
    for k in result["majority_vote"]["metrics"]:
        cells = []
        for mode in ("majority_vote", "mean_probability"):
            v, (lo, hi) = result[mode]["metrics"][k], result[mode]["ci95"][k]
            cells.append(f"{v:.3f} [{lo:.3f}, {hi:.3f}]")
        t.add_row(k, *cells)
    Console().print(t)
    cal = result.get("calibration")
    if cal:
        lines = []
        for kind in ("raw", "calibrated"):
            c = cal[kind]
            lines.append(f"{kind:>10}: Brier {c['brier']:.3f} [{c['ci95']['brier'][0]:.3f}, "
                         f"{c['ci95']['brier'][1]:.3f}]  ECE {c['ece']:.3f} "
                         f"[{c['ci95']['ece'][0]:.3f}, {c['ci95']['ece'][1]:.3f}]")
        acc = ", ".join(f"{k} {cal[k]:.3f}" for k in ("accuracy_certain", "accuracy_uncertain")
                        if cal[k] is not None)
        lines.append(f"temperature {cal['calibration']['temperature']:.3f}; uncertain "
                     f"{cal['n_uncertain']}/{result['n_cases']} ({acc}); conformal coverage "
                     f"{cal['conformal_coverage']:.3f}"
                     + (" (in-sample: fitted on these cases)" if cal["in_sample"] else ""))
        Console().print("\n".join(lines))

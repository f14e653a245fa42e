"""Calibration from out-of-fold (OOF) predictions: temperature, conformal threshold, figures.

Why a temperature: one parameter fitted by minimising the negative log-likelihood of the OOF
cases (170 in the default cohort) cannot overfit much, keeps every member's vote and the AUC
(it is monotone), and is applied member by member exactly as inference sees them
(ricecli/inference/calibration.py). Each OOF case is scored by the one fold model that did not train
on it, i.e. one member on unseen data, so the temperature is fitted per member and the
ensemble averages calibrated members.

RUN/oof.csv: case_id, fold, label, p_RICE, p_recurrence (raw OOF softmax of each fold's
best epoch). RUN/calibration.json: the fitted Calibration (ricecli.spec) plus its
OOF figures.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ricecli.errors import InputError
from ricecli.inference.calibration import DEFAULT_FLOOR, member_logits
from ricecli.io.files import write_atomic, write_text_atomic
from ricecli.spec import Calibration

CONFORMAL_ALPHA = 0.1  # 90 % coverage target of the prediction sets
ECE_BINS = 10
T_BOUNDS = (0.05, 20.0)


def logit_margin(p_rice: np.ndarray, p_rec: np.ndarray, floor: float = DEFAULT_FLOOR
                 ) -> np.ndarray:
    """log p(recurrence) - log p(RICE), as ricecli recovers it from softmax outputs."""
    lg = member_logits(np.stack([p_rice, p_rec], axis=-1), floor)
    return lg[..., 1] - lg[..., 0]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def nll(margin: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary negative log-likelihood of labels y under sigmoid(margin / T)."""
    z = np.asarray(margin, float) / temperature
    # log(1 + exp(-z)) for y=1, log(1 + exp(z)) for y=0, computed stably
    s = np.where(np.asarray(y) == 1, -z, z)
    return float(np.mean(np.logaddexp(0.0, s)))


def fit_temperature(margin: np.ndarray, y: np.ndarray) -> float:
    """The T in T_BOUNDS minimising the OOF NLL (convex in 1/T; bounded scalar search)."""
    from scipy.optimize import minimize_scalar

    margin, y = np.asarray(margin, float), np.asarray(y, int)
    if len(y) == 0 or len(set(y.tolist())) < 2:
        raise InputError("temperature fit needs out-of-fold cases of both classes")
    lo, hi = (math.log(b) for b in T_BOUNDS)
    res = minimize_scalar(lambda lt: nll(margin, y, math.exp(lt)), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


def conformal_qhat(p_rec: np.ndarray, y: np.ndarray, alpha: float = CONFORMAL_ALPHA) -> float:
    """Split-conformal threshold on scores 1 - p(true class): the ceil((n+1)(1-alpha))-th
    smallest score (1.0 when n is too small for the coverage asked)."""
    p_rec, y = np.asarray(p_rec, float), np.asarray(y, int)
    scores = np.sort(np.where(y == 1, 1.0 - p_rec, p_rec))
    k = math.ceil((len(scores) + 1) * (1 - alpha))
    return 1.0 if k > len(scores) else float(scores[k - 1])


def brier(p_rec: np.ndarray, y: np.ndarray) -> float:
    """Mean squared difference between p(recurrence) and the 0/1 label."""
    return float(np.mean((np.asarray(p_rec, float) - np.asarray(y, float)) ** 2))


def reliability_bins(p_rec: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Equal-width bins of p(recurrence) ([0, 0.1), ..., [0.9, 1.0]): n, mean p, frequency."""
    p, y = np.asarray(p_rec, float), np.asarray(y, float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        out.append({"low": b / bins, "high": (b + 1) / bins, "n": n,
                    "mean_p": float(p[sel].mean()) if n else None,
                    "frequency": float(y[sel].mean()) if n else None})
    return out


def ece(p_rec: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of p(recurrence): sum over bins of n_b/n * |freq - mean p|."""
    n = len(y)
    return float(sum(b["n"] / n * abs(b["frequency"] - b["mean_p"])
                     for b in reliability_bins(p_rec, y, bins) if b["n"]))


def calibration_metrics(p_rec: np.ndarray, y: np.ndarray, n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Brier and ECE with percentile-bootstrap CIs (resampling cases)."""
    p, y = np.asarray(p_rec, float), np.asarray(y, int)
    rng = np.random.default_rng(seed)
    draws = {"brier": [], "ece": []}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        draws["brier"].append(brier(p[idx], y[idx]))
        draws["ece"].append(ece(p[idx], y[idx]))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {"brier": brier(p, y), "ece": ece(p, y), "ci95": {}}
    for k, v in draws.items():
        out["ci95"][k] = [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if v else \
            [float("nan"), float("nan")]
    return out


# --- the run folder: OOF table and the fitted calibration -------------------------------------

def read_oof(run: Path) -> dict[str, np.ndarray]:
    """The run's OOF predictions from every RUN/fold{k}/val_predictions.csv (sorted by case)."""
    rows = []
    for path in sorted(Path(run).glob("fold*/val_predictions.csv")):
        fold = int(path.parent.name[4:])
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                p_rec = float(r["p_recurrence"])
                p_rice = float(r["p_RICE"]) if r.get("p_RICE") else 1.0 - p_rec
                rows.append((r["case_id"], fold, int(r["label"]), p_rice, p_rec))
    if not rows:
        raise InputError("no out-of-fold predictions (fold*/val_predictions.csv)", run,
                         fix="train with 'python -m train fit' first")
    rows.sort()
    return {"case_id": np.array([r[0] for r in rows]), "fold": np.array([r[1] for r in rows]),
            "label": np.array([r[2] for r in rows]), "p_RICE": np.array([r[3] for r in rows]),
            "p_recurrence": np.array([r[4] for r in rows])}


def write_oof(run: Path, oof: dict[str, np.ndarray]) -> Path:
    path = Path(run) / "oof.csv"
    with write_atomic(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "fold", "label", "p_RICE", "p_recurrence"])
        for i in range(len(oof["case_id"])):
            w.writerow([oof["case_id"][i], int(oof["fold"][i]), int(oof["label"][i]),
                        f"{oof['p_RICE'][i]:.9g}", f"{oof['p_recurrence'][i]:.9g}"])
    return path


def fit_calibration(oof: dict[str, np.ndarray], alpha: float = CONFORMAL_ALPHA) -> tuple[
        Calibration, dict]:
    """Temperature (OOF NLL) and the conformal qhat on the calibrated OOF scores."""
    y = oof["label"]
    margin = logit_margin(oof["p_RICE"], oof["p_recurrence"])
    t = fit_temperature(margin, y)
    p_cal = sigmoid(margin / t)
    qhat = conformal_qhat(p_cal, y, alpha)
    cal = Calibration(temperature=round(t, 6), conformal_alpha=alpha,
                      conformal_qhat=round(qhat, 6), n_cases=int(len(y)),
                      fitted_on=f"out-of-fold predictions of {len(set(oof['fold'].tolist()))} "
                      "cross-validation folds")
    p_raw = sigmoid(margin)
    in_set = np.where(y == 1, 1 - p_cal <= qhat + 1e-12, p_cal <= qhat + 1e-12)
    both = (1 - p_cal <= qhat + 1e-12) & (p_cal <= qhat + 1e-12)
    figures = {"n_cases": int(len(y)), "nll_raw": nll(margin, y), "nll_calibrated":
               nll(margin, y, t), "brier_raw": brier(p_raw, y), "brier_calibrated":
               brier(p_cal, y), "ece_raw": ece(p_raw, y), "ece_calibrated": ece(p_cal, y),
               "conformal_coverage_oof": float(in_set.mean()),
               "conformal_both_labels_fraction_oof": float(both.mean())}
    return cal, figures


def calibrate_run(run: Path, alpha: float = CONFORMAL_ALPHA) -> dict:
    """Write RUN/oof.csv and RUN/calibration.json from the folds' validation predictions."""
    run = Path(run)
    oof = read_oof(run)
    write_oof(run, oof)
    cal, figures = fit_calibration(oof, alpha)
    record = {"calibration": asdict(cal), "oof": figures}
    write_text_atomic(run / "calibration.json", json.dumps(record, indent=1) + "\n")
    return record


def load_calibration(path: Path) -> Calibration:
    """The Calibration in a calibration.json written by calibrate_run."""
    try:
        data = json.loads(Path(path).read_text())
        return Calibration.from_dict(data["calibration"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"not a readable calibration.json ({err})", path,
                         fix="pass RUN/calibration.json written by 'python -m train fit'"
                         ) from None


# --- the reliability diagram ------------------------------------------------------------------

def reliability_png(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path,
                    title: str = "") -> Path:
    """Observed frequency vs mean predicted p(recurrence) per bin, one line per curve."""
    path = Path(path)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _reliability_pillow(curves, path, title)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
    for name, (p, y) in curves.items():
        pts = [(b["mean_p"], b["frequency"], b["n"]) for b in reliability_bins(p, y) if b["n"]]
        ax.plot([q[0] for q in pts], [q[1] for q in pts], marker="o",
                label=f"{name} (ECE {ece(p, y):.3f}, Brier {brier(p, y):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted p(recurrence)")
    ax.set_ylabel("observed fraction recurrence")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _reliability_pillow(curves: dict, path: Path, title: str) -> Path:
    from PIL import Image, ImageDraw

    size, m = 480, 50
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)

    def xy(px: float, py: float) -> tuple[float, float]:
        return m + px * (size - 2 * m), size - m - py * (size - 2 * m)

    d.rectangle([xy(0, 1), xy(1, 0)], outline="black")
    d.line([xy(0, 0), xy(1, 1)], fill=(150, 150, 150))
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]
    for i, (name, (p, y)) in enumerate(curves.items()):
        pts = [xy(b["mean_p"], b["frequency"]) for b in reliability_bins(p, y) if b["n"]]
        c = colours[i % len(colours)]
        if len(pts) > 1:
            d.line(pts, fill=c, width=2)
        for q in pts:
            d.ellipse([q[0] - 3, q[1] - 3, q[0] + 3, q[1] + 3], fill=c)
        d.text((m + 5, m + 5 + 14 * i), f"{name}: ECE {ece(p, y):.3f}", fill=c)
    d.text((m, 10), title, fill="black")
    d.text((size / 2 - 80, size - 30), "mean predicted p(recurrence)", fill="black")
    img.save(path)
    return path

"""The label mechanism: why a case is RICE or recurrence, and how much any classifier can know.

1. Risk (prior): logit P(RICE) = sum_k w_k z_k + offset, from treatment factors a model can see:
   regimen and hot spot (dose only), high-dose volume and periventricular dose (dose; partly the
   post-op cavity), residual tumour (post-op). The label is a Bernoulli draw from it: irreducible.
2. Appearance (likelihood): the event lesion's site and morphology are drawn from class-specific
   but overlapping distributions (`SITES`, `MORPHOLOGY`, `MULTIFOCAL`).
The exact posterior `p_recurrence` given every latent is written to each case's truth: the mean
of max(p, 1 - p) over a cohort is the ideal observer's accuracy (see docs/simulation.md).
"""

from __future__ import annotations

import math

from scipy.stats import beta as beta_dist

# standardisation of the risk factors: (mean, sd) over 120 simulated plans
# (`python benchmarks/simulate.py --calibrate 120`)
FEATURE_STATS = {
    "log_v95_cm3": (5.017, 0.332),
    "periventricular_v95": (0.154, 0.109),
    "residual_cm3": (0.597, 0.729),
    "hotspot": (0.0298, 0.018),
    "regimen_60": (0.70, 0.458),
}
# positive weight: more RICE (radiation injury scales with BED, irradiated volume, WM dose)
WEIGHTS = {
    "regimen_60": 1.9,
    "log_v95_cm3": 0.5,
    "periventricular_v95": 0.6,
    "hotspot": 0.5,
    "residual_cm3": -1.2,
}
SITES = {  # P(site | class): recurrence is mostly local, RICE in-field and periventricular
    "recurrence": {"cavity_margin": 0.60, "periventricular": 0.30, "marginal": 0.06,
                   "distant": 0.04},
    "RICE": {"cavity_margin": 0.48, "periventricular": 0.50, "marginal": 0.02, "distant": 0.0},
}
MULTIFOCAL = {"recurrence": 0.15, "RICE": 0.25}
# solidity t in [0, 1]: 0 = soap-bubble / Swiss-cheese, 1 = solid nodular mass
MORPHOLOGY = {
    "easy": {"recurrence": (4.0, 1.5), "RICE": (1.5, 4.0)},
    "standard": {"recurrence": (2.2, 2.0), "RICE": (2.0, 2.2)},
    "hard": {"recurrence": (2.1, 2.0), "RICE": (2.0, 2.1)},
}
PRIOR_SCALE = {"easy": 1.6, "standard": 1.0, "hard": 0.8}


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def risk_features(regimen_60: bool, v95_cm3: float, pv_v95: float, residual_cm3: float,
                  hotspot: float) -> dict:
    """Standardised risk factors z_k."""
    raw = {
        "regimen_60": float(regimen_60),
        "log_v95_cm3": math.log(max(v95_cm3, 1.0)),
        "periventricular_v95": pv_v95,
        "residual_cm3": residual_cm3,
        "hotspot": hotspot,
    }
    return {k: (v - FEATURE_STATS[k][0]) / FEATURE_STATS[k][1] for k, v in raw.items()}


def prior_logit_rice(z: dict, difficulty: str, recurrence_fraction: float) -> float:
    """logit P(RICE | risk factors), offset so that ~recurrence_fraction of cases recur."""
    scale = PRIOR_SCALE[difficulty]
    s = scale * sum(WEIGHTS[k] * z[k] for k in WEIGHTS)
    tau2 = scale**2 * sum(w * w for w in WEIGHTS.values())
    return s - logit(recurrence_fraction) * math.sqrt(1 + math.pi * tau2 / 8)


def appearance_log_lr(site: str, solidity: float, multifocal: bool, difficulty: str) -> float:
    """log P(appearance | recurrence) / P(appearance | RICE) for the event lesion."""
    p_rec, p_rice = SITES["recurrence"][site], SITES["RICE"][site]
    if p_rice == 0.0:
        return 20.0
    m = MORPHOLOGY[difficulty]
    t = min(max(solidity, 1e-4), 1 - 1e-4)
    lr = math.log(p_rec / p_rice)
    lr += math.log(beta_dist.pdf(t, *m["recurrence"]) / beta_dist.pdf(t, *m["RICE"]))
    fr, fc = MULTIFOCAL["recurrence"], MULTIFOCAL["RICE"]
    lr += math.log(fr / fc) if multifocal else math.log((1 - fr) / (1 - fc))
    return lr


def posterior_recurrence(prior_rice_logit: float, log_lr: float) -> float:
    """P(recurrence | all latents): the ideal observer's answer."""
    return sigmoid(-prior_rice_logit + log_lr)

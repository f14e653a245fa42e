"""Binary classification metrics (positive class = recurrence = 1) with bootstrap CIs."""

from __future__ import annotations

import numpy as np


def confusion(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """2x2 counts, rows = truth (RICE, recurrence), columns = prediction."""
    m = np.zeros((2, 2), dtype=np.int64)
    np.add.at(m, (np.asarray(y, int), np.asarray(pred, int)), 1)
    return m


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def _f1(tp: float, fp: float, fn: float) -> float:
    d = 2 * tp + fp + fn
    return float(2 * tp / d) if d else 0.0  # sklearn's zero_division=0


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic (ties count half); nan with one class."""
    y = np.asarray(y, int)
    score = np.asarray(score, float)
    n1, n0 = int(y.sum()), int((1 - y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    s = score[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def binary_metrics(y: np.ndarray, pred: np.ndarray, score: np.ndarray | None = None) -> dict:
    """Macro F1, accuracy, balanced accuracy, sensitivity, specificity (and AUC from score)."""
    (tn, fp), (fn, tp) = confusion(y, pred)
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    out = {
        "macro_f1": (_f1(tp, fp, fn) + _f1(tn, fn, fp)) / 2,
        "accuracy": _ratio(tp + tn, tn + fp + fn + tp),
        "balanced_accuracy": float(np.nanmean([sens, spec])),  # over the classes present
        "sensitivity": sens,
        "specificity": spec,
    }
    if score is not None:
        out["auc"] = auc(y, score)
    return out


def bootstrap_ci(y: np.ndarray, pred: np.ndarray, score: np.ndarray | None = None,
                 n: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap over cases: {metric: [low, high]} (nan-skipping)."""
    y, pred = np.asarray(y), np.asarray(pred)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        m = binary_metrics(y[idx], pred[idx], None if score is None else np.asarray(score)[idx])
        for k, v in m.items():
            draws.setdefault(k, []).append(v)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for k, v in draws.items():
        a = np.asarray(v, float)
        a = a[~np.isnan(a)]
        out[k] = [float(np.percentile(a, lo)), float(np.percentile(a, hi))] if len(a) else [
            float("nan"), float("nan")]
    return out


def majority_vote(member_probs: np.ndarray) -> np.ndarray:
    """Members' argmax votes [N, M, 2] -> class; a tie goes to the higher mean probability."""
    votes = member_probs.argmax(axis=2).sum(axis=1)
    m = member_probs.shape[1]
    pred = (votes * 2 > m).astype(int)
    tie = votes * 2 == m
    pred[tie] = (member_probs[tie].mean(axis=1)[:, 1] >= 0.5).astype(int)
    return pred

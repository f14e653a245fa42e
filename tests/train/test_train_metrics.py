"""Metrics against hand-computed values (and sklearn when it is installed)."""

from __future__ import annotations

import numpy as np
import pytest

from train.metrics import auc, binary_metrics, bootstrap_ci, confusion, majority_vote

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
PRED = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, 0])
SCORE = np.array([0.1, 0.2, 0.3, 0.6, 0.9, 0.8, 0.7, 0.6, 0.4, 0.2])


def test_confusion_and_rates_by_hand():
    assert confusion(Y, PRED).tolist() == [[3, 1], [2, 4]]  # tn fp / fn tp
    m = binary_metrics(Y, PRED, SCORE)
    f1_rec = 2 * 4 / (2 * 4 + 1 + 2)   # 8/11
    f1_rice = 2 * 3 / (2 * 3 + 2 + 1)  # 6/9
    assert m["macro_f1"] == pytest.approx((f1_rec + f1_rice) / 2)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["sensitivity"] == pytest.approx(4 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    # AUC by counting pairs (recurrence score > RICE score, ties half): 24 pairs.
    pairs = [(p, n) for p in SCORE[Y == 1] for n in SCORE[Y == 0]]
    expect = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert m["auc"] == pytest.approx(expect)


def test_against_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y, s = rng.integers(0, 2, 50), rng.random(50).round(1)  # rounded: many ties
    p = (s > 0.5).astype(int)
    m = binary_metrics(y, p, s)
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, p, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, p))
    assert m["auc"] == pytest.approx(sk.roc_auc_score(y, s))


def test_auc_one_class_is_nan_and_bootstrap_brackets_the_estimate():
    assert np.isnan(auc(np.ones(4, int), np.arange(4.0)))
    ci = bootstrap_ci(Y, PRED, SCORE, n=300, seed=0)
    m = binary_metrics(Y, PRED, SCORE)
    for k in ("macro_f1", "accuracy", "auc"):
        lo, hi = ci[k]
        assert lo <= m[k] <= hi and lo < hi


def test_majority_vote_with_tie_broken_by_mean_probability():
    members = np.array([
        [[0.2, 0.8], [0.3, 0.7], [0.9, 0.1]],   # 2 of 3 vote recurrence
        [[0.6, 0.4], [0.6, 0.4], [0.1, 0.9]],   # 1 of 3
    ])
    assert majority_vote(members).tolist() == [1, 0]
    tie = np.array([[[0.45, 0.55], [0.9, 0.1]], [[0.2, 0.8], [0.55, 0.45]]])
    assert majority_vote(tie).tolist() == [0, 1]  # means 0.325 and 0.625

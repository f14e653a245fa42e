"""fit / evaluate / ablate end to end on a tiny synthetic cohort (real training, CPU)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ricecli.errors import OutputError
from train.ablate import SUBSETS, run_ablate
from train.checkpoint import load_checkpoint
from train.data import load_cohort, read_manifest
from train.evaluate import run_evaluate
from train.fit import run_fit, run_spec
from train.metrics import binary_metrics, majority_vote


@pytest.mark.slow
def test_learns_an_easy_task(tmp_path, cohort, small_config):
    manifest, cache = cohort
    cfg = small_config(tmp_path, manifest, cache, epochs=30, augment=False, only_folds=[0])
    summary = run_fit(cfg)
    log = json.loads((tmp_path / "run/fold0/log.json").read_text())
    first = np.mean([r["train_loss"] for r in log[:5]])
    last = np.mean([r["train_loss"] for r in log[-5:]])
    assert last < 0.7 * first, (first, last)
    best = summary["folds"][0]
    assert best["val_macro_f1"] > 0.6 and best["val_auc"] > 0.7  # chance: 0.5


def test_checkpoint_round_trip_and_run_layout(tmp_path, cohort, small_config):
    manifest, cache = cohort
    cfg = small_config(tmp_path, manifest, cache, channels=("event", "dose"))
    summary = run_fit(cfg)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.json", "folds.json", "summary.json",
                                               "fold0", "fold1"}
    assert len(summary["folds"]) == 2
    ck = load_checkpoint(run / "fold1/best.safetensors")
    assert ck.spec == run_spec(cfg) and ck.fold == 1 and ck.arch["preset"] == "tiny"
    assert ck.config["channels"] == ["event", "dose"] and "val_macro_f1" in ck.metrics
    # The reloaded network reproduces the validation probabilities written at training time.
    rows = list(csv.DictReader((run / "fold1/val_predictions.csv").open()))
    recs = {r.case_id: r for r in read_manifest(manifest)}
    data = load_cohort([recs[r["case_id"]] for r in rows], ck.spec, cache, dtype=np.float32)
    with torch.no_grad():
        p = torch.softmax(ck.network()(torch.from_numpy(data.x)), 1)[:, 1].numpy()
    np.testing.assert_allclose(p, [float(r["p_recurrence"]) for r in rows], atol=2e-3)
    with pytest.raises(OutputError):
        run_fit(cfg)  # a non-empty run folder is never overwritten


def test_resume_continues_exactly(tmp_path, cohort, small_config):
    manifest, cache = cohort
    straight = small_config(tmp_path, manifest, cache, out=str(tmp_path / "a"), only_folds=[0])
    run_fit(straight)
    part = replace(straight, out=str(tmp_path / "b"), epochs=1)
    run_fit(part)
    run_fit(replace(part, epochs=2, resume=True))
    a = load_file(str(tmp_path / "a/fold0/last.safetensors"))
    b = load_file(str(tmp_path / "b/fold0/last.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    log = json.loads((tmp_path / "b/fold0/log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2]
    state = torch.load(tmp_path / "b/fold0/last.state.pt", weights_only=True)
    assert state["epoch"] == 2 and "optimizer" in state


def test_evaluate_ensemble_matches_its_per_case_file(tmp_path, cohort, small_config):
    manifest, cache = cohort
    run_fit(small_config(tmp_path, manifest, cache))
    res = run_evaluate(tmp_path / "run", manifest, "test", n_boot=200, quiet=True)
    assert res["n_cases"] == 8 and res["members"] == 2
    rows = list(csv.DictReader((tmp_path / "run/eval-test/per_case.csv").open()))
    y = np.array([int(r["label"]) for r in rows])
    member = np.array([[[1 - float(r[f"p_recurrence_member{k}"]),
                         float(r[f"p_recurrence_member{k}"])] for k in (0, 1)] for r in rows])
    vote = majority_vote(member)
    assert vote.tolist() == [int(r["pred_majority_vote"]) for r in rows]
    expect = binary_metrics(y, vote, member[:, :, 1].mean(1))
    for k, v in expect.items():
        assert res["majority_vote"]["metrics"][k] == pytest.approx(v, abs=1e-5, nan_ok=True)
    assert sum(map(sum, res["majority_vote"]["confusion"])) == 8
    oof = run_evaluate(tmp_path / "run", manifest, "cv", n_boot=100, quiet=True)
    assert oof["n_cases"] == 24 and oof["members"] == 2


@pytest.mark.slow
def test_ablate_writes_the_seven_rows(tmp_path, cohort, small_config):
    manifest, cache = cohort
    cfg = small_config(tmp_path, manifest, cache, out=str(tmp_path / "abl"), epochs=1)
    res = run_ablate(cfg, jobs=1, n_boot=50)
    assert [r["channels"] for r in res["rows"]] == ["+".join(s) for s in SUBSETS]
    folds = [json.loads((tmp_path / "abl" / r["channels"] / "folds.json").read_text())
             for r in res["rows"]]
    assert all(f == folds[0] for f in folds)  # same folds for every subset
    md = (tmp_path / "abl/ablation.md").read_text()
    assert "| dose | " in md and "0.78" in md and "test macro F1" in md
    assert all(0 <= r["test_macro_f1_vote"] <= 1 for r in res["rows"])

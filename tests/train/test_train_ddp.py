"""torchrun with 2 CPU processes (gloo): ranks stay in step and match 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train.fit import run_fit
from train.loop import key
from train.model import arch_config, build_network

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_ranks_in_step_and_equal_to_one_process(tmp_path, cohort, small_config):
    manifest, cache = cohort
    args = ["--manifest", str(manifest), "--preset", "tiny", "--size-xyz", "16,16,16",
            "--spacing-mm", "12", "--folds", "2", "--fold", "0", "--epochs", "2",
            "--batch-size", "8", "--micro-batch", "4", "--lr", "1e-3", "--cache", str(cache),
            "--workers", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", "-m", "train", "fit", *args,
                          "--out", str(tmp_path / "ddp")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "ddp/summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["folds"][0]["rank_param_spread"] == 0.0  # identical weights on both ranks
    # The same run in one process: same global batch and chunks, so the same parameters.
    run_fit(small_config(tmp_path, manifest, cache, out=str(tmp_path / "one"), device="cpu",
                         micro_batch=4, only_folds=[0]))
    a = load_file(str(tmp_path / "ddp/fold0/last.safetensors"))
    b = load_file(str(tmp_path / "one/fold0/last.safetensors"))
    params = {n for n, _ in build_network(arch_config("tiny"), 3).named_parameters()}
    assert params and params <= set(a)
    torch.manual_seed(key(0, 0))  # fit's initialisation of fold 0 with seed 0
    init = build_network(arch_config("tiny"), 3).state_dict()
    moved = max(float((b[n] - init[n]).abs().max()) for n in params)
    assert moved > 1e-3  # training changed the weights, so the comparison means something
    for n in params:  # BatchNorm running statistics follow rank 0's chunk, so not compared
        torch.testing.assert_close(a[n], b[n], rtol=1e-4, atol=1e-5)

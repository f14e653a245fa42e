"""Fixtures for the training tests: a small synthetic cohort in a pre-seeded cache."""

from __future__ import annotations

import pytest
import torch

from train.fit import FitConfig, run_spec
from train.synthetic import SMALL_GRID as GRID
from train.synthetic import write_synthetic_cohort


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests share 2 cores with xdist: one torch thread each keeps timings sane."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def small_config():
    """Make a FitConfig for the tiny grid: 2 folds, 2 epochs, batch 8, one worker."""
    def make(tmp_path, manifest, cache, **kw) -> FitConfig:
        base = dict(manifest=str(manifest), out=str(tmp_path / "run"), folds=2, epochs=2,
                    batch_size=8, lr=1e-3, cache=str(cache), workers=1, **GRID)
        return FitConfig(**{**base, **kw})
    return make


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """(manifest, cache): 24 cv + 8 test synthetic cases at 16^3, labels alternating."""
    root = tmp_path_factory.mktemp("cohort")
    spec = run_spec(FitConfig(manifest="", out="", **GRID))
    manifest = write_synthetic_cohort(root / "data", spec, 24, 8, root / "cache", seed=1)
    return manifest, root / "cache"

"""Batched augmentation: deterministic per key, spatially shared, dose kept physical."""

from __future__ import annotations

from dataclasses import replace

import torch

from train.augment import AugmentConfig, augment

T1 = (True, True, False)


def _x() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((4, 3, 12, 14, 16), generator=g)
    x[:, 2] = x[:, 0]  # the dose channel equals a T1 channel: spatial ops must move them alike
    return x


def _gen(seed: int) -> int:
    return seed


def test_same_key_same_result_other_key_differs():
    x = _x()
    a, b = augment(x, T1, _gen(5), 3.0), augment(x, T1, _gen(5), 3.0)
    c = augment(x, T1, _gen(6), 3.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and torch.isfinite(a).all()


def test_all_off_is_identity():
    off = AugmentConfig(p_affine=0, p_elastic=0, p_noise=0, p_brightness=0, p_gamma=0)
    x = _x()
    assert torch.allclose(augment(x, T1, _gen(1), 3.0, off), x, atol=1e-5)


def test_spatial_is_shared_and_intensity_spares_the_dose():
    spatial = AugmentConfig(p_affine=1, p_elastic=1, p_noise=0, p_brightness=0, p_gamma=0)
    x = _x()
    out = augment(x, T1, _gen(2), 3.0, spatial)
    assert not torch.allclose(out, x, atol=1e-3)          # it moved
    assert torch.allclose(out[:, 2], out[:, 0], atol=1e-6)  # the same warp for all channels
    intensity = replace(spatial, p_affine=0, p_elastic=0, p_noise=1, p_brightness=1, p_gamma=1)
    out = augment(x, T1, _gen(3), 3.0, intensity)
    assert torch.allclose(out[:, 2], x[:, 2], atol=1e-5)    # dose untouched
    assert not torch.allclose(out[:, 0], x[:, 0], atol=1e-3)

"""Batched augmentation on the training device (GPU or CPU), one resampling per batch.

The set follows MONAI's RandAffine (rotation, scaling), Rand3DElastic, RandGaussianNoise,
RandScaleIntensity/RandShiftIntensity (brightness) and RandAdjustContrast (gamma), but is
written batched in torch so that a GPU run never waits on per-sample CPU transforms.
Spatial transforms are identical for all channels of a case. Intensity transforms touch
the T1 channels only: the dose is a physical quantity (Gy / scale) and stays as planned.
All randomness comes from the generator passed in, so a chunk's augmentation depends only
on its key (seed, fold, epoch, step, chunk) — the same on every rank and after --resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    p_affine: float = 0.5
    rotate_deg: float = 15.0
    scale: float = 0.1          # per-axis factor in [1 - scale, 1 + scale]
    p_elastic: float = 0.3
    elastic_mm: float = 4.0     # displacement SD at the control points
    elastic_points: int = 5     # control points per axis (smoothness)
    p_noise: float = 0.3
    noise_sd: float = 0.1       # upper bound of the noise SD (z-score units)
    p_brightness: float = 0.3
    brightness: float = 0.1     # scale and shift range
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)


def _u(gen: torch.Generator, shape, lo: float, hi: float, device) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device) * (hi - lo) + lo


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """[B, 3] radians -> [B, 3, 3] rotation about the three axes."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1)
    return rz.view(-1, 3, 3) @ ry.view(-1, 3, 3) @ rx.view(-1, 3, 3)


def augment(x: torch.Tensor, t1: tuple[bool, ...], seed: int, spacing_mm: float,
            cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """x [B, C, D, H, W] float -> augmented copy; `t1` marks the intensity channels.

    The per-sample draws come from a CPU generator (so which samples to touch is known on
    the host: no GPU sync), the noise volumes from a device generator; both seeded by `seed`.
    """
    b, _, d, h, w = x.shape
    dev = x.device
    cpu = torch.Generator().manual_seed(seed)
    on = torch.rand((5, b), generator=cpu) < torch.tensor(
        [cfg.p_affine, cfg.p_elastic, cfg.p_noise, cfg.p_brightness, cfg.p_gamma])[:, None]
    angles = _u(cpu, (b, 3), -1, 1, "cpu") * math.radians(cfg.rotate_deg)
    scales = 1 + _u(cpu, (b, 3), -cfg.scale, cfg.scale, "cpu")
    n = cfg.elastic_points
    coarse = torch.randn((b, 3, n, n, n), generator=cpu) * (cfg.elastic_mm / spacing_mm)
    sd = _u(cpu, (b,), 0, cfg.noise_sd, "cpu")
    mul = 1 + _u(cpu, (b,), -cfg.brightness, cfg.brightness, "cpu")
    add = _u(cpu, (b,), -cfg.brightness, cfg.brightness, "cpu")
    gamma = _u(cpu, (b,), *cfg.gamma, "cpu")
    out = x.clone()
    # Spatial, identical for all channels: an affine about the grid centre (in voxel units,
    # so a rotation stays rigid) plus a smooth displacement, one grid_sample for the samples
    # drawn (only those pay for it, which matters on a CPU).
    moved = torch.nonzero(on[0] | on[1]).flatten()
    if len(moved):
        m = len(moved)
        a = _rotation(angles[moved] * on[0, moved, None]) @ torch.diag_embed(
            torch.where(on[0, moved, None], scales[moved], torch.ones(m, 3)))
        half = torch.tensor([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2])
        theta = torch.zeros(m, 3, 4)
        theta[:, :, :3] = a * half[None, None, :] / half[None, :, None]  # normalised coords
        disp = coarse[moved] * on[1, moved, None, None, None, None]
        grid = F.affine_grid(theta.to(dev), (m, 1, d, h, w), align_corners=True)
        disp = F.interpolate(disp.to(dev), size=(d, h, w), mode="trilinear", align_corners=True)
        grid = grid + disp.permute(0, 2, 3, 4, 1) / half.to(dev)  # voxels -> normalised
        out[moved.to(dev)] = F.grid_sample(x[moved.to(dev)], grid, mode="bilinear",
                                           padding_mode="border", align_corners=True)
    ch = torch.tensor([i for i, t in enumerate(t1) if t], dtype=torch.long)
    if not len(ch):
        return out
    # Intensity, T1 channels only (the dose stays physical).
    dgen = torch.Generator(device=dev).manual_seed(seed + 1)
    v = (-1, 1, 1, 1, 1)

    def apply(rows: torch.Tensor, fn) -> None:
        if len(rows):
            r, c = rows.to(dev)[:, None], ch.to(dev)[None, :]
            out[r, c] = fn(out[r, c], rows)

    apply(torch.nonzero(on[2]).flatten(), lambda s, r: s + torch.randn(
        s.shape, generator=dgen, device=dev) * sd[r].to(dev).view(v))
    apply(torch.nonzero(on[3]).flatten(),
          lambda s, r: s * mul[r].to(dev).view(v) + add[r].to(dev).view(v))

    def _gamma(s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        # MONAI RandAdjustContrast: rescale to [0, 1], raise to gamma, rescale back.
        lo = s.amin(dim=(2, 3, 4), keepdim=True)
        span = s.amax(dim=(2, 3, 4), keepdim=True) - lo + 1e-6
        return ((s - lo) / span).clamp_min(0) ** gamma[r].to(dev).view(v) * span + lo

    apply(torch.nonzero(on[4]).flatten(), _gamma)
    return out

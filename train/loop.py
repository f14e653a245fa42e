"""The training step and validation pass, shared by `fit` and the throughput benchmark.

A global batch of B cases is cut into chunks of `micro` cases; chunk c runs on rank
c % world. BatchNorm sees one chunk, gradients are averaged over all chunks, and every
random draw is keyed by (seed, fold, epoch, step, chunk): so a run gives the same weights on
1 process or K (same B and micro), and again after --resume.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from train.augment import AugmentConfig, augment
from train.dist import DistInfo


def key(*parts: int) -> int:
    """A deterministic 63-bit seed from small integers."""
    k = 0
    for p in parts:
        k = (k * 1_000_003 + int(p) + 1) % (2**63 - 1)
    return k


def epoch_order(labels: np.ndarray, batch: int, seed: int) -> torch.Tensor:
    """Class-balanced draw with replacement (weighted random sampler), ceil(n/B) batches."""
    counts = np.bincount(labels, minlength=2).astype(float)
    weights = torch.as_tensor(1.0 / counts[labels])
    steps = max(1, -(-len(labels) // batch))
    gen = torch.Generator().manual_seed(seed)
    draw = torch.multinomial(weights, steps * batch, replacement=True, generator=gen)
    return draw.view(steps, batch)


@dataclass
class StepTimes:
    data_s: float = 0.0      # gathering + augmenting the batch
    compute_s: float = 0.0   # forward, backward, optimiser
    cases: int = 0
    sync: bool = False       # CUDA: synchronise to time honestly (benchmarks only)
    losses: list = field(default_factory=list)

    def fraction(self) -> float:
        total = self.data_s + self.compute_s
        return self.data_s / total if total else 0.0


@dataclass(frozen=True)
class StepPlan:
    batch: int
    micro: int
    spacing_mm: float
    t1: tuple[bool, ...]
    augment: bool = True
    amp: bool = False
    aug_cfg: AugmentConfig = AugmentConfig()


def _tick(times: StepTimes, device: torch.device) -> float:
    if times.sync and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, x_all: torch.Tensor,
               y_all: torch.Tensor, batch_idx: torch.Tensor, plan: StepPlan, info: DistInfo,
               seed_parts: tuple[int, ...], times: StepTimes) -> torch.Tensor:
    """One optimiser step over the global batch `batch_idx` (indices into x_all)."""
    dev = info.device
    chunks = batch_idx.view(-1, plan.micro)
    mine = list(range(info.rank, chunks.shape[0], info.world))
    total = torch.zeros((), device=dev)
    for j, c in enumerate(mine):
        t0 = _tick(times, dev)
        idx = chunks[c].to(dev, non_blocking=True)
        xb = x_all.index_select(0, idx).float()
        yb = y_all.index_select(0, idx)
        if plan.augment:
            xb = augment(xb, plan.t1, key(*seed_parts, c), plan.spacing_mm, plan.aug_cfg)
        if dev.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last_3d)
        t1_ = _tick(times, dev)
        sync = j == len(mine) - 1 or not hasattr(net, "no_sync")
        ctx = contextlib.nullcontext() if sync else net.no_sync()
        with ctx, torch.autocast(dev.type, dtype=torch.bfloat16, enabled=plan.amp):
            loss = F.cross_entropy(net(xb).float(), yb)
            (loss / len(mine)).backward()
        total += loss.detach()
        times.data_s += t1_ - t0
        times.compute_s += _tick(times, dev) - t1_
    t2 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.compute_s += _tick(times, dev) - t2
    times.cases += len(batch_idx) // info.world
    return total / len(mine)


@torch.no_grad()
def predict(net: torch.nn.Module, x_all: torch.Tensor, idx: list[int], batch: int,
            amp: bool, device: torch.device) -> np.ndarray:
    """Softmax probabilities [n, 2] of the cases `idx`, no augmentation, eval mode."""
    net.eval()
    out = []
    for s in range(0, len(idx), batch):
        sel = torch.as_tensor(idx[s:s + batch], device=device)
        xb = x_all.index_select(0, sel).float()
        if device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(torch.softmax(net(xb).float(), dim=1))
    net.train()
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 2), np.float32)

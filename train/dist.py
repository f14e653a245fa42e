"""Device choice and torch.distributed setup (torchrun: gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ricecli.errors import RicenetError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto -> cuda when available, else cpu; cuda -> this process's local GPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise RicenetError(f"unknown device {name!r}", fix="use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise RicenetError("--device cuda asked for, but torch sees no CUDA GPU",
                           fix="use --device cpu or install a CUDA build of torch")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # Long timeout: rank 0 prepares the cohort while the others wait at a barrier.
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=timedelta(hours=3))
    return DistInfo(rank=rank, world=world, local_rank=local, device=dev)


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's BatchNorm statistics so evaluation agrees everywhere."""
    if info.world > 1:
        for b in module.buffers():
            dist.broadcast(b, src=0)


def all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= info.world
    return value


def agree(flag: bool, info: DistInfo) -> bool:
    """Rank 0's decision, on every rank (time-box decisions must not diverge)."""
    if info.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=info.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def param_spread(module: torch.nn.Module, info: DistInfo) -> float:
    """Largest difference of any parameter between ranks (0.0 when in step)."""
    flat = torch.cat([p.detach().float().flatten() for p in module.parameters()])
    if info.world == 1:
        return 0.0
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return float((hi - lo).abs().max())


def cleanup(info: DistInfo) -> None:
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()

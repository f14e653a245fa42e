"""How many volumes one engine call takes, the input check every engine makes, and running a
larger input in slices (batched calls are the unit of work; too-large batches are split)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ricecli.errors import ModelError
from ricecli.inference.model import LoadedModel

TRT_OPT_BATCH = 16  # the TensorRT profile's optimum: explain's default occlusion batch
CPU_BATCH_BYTES = 256 << 20  # input bytes per CPU call: activations are ~10x the input
GPU_BATCH_BYTES = 1 << 30
Outputs = tuple[np.ndarray, np.ndarray]  # (mean probabilities [N,2], members [N,M,2])


def batch_limit(model: LoadedModel, budget_bytes: int) -> int:
    """Largest batch whose input fits the budget (at least 1; the graph may fix it)."""
    if model.fixed_batch:
        return model.fixed_batch
    shape = model.spec.model_space.shape_zyx
    per_volume = 4 * len(model.spec.channels) * shape[0] * shape[1] * shape[2]
    return int(max(1, min(64, budget_bytes // per_volume)))


def check_volumes(volumes: np.ndarray, model: LoadedModel) -> np.ndarray:
    """[N,C,D,H,W] float32, contiguous (a 4-D volume is a batch of one); else a ModelError."""
    want = (len(model.spec.channels), *model.spec.model_space.shape_zyx)
    volumes = np.asarray(volumes)
    if volumes.ndim == 4:
        volumes = volumes[None]
    if volumes.ndim != 5 or tuple(volumes.shape[1:]) != want:
        raise ModelError(f"input volumes have shape {list(volumes.shape)}, the model expects "
                         f"[N,{','.join(map(str, want))}]", model.path,
                         fix="prepare the case with this model's spec")
    return np.ascontiguousarray(volumes, dtype=np.float32)


def run_in_chunks(call: Callable[[np.ndarray], Outputs], volumes: np.ndarray,
                  max_batch: int) -> Outputs:
    """Run `call` on slices of at most max_batch volumes and join the results."""
    if len(volumes) <= max_batch:
        return call(volumes)
    parts = [call(volumes[i:i + max_batch]) for i in range(0, len(volumes), max_batch)]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

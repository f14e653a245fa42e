"""How deep to go: the depth with the least measured cost per position, cached.

Per depth d: its windowed layers per position against the same layers on whole tensors, plus
copying the cut tensors into whole tensors for the trunk. The choice is cached per model,
geometry and thread count (in memory and in RICENET_CACHE) so that the same inputs give the
same bits.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ricecli.contract import INPUT_NAME
from ricecli.explain.incremental.graph import NetworkSplit
from ricecli.explain.incremental.subgraphs import cut_tensors
from ricecli.explain.incremental.windows import Windows, crop_size, gather
from ricecli.memo import Memo

if TYPE_CHECKING:
    import onnxruntime as ort

LayerSession = Callable[[int, bool], "ort.InferenceSession"]  # (depth, with padding) -> session
Costs = dict[str, list[float]]  # {"depth": [...], "seconds_per_position": [...]}

DEPTHS: Memo[str, int] = Memo(
    "incremental-depths", "the measured incremental depth per model, geometry and threads: "
    "measuring costs time, and the same inputs must give the same bits")


def cache_dir() -> Path:
    """Where measured depth choices are kept ($RICENET_CACHE/incremental)."""
    return Path(os.environ.get("RICENET_CACHE", Path.home() / ".cache" / "ricenet")) \
        / "incremental"


def choose_depth(split: NetworkSplit, threads: int, layer: LayerSession,
                 acts: dict[str, np.ndarray], windows: Windows,
                 positions: int) -> tuple[int, Costs]:
    """(depth, measured costs): costs are {} when the choice came from the cache."""
    key = _cache_key(split, threads, acts, windows)
    path = cache_dir() / f"{key}.json"
    costs: Costs = {}

    def read_or_measure() -> int:
        nonlocal costs
        try:
            return int(json.loads(path.read_text())["depth"])
        except (OSError, ValueError, KeyError):
            pass
        depth, costs = measure(split, layer, acts, windows, positions)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"depth": depth, "costs_s": costs}) + "\n")
        except OSError:
            pass
        return depth

    return DEPTHS.get(key, read_or_measure), costs


def _cache_key(split: NetworkSplit, threads: int, acts: dict[str, np.ndarray],
               windows: Windows) -> str:
    """Model hash, threads, volume shape and window sizes: what the choice depends on."""
    text = json.dumps([split.sha256, threads, list(acts[INPUT_NAME].shape),
                       sorted((k, list(v)) for k, v in windows.sizes.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def measure(split: NetworkSplit, layer: LayerSession, acts: dict[str, np.ndarray],
            windows: Windows, positions: int) -> tuple[int, Costs]:
    """Per depth: windowed layers (per position, over `positions` positions) vs whole layers;
    plus copying the cut tensors. Returns (cheapest depth, costs)."""
    n = int(min(len(next(iter(windows.starts.values()))), positions))
    idx = np.arange(n)
    candidates = [1]
    for d in range(2, split.max_depth + 1):
        outs = [op for op in split.ops if op.depth == d and op.windowed]
        if not outs or all(windows.sizes[op.output] == acts[op.output].shape[1:]
                           for op in outs):
            break
        candidates.append(d)
    inc, whole = {}, {}
    for d in candidates[1:]:
        windowed = [op for op in split.ops if op.depth == d and op.windowed]
        feeds_w, feeds_f = {}, {}
        for j, op in enumerate(windowed):
            crop = windows.crops[op.output][idx]
            size = crop_size(op, windows.sizes[op.output])
            src = acts[op.inputs[0]]
            pads = [(0, 0)] + [(int(max(0, -crop[:, a].min())),
                                int(max(0, (crop[:, a] + size[a]).max() - src.shape[a + 1])))
                               for a in range(3)]
            pad = np.pad(src, pads, constant_values=op.pad_value)
            feeds_w[f"x{j}"] = gather(pad, [p[0] for p in pads[1:]], crop, size)
            feeds_f[f"x{j}"] = src[None]
        inc[d] = _best_time(layer(d, False), feeds_w) / n
        whole[d] = _best_time(layer(d, True), feeds_f)
    start = time.perf_counter()
    copies = 0  # the copy rate: pasting windows into whole cut tensors costs a copy
    while copies < 3 or time.perf_counter() - start < 0.02:
        np.repeat(acts[INPUT_NAME][None], 4, axis=0)
        copies += 1
    copy_rate = copies * 4 * acts[INPUT_NAME].nbytes / (time.perf_counter() - start)
    costs: Costs = {"depth": [], "seconds_per_position": []}
    best, best_cost = 1, None
    for d in candidates:
        cut_bytes = sum(acts[c].nbytes for c in cut_tensors(split, d))
        cost = sum(inc[e] for e in candidates[1:] if e <= d) \
            + sum(whole[e] for e in candidates[1:] if e > d) + cut_bytes / copy_rate
        costs["depth"].append(d)
        costs["seconds_per_position"].append(round(cost, 6))
        if best_cost is None or cost < best_cost:
            best, best_cost = d, cost
    return best, costs


def _best_time(session: ort.InferenceSession, feeds: dict[str, np.ndarray],
               repeats: int = 3, enough_s: float = 0.1) -> float:
    """Least wall time of a few runs after a warm-up (one run when a run takes long)."""
    t = time.perf_counter()
    session.run(None, feeds)
    best = float("inf") if time.perf_counter() - t < enough_s else 0.0
    for _ in range(repeats if best else 1):
        t = time.perf_counter()
        session.run(None, feeds)
        best = min(best or float("inf"), time.perf_counter() - t)
    return best

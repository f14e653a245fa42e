"""How deep to go: the depth with the least work per position, counted from the layers' shapes.

Per depth d: the windowed conv/pool layers up to d on their windows, those deeper on whole
tensors (they run once per position in the trunk). A windowed output costs WINDOW_OVERHEAD
times a whole one (crops, pastes, one more call): once a layer's window is nearly its whole
tensor, windowing it no longer pays. Counted, not timed: no setup time, and the same inputs
give the same depth (and bits) on every machine and load. An earlier version timed each depth:
~0.3 s per explain on 2 loaded cores, and under load it chose depth 2-5 where 6-7 is best on
the edge network (issue 25, benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ricecli.explain.incremental.graph import LocalOp, NetworkSplit, constants
from ricecli.explain.incremental.windows import Windows

if TYPE_CHECKING:
    import onnx

Costs = dict[str, list[float]]  # {"depth": [...], "work_per_position": [...]} (multiply-adds)

WINDOW_OVERHEAD = 4 / 3  # a windowed output's cost in whole outputs (fitted on the edge net)


def macs_per_output(op: LocalOp, weights: dict[str, onnx.TensorProto]) -> float:
    """Multiply-adds per output voxel and channel: C_in x kernel taps for a conv (its weight's
    shape: a dilated kernel has no more taps), the window for a pool."""
    w = weights.get(op.node.input[1]) if op.kind == "Conv" else None
    if w is not None and len(w.dims) > 2:
        return float(np.prod(w.dims[1:]))
    return float(np.prod(op.reach)) if op.reach else 1.0


def choose_depth(split: NetworkSplit, acts: dict[str, np.ndarray],
                 windows: Windows) -> tuple[int, Costs]:
    """(depth, work per position of each candidate depth): the least work, shallower on ties.

    Candidates stop at the first depth whose windows are all whole tensors."""
    candidates = [1]
    for d in range(2, split.max_depth + 1):
        outs = [op for op in split.ops if op.depth == d and op.windowed]
        if not outs or all(windows.sizes[op.output] == acts[op.output].shape[1:]
                           for op in outs):
            break
        candidates.append(d)
    weights = constants(split.model.graph)  # initializers or Constant nodes, looked up once
    windowed, whole = {}, {}
    for d in candidates:
        ops = [op for op in split.ops if op.depth == d and op.windowed]
        per = [macs_per_output(op, weights) * acts[op.output].shape[0] for op in ops]
        windowed[d] = sum(p * float(np.prod(windows.sizes[op.output])) * WINDOW_OVERHEAD
                          for p, op in zip(per, ops, strict=True))
        whole[d] = sum(p * float(np.prod(acts[op.output].shape[1:]))
                       for p, op in zip(per, ops, strict=True))
    costs: Costs = {"depth": [], "work_per_position": []}
    best, best_work = 1, float("inf")
    for d in candidates:
        work = sum(windowed[e] for e in candidates if e <= d) \
            + sum(whole[e] for e in candidates if e > d)
        costs["depth"].append(d)
        costs["work_per_position"].append(round(work))
        if work < best_work:
            best, best_work = d, work
    return best, costs

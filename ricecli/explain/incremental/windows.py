"""Window planning: the box of every local tensor that one occlusion cube can change.

Changed inputs [a, b) of a conv or pool change outputs ceil((a - K + 1 + p) / s) ...
floor((b - 1 + p) / s); elementwise ops keep the union of their inputs' boxes. Each tensor has
one window size over all positions (shifted back inside the tensor at the borders), so that
positions batch; windows move between arrays with `gather` (crops) and `paste` (overlaps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ricecli.contract import INPUT_NAME
from ricecli.explain.incremental.graph import LocalOp
from ricecli.explain.positions import Index

Occlusion = tuple[Sequence[int], tuple[slice, ...]]  # occluded channels, cube (z, y, x) slices


@dataclass
class Windows:
    """Per tensor: every position's window start [P, 3] and the one window size (z, y, x)."""

    starts: dict[str, np.ndarray] = field(default_factory=dict)
    sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    crops: dict[str, np.ndarray] = field(default_factory=dict)  # windowed op: crop start [P, 3]


def plan_windows(ops: Sequence[LocalOp], shapes: dict[str, tuple[int, ...]],
                 cubes: Sequence[tuple[slice, ...]]) -> Windows:
    """Windows of every local tensor for every cube (vectorised over positions)."""
    full = np.asarray(shapes[INPUT_NAME][1:])
    lo = np.asarray([[s.start for s in sl] for sl in cubes], np.int64).reshape(-1, 3)
    hi = np.asarray([[s.stop for s in sl] for sl in cubes], np.int64).reshape(-1, 3)
    lo, hi = np.clip(lo, 0, full), np.clip(hi, 0, full)
    w = Windows()
    size = np.maximum(1, np.minimum(full, (hi - lo).max(axis=0)))
    w.sizes[INPUT_NAME] = tuple(int(v) for v in size)
    w.starts[INPUT_NAME] = np.minimum(lo, full - size)
    for op in ops:
        out = np.asarray(shapes[op.output][1:])
        if op.windowed:
            a, n = w.starts[op.inputs[0]], np.asarray(w.sizes[op.inputs[0]])
            k, s, p = (np.asarray(v) for v in (op.reach, op.strides, op.pads_begin))
            first = np.clip(-((-(a - k + 1 + p)) // s), 0, out - 1)
            last = np.clip((a + n - 1 + p) // s, 0, out - 1)
            size = np.clip((last - first + 1).max(axis=0), 1, out)
            start = np.minimum(first, out - size)
            w.crops[op.output] = start * s - p
        else:
            a = np.min([w.starts[i] for i in op.inputs], axis=0)
            b = np.max([w.starts[i] + np.asarray(w.sizes[i]) for i in op.inputs], axis=0)
            size = np.minimum(out, (b - a).max(axis=0))
            start = np.minimum(a, out - size)
        w.sizes[op.output] = tuple(int(v) for v in size)
        w.starts[op.output] = start.astype(np.int64)
    return w


def crop_size(op: LocalOp, out_size: Sequence[int]) -> tuple[int, ...]:
    """Input crop that a windowed op needs for `out_size` outputs (no padding)."""
    return tuple((n - 1) * s + k for n, s, k in zip(out_size, op.strides, op.reach, strict=True))


def gather(padded: np.ndarray, margin: Sequence[int] | np.ndarray, starts: np.ndarray,
           size: Sequence[int]) -> np.ndarray:
    """[n, C, *size] crops of a [C, z, y, x] array padded by `margin` in front, at `starts`."""
    from numpy.lib.stride_tricks import sliding_window_view

    view = sliding_window_view(padded, tuple(size), axis=(1, 2, 3))
    s = starts + np.asarray(margin)
    return np.ascontiguousarray(view.transpose(1, 2, 3, 0, 4, 5, 6)[s[:, 0], s[:, 1], s[:, 2]])


def paste(dst: np.ndarray, dst_starts: np.ndarray, src: np.ndarray,
          src_starts: np.ndarray) -> None:
    """Write each src window [n, C, *a] into dst windows [n, C, *b] where they overlap."""
    lo = np.maximum(src_starts, dst_starts)
    hi = np.minimum(src_starts + src.shape[2:], dst_starts + dst.shape[2:])
    hi = np.maximum(hi, lo)
    keys = np.concatenate([lo - dst_starts, hi - lo, lo - src_starts], axis=1)
    if (keys == keys[:1]).all():  # the common case, windows away from the borders: one copy
        uniq, inverse = keys[:1], np.zeros(len(keys), np.int64)
    else:
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    for g, key in enumerate(uniq):
        idx = np.flatnonzero(inverse.ravel() == g)
        d0, n, s0 = key[:3], key[3:6], key[6:]
        if (n <= 0).any():
            continue
        dsl = tuple(slice(int(a), int(a + b)) for a, b in zip(d0, n, strict=True))
        ssl = tuple(slice(int(a), int(a + b)) for a, b in zip(s0, n, strict=True))
        which: np.ndarray | slice = slice(None) if len(idx) == len(dst) else idx
        to: Index = (which, slice(None), *dsl)
        from_: Index = (which, slice(None), *ssl)
        dst[to] = src[from_]

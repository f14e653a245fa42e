"""The exact layer-by-layer recompute: each local tensor's window values for a chunk of cubes.

A conv or pool reads the cached activation of the unoccluded volume around its window (padded
with the layer's own padding value: 0 for conv, -inf for max-pool), with its input's new window
pasted in, and runs without padding on that crop: the crop's outputs are the full layer's
outputs there, exactly. One ONNX Runtime call per layer depth runs all the chunk's crops;
ReLU, Add, batch norm and Identity run in numpy on the windows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ricecli.contract import INPUT_NAME
from ricecli.explain.incremental.graph import LocalOp, NetworkSplit
from ricecli.explain.incremental.subgraphs import cut_tensors
from ricecli.explain.incremental.windows import Occlusion, Windows, crop_size, gather, paste
from ricecli.explain.positions import Index

if TYPE_CHECKING:
    import onnxruntime as ort

Padded = tuple[np.ndarray, np.ndarray, np.ndarray]  # (pad before, pad after, padded tensor)
PaddedInputs = dict[tuple[str, float], Padded]  # by (input tensor, pad value)


def padded_inputs(acts: dict[str, np.ndarray], ops: Sequence[LocalOp],
                  windows: Windows) -> PaddedInputs:
    """Each windowed op's input, padded (with its pad value) so every crop fits."""
    out: PaddedInputs = {}
    for op in ops:
        if not op.windowed:
            continue
        src = acts[op.inputs[0]]
        crop = windows.crops[op.output]
        size = np.asarray(crop_size(op, windows.sizes[op.output]))
        before = np.maximum(0, -crop.min(axis=0))
        after = np.maximum(0, (crop + size).max(axis=0) - np.asarray(src.shape[1:]))
        key = (op.inputs[0], op.pad_value)
        if key in out:
            old_before, old_after, _ = out[key]
            before, after = np.maximum(before, old_before), np.maximum(after, old_after)
        pads = [(0, 0)] + [(int(b), int(a)) for b, a in zip(before, after, strict=True)]
        out[key] = (before, after, np.pad(src, pads, constant_values=op.pad_value))
    return out


def window_values(split: NetworkSplit, layer: Callable[[int], ort.InferenceSession],
                  volume: np.ndarray, acts: dict[str, np.ndarray], padded: PaddedInputs,
                  ops: Sequence[LocalOp], windows: Windows, idx: np.ndarray,
                  occlusions: Sequence[Occlusion], fill: float) -> dict[str, np.ndarray]:
    """Each local tensor's window values for the positions `idx` (`layer(d)`: the session of
    depth d's windowed layers); windows no later layer or the trunk reads are dropped early."""
    start = windows.starts[INPUT_NAME][idx]
    vin = gather(volume, (0, 0, 0), start, windows.sizes[INPUT_NAME])
    for i, ((chans, sl), s0) in enumerate(zip(occlusions, start, strict=True)):
        cube = tuple(slice(max(s.start - int(a), 0), max(min(s.stop, full) - int(a), 0))
                     for s, a, full in zip(sl, s0, volume.shape[1:], strict=True))
        inside: Index = (i, list(chans), *cube)
        vin[inside] = np.float32(fill)
    vals = {INPUT_NAME: vin}
    last_use: dict[str, int] = {}
    for op in ops:
        for name in op.inputs:
            last_use[name] = max(last_use.get(name, 0), op.depth)
    keep = set(cut_tensors(split, max(op.depth for op in ops)))
    for d in sorted({op.depth for op in ops}):
        windowed = [op for op in ops if op.depth == d and op.windowed]
        feeds = {}
        for j, op in enumerate(windowed):
            before, _after, pad = padded[(op.inputs[0], op.pad_value)]
            crop = windows.crops[op.output][idx]
            x = gather(pad, before, crop, crop_size(op, windows.sizes[op.output]))
            paste(x, crop, vals[op.inputs[0]], windows.starts[op.inputs[0]][idx])
            feeds[f"x{j}"] = x
        if windowed:
            outs = layer(d).run(None, feeds)
            vals.update({op.output: o for op, o in zip(windowed, outs, strict=True)})
            del feeds
        for op in ops:
            if op.depth != d or op.windowed:
                continue
            vals[op.output] = elementwise(op, acts, vals, windows, idx)
        for name in [n for n in vals if last_use.get(n, 0) <= d and n not in keep]:
            del vals[name]  # no later layer reads it: free the chunk's windows
    return vals


def elementwise(op: LocalOp, acts: dict[str, np.ndarray], vals: dict[str, np.ndarray],
                windows: Windows, idx: np.ndarray) -> np.ndarray:
    """An elementwise op on the windows of its inputs (widened to its own window)."""
    start, size = windows.starts[op.output][idx], windows.sizes[op.output]
    xs = []
    for name in op.inputs:
        src_start = windows.starts[name][idx]
        if windows.sizes[name] == size and np.array_equal(src_start, start):
            xs.append(vals[name])
            continue
        x = gather(acts[name], (0, 0, 0), start, size)
        paste(x, start, vals[name], src_start)
        xs.append(x)
    if op.kind == "Relu":
        return np.maximum(xs[0], np.float32(0))
    if op.kind == "Add":
        return (xs[0] + xs[1]).astype(np.float32)
    if op.kind == "BatchNormalization":
        assert op.scale is not None and op.shift is not None  # set by analyse for batch norm
        return xs[0] * op.scale[:, None, None, None] + op.shift[:, None, None, None]
    return xs[0].copy()  # Identity

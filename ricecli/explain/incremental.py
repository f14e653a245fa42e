"""Exact incremental occlusion (Krypton-style): recompute only what a cube can change.

An occlusion cube changes the input in a small box. Through the local layers of the network
(conv, max-pool, ReLU, batch norm, the residual add) the changed values stay inside a box that
grows by each layer's reach: for an output index o a conv or pool reads the input
[o*s - p, o*s - p + K), K = (k - 1) * dilation + 1, so changed inputs [a, b) change outputs
ceil((a - K + 1 + p) / s) ... floor((b - 1 + p) / s). For every position and every tensor of the
incremental part this module keeps that box ("window"; one fixed size per tensor over all
positions, shifted back inside the tensor at the borders) and its values. A layer reads the
cached activation of the unoccluded volume around the window (padded with the layer's own
padding value: 0 for conv, -inf for max-pool), pastes its input's new window in, and runs the
layer without padding on that crop: the crop's outputs are the full layer's outputs there,
exactly. Positions go through each layer in fixed-size batches of windows, one ONNX Runtime call
per layer depth for all members. At the cut, each window is pasted into a copy of the cached
activation and the rest of the network (the trunk) runs on whole tensors. Chunks of positions
go to `threads` workers, each with its own single-threaded sessions (data parallelism beats
ORT's intra-op threads on these small convs); results come back in order, so the bits do not
depend on which worker finishes first.

Depth d = the number of conv/pool layers on the longest path from `volumes`; the cut is "every
local layer of depth <= d". It is chosen by measured cost: each depth's windowed layers against
the same layers on whole tensors, plus copying the cut tensors (`choose_depth`); the choice is
cached per model, geometry and thread count (in memory and in RICENET_CACHE) so that the same
inputs give the same bits. Depth 1 is the stem only (the convs that read `volumes`).

`analyse` returns a reason instead of a split when the graph does not fit; the caller then runs
the plain path. Needs the `onnx` package (no torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ricecli.inference.model import INPUT_NAME, OUTPUT_NAMES

TRUNK_BATCH_BYTES = 256 << 20  # trunk input bytes per call (the cut tensors of a batch)
DELTA_CHUNK_POSITIONS = 64  # positions per windowed-layer call (the fixed-size window batch)
WINDOW_CHUNK_BYTES = 1 << 30  # window values of one chunk, all workers together, at most
ELEMENTWISE = ("Relu", "Add", "Identity", "BatchNormalization")
Occlusion = tuple[Sequence[int], tuple[slice, ...]]  # occluded channels, cube (z, y, x) slices


@dataclass
class LocalOp:
    """One node of the local (translation-equivariant) part of the graph."""

    node: object
    kind: str  # Conv, MaxPool, Relu, Add, Identity, BatchNormalization
    inputs: list[str]  # spatial tensor inputs
    output: str
    depth: int
    reach: tuple[int, ...] = ()  # K per axis (conv / pool)
    strides: tuple[int, ...] = ()
    pads_begin: tuple[int, ...] = ()
    scale: np.ndarray | None = None  # batch norm as a per-channel affine map
    shift: np.ndarray | None = None

    @property
    def windowed(self) -> bool:
        return self.kind in ("Conv", "MaxPool")

    @property
    def pad_value(self) -> float:
        return float(-np.inf) if self.kind == "MaxPool" else 0.0


@dataclass
class NetworkSplit:
    """The local ops of a ricenet graph (topological order) and the model they came from."""

    model: object  # onnx.ModelProto
    ops: list[LocalOp]
    batch_shapes: list  # Shape(volumes)[0:1] nodes: re-pointed at a cut tensor in the trunk
    sha256: str

    @property
    def max_depth(self) -> int:
        return max(op.depth for op in self.ops)

    def at_most(self, depth: int) -> list[LocalOp]:
        return [op for op in self.ops if op.depth <= depth]


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _geometry(node, weight_dims: Sequence[int] | None) -> tuple | str:
    """(reach, strides, pads_begin) of a Conv/MaxPool node, or why it cannot be windowed."""
    a = _attrs(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return f"{node.name}: auto_pad"
    if node.op_type == "Conv":
        if int(a.get("group", 1)) != 1:
            return f"{node.name}: auto_pad or grouped conv"
        kernel = list(weight_dims[2:]) if weight_dims is not None else a.get("kernel_shape")
    else:
        if int(a.get("ceil_mode", 0)) or len(node.output) > 1 and node.output[1]:
            return f"{node.name}: ceil_mode or indices output"
        kernel = a.get("kernel_shape")
    if kernel is None or len(kernel) != 3:
        return f"{node.name}: not a 3D {node.op_type}"
    dil = [int(d) for d in a.get("dilations", [1, 1, 1])]
    pads = [int(p) for p in a.get("pads", [0] * 6)]
    return (tuple((int(k) - 1) * d + 1 for k, d in zip(kernel, dil, strict=True)),
            tuple(int(s) for s in a.get("strides", [1, 1, 1])), tuple(pads[:3]))


def _is_batch_shape(node) -> bool:
    """Shape(volumes, start=0, end=1): reads only N, which every cut tensor shares."""
    a = _attrs(node)
    return node.op_type == "Shape" and node.domain in ("", "ai.onnx") \
        and int(a.get("start", 0)) == 0 and int(a.get("end", -99)) == 1


def analyse(model_path) -> NetworkSplit | str:
    """The local ops of a ricenet ONNX graph, or why it does not fit (then: the plain path)."""
    import onnx
    from onnx import numpy_helper

    raw = Path(model_path).read_bytes()
    model = onnx.load_from_string(raw)
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in graph.node for a in n.attribute):
        return "graph has control flow (subgraphs)"
    inits = _constants(graph)
    if [i.name for i in graph.input if i.name not in inits] != [INPUT_NAME] \
            or any(o.name == INPUT_NAME for o in graph.output):
        return f"graph inputs are not just {INPUT_NAME!r}"
    readers = [n for n in graph.node if INPUT_NAME in n.input]
    batch_shapes = [n for n in readers if _is_batch_shape(n)]
    stems = [n for n in readers if n not in batch_shapes]
    if not stems or any(n.op_type != "Conv" or n.domain not in ("", "ai.onnx") for n in stems):
        return f"{INPUT_NAME!r} is read by {sorted({n.op_type for n in stems})}, not only Conv"
    depth = {INPUT_NAME: 0}
    ops: list[LocalOp] = []
    for node in graph.node:
        if node in batch_shapes:
            continue
        spatial = [i for i in node.input if i in depth]
        if not spatial:
            continue
        others = [i for i in node.input if i and i not in depth]
        if node.op_type == "Conv" and node.domain in ("", "ai.onnx"):
            ok = spatial == [node.input[0]] and all(i in inits for i in others)
            geo = _geometry(node, inits[node.input[1]].dims if ok else None)
        elif node.op_type == "MaxPool" and node.domain in ("", "ai.onnx"):
            ok, geo = not others, _geometry(node, None)
        else:
            geo = None
            ok = node.op_type in ELEMENTWISE and node.domain in ("", "ai.onnx")
            if node.op_type == "BatchNormalization":
                ok = ok and spatial == [node.input[0]] and all(i in inits for i in others)
            else:
                ok = ok and len(spatial) == len(node.input)
        if node in stems and (not ok or isinstance(geo, str)):
            return geo if isinstance(geo, str) else f"{node.name}: weights are not an initializer"
        if not ok or isinstance(geo, str) or len(node.output) < 1:
            continue  # not local: its consumers are not either (they miss this input)
        d = max(depth[i] for i in spatial) + (1 if geo else 0)
        op = LocalOp(node=node, kind=node.op_type, inputs=spatial, output=node.output[0],
                     depth=d)
        if geo:
            op.reach, op.strides, op.pads_begin = geo
        if node.op_type == "BatchNormalization":
            a = _attrs(node)
            s, b, m, v = (numpy_helper.to_array(inits[i]).astype(np.float64)
                          for i in node.input[1:5])
            op.scale = (s / np.sqrt(v + float(a.get("epsilon", 1e-5)))).astype(np.float32)
            op.shift = (b - m * op.scale).astype(np.float32)
        depth[op.output] = d
        ops.append(op)
    return NetworkSplit(model=model, ops=ops, batch_shapes=batch_shapes,
                        sha256=hashlib.sha256(raw).hexdigest())


def _constants(graph) -> dict:
    """Initializers, plus Constant and Identity(constant) outputs, as named TensorProtos."""
    from onnx import helper

    out = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") \
                and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = helper.get_attribute_value(node.attribute[0])
        elif node.op_type == "Identity" and node.input[0] in out:
            out[node.output[0]] = out[node.input[0]]
    return out


def split_stem(model_path) -> NetworkSplit | str:
    """Kept name: the split of a graph (`analyse`), or why it does not fit."""
    return analyse(model_path)


# --- graphs for ONNX Runtime ------------------------------------------------------------------

def _model_bytes(model, graph) -> bytes:
    from onnx import helper

    out = helper.make_model(graph, opset_imports=list(model.opset_import),
                            ir_version=model.ir_version)
    out.functions.extend(model.functions)
    return out.SerializeToString()


def _reachable(graph, outputs: list[str], stop: set[str]) -> list:
    """Nodes needed for `outputs`, stopping at `stop` tensors, in graph (topological) order."""
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    seen: set[int] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in stop or name not in producer or producer[name] in seen:
            continue
        seen.add(producer[name])
        stack += [i for i in graph.node[producer[name]].input if i]
    return [graph.node[i] for i in sorted(seen)]


def cut_tensors(split: NetworkSplit, depth: int) -> list[str]:
    """Outputs of the incremental ops (depth <= d) that the trunk reads."""
    inc = split.at_most(depth)
    made = {op.output for op in inc}
    inc_nodes = {id(op.node) for op in inc}
    wanted: list[str] = []
    for node in split.model.graph.node:
        if id(node) in inc_nodes:
            continue
        for i in node.input:
            if i in made and i not in wanted:
                wanted.append(i)
    wanted += [o.name for o in split.model.graph.output if o.name in made and o.name not in wanted]
    return wanted


def trunk_bytes(split: NetworkSplit, cut: list[str]) -> bytes | str:
    """The graph from the cut tensors to the outputs, or why there is none."""
    import copy

    from onnx import TensorProto, helper

    model = split.model
    graph = copy.deepcopy(model.graph)
    for node in graph.node:  # the batch size N: every cut tensor has the same first dim
        if _is_batch_shape(node):
            node.input[0] = cut[0]
    kept = _reachable(graph, list(OUTPUT_NAMES), set(cut))
    if any(INPUT_NAME in n.input for n in kept):
        return f"the trunk still reads {INPUT_NAME!r}"
    used = {i for n in kept for i in n.input}
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", "c", "d", "h", "w"])
              for name in cut]
    outputs = [o for o in graph.output if o.name in OUTPUT_NAMES]
    trunk = helper.make_graph(kept, "ricenet_trunk", inputs, outputs,
                              [t for t in graph.initializer if t.name in used],
                              value_info=[v for v in graph.value_info if v.name in used])
    return _model_bytes(model, trunk)


def _base_bytes(split: NetworkSplit, tensors: list[str]) -> bytes:
    """The whole graph with the given local tensors as extra outputs."""
    import copy

    from onnx import TensorProto, helper

    model = copy.deepcopy(split.model)
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                              for t in tensors if t not in have)
    return model.SerializeToString()


def _layer_bytes(split: NetworkSplit, ops: list[LocalOp], pads: bool) -> bytes:
    """One graph with the given conv/pool ops side by side; input x{i} -> output y{i}.

    pads=False: the windowed form (no padding; the crop carries it); True: the original op.
    """
    import copy

    from onnx import TensorProto, helper

    inits = _constants(split.model.graph)
    nodes, used, ins, outs = [], [], [], []
    for i, op in enumerate(ops):
        node = helper.make_node(op.kind, [f"x{i}", *op.node.input[1:]], [f"y{i}"],
                                name=f"n{i}")
        for a in op.node.attribute:
            if a.name != "pads" or pads:
                node.attribute.append(a)
        nodes.append(node)
        for name in op.node.input[1:]:
            if name:
                tensor = copy.deepcopy(inits[name])
                tensor.name = name
                used.append(tensor)
        ins.append(helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT,
                                                 ["N", "c", "d", "h", "w"]))
        outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
    unique = list({t.name: t for t in used}.values())
    return _model_bytes(split.model, helper.make_graph(nodes, "ricenet_layer", ins, outs,
                                                       unique))


def _session(model_bytes: bytes, threads: int, spin: bool = True):
    """An ORT CPU session with the engine's threads (intra-op = physical cores)."""
    import onnxruntime as ort

    from ricecli.inference.ort_rewrite import session_options

    return ort.InferenceSession(model_bytes, session_options(threads, spin),
                                providers=["CPUExecutionProvider"])


# --- windows ----------------------------------------------------------------------------------

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


def gather(padded: np.ndarray, margin: Sequence[int], starts: np.ndarray,
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
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    for g, key in enumerate(uniq):
        idx = np.flatnonzero(inverse.ravel() == g)
        d0, n, s0 = key[:3], key[3:6], key[6:]
        if (n <= 0).any():
            continue
        dsl = tuple(slice(int(a), int(a + b)) for a, b in zip(d0, n, strict=True))
        ssl = tuple(slice(int(a), int(a + b)) for a, b in zip(s0, n, strict=True))
        if len(idx) == len(dst):
            dst[(slice(None), slice(None), *dsl)] = src[(slice(None), slice(None), *ssl)]
        else:
            dst[(idx, slice(None), *dsl)] = src[(idx, slice(None), *ssl)]


def _cache_dir() -> Path:
    return Path(os.environ.get("RICENET_CACHE", Path.home() / ".cache" / "ricenet")) \
        / "incremental"


# --- the runner -------------------------------------------------------------------------------

class IncrementalNetwork:
    """Probabilities of occluded copies of one volume, layers run on windows up to a depth."""

    def __init__(self, split: NetworkSplit, threads: int, depth: int | None = None):
        self.split = split
        self.threads = threads
        self.fixed_depth = depth
        self.depth: int | None = None
        self.costs: dict[str, list] = {}
        self.workers = max(1, threads)  # single-threaded session sets, one chunk each at a time
        self._layers: dict[tuple[int, bool, int], object] = {}
        self._trunks: dict[tuple[int, int], object] = {}
        self._base = _session(_base_bytes(split, [op.output for op in split.ops]), threads,
                              spin=False)
        self._last: tuple[str, dict] | None = None  # (volume hash, activations): one volume

    @classmethod
    def open(cls, model_path, threads: int, depth: int | None = None) \
            -> IncrementalNetwork | str:
        """The incremental runner for a model file, or the reason it does not apply."""
        split = analyse(model_path)
        if isinstance(split, str):
            return split
        if depth is not None:
            depth = min(depth, split.max_depth)
        return cls(split, threads, depth)

    # sessions, built on first use
    def _layer(self, d: int, pads: bool = False, worker: int = 0):
        key = (d, pads, worker)
        if key not in self._layers:
            ops = [op for op in self.split.ops if op.depth == d and op.windowed]
            self._layers[key] = _session(_layer_bytes(self.split, ops, pads), 1, spin=False)
        return self._layers[key]

    def _trunk(self, depth: int, worker: int = 0):
        if (depth, worker) not in self._trunks:
            out = trunk_bytes(self.split, cut_tensors(self.split, depth))
            if isinstance(out, str):
                raise ValueError(out)
            self._trunks[(depth, worker)] = _session(out, 1, spin=False)
        return self._trunks[(depth, worker)]

    @property
    def method(self) -> str:
        """The label explain.json records."""
        if self.depth is None:
            return "incremental"
        if self.depth == 1:
            return "incremental-stem"
        n = sum(op.windowed for op in self.split.at_most(self.depth))
        return f"incremental-layers (depth {self.depth}: {n} conv/pool layers on windows)"

    def base(self, volume: np.ndarray) -> dict[str, np.ndarray]:
        """Every local tensor [C, z, y, x] of the unoccluded volume [C, z, y, x] (the last
        volume's are kept: explain and benchmarks call again with the same volume)."""
        key = f"{volume.shape}:{hashlib.sha1(volume.tobytes()).hexdigest()}"
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        names = [op.output for op in self.split.ops]
        outs = self._base.run(names, {INPUT_NAME: volume[None]})
        acts = {n: np.asarray(o[0], np.float32) for n, o in zip(names, outs, strict=True)}
        acts[INPUT_NAME] = volume.copy()
        self._last = (key, acts)
        return acts

    def batches(self, volume: np.ndarray, occlusions: Sequence[Occlusion], fill: float,
                batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(mean [n, 2], members [n, M, 2]) per `batch` occlusions (channels, cube slices)."""
        volume = np.ascontiguousarray(volume, np.float32)
        acts = self.base(volume)
        shapes = {k: v.shape for k, v in acts.items() if isinstance(k, str)}
        windows = plan_windows(self.split.ops, shapes, [sl for _, sl in occlusions])
        depth = self.fixed_depth or self.choose_depth(acts, windows, batch)
        self.depth = depth
        ops = self.split.at_most(depth)
        cut = cut_tensors(self.split, depth)
        pkey = ("padded", depth, json.dumps(sorted((k, list(v)) for k, v in
                                                   windows.sizes.items())))
        if acts.get(pkey) is None:  # kept with the base activations of this volume
            acts[pkey] = self._padded(acts, ops, windows)
        padded = acts[pkey]
        per_pos = sum(acts[c].nbytes for c in cut)
        batch = max(1, min(batch, TRUNK_BATCH_BYTES // max(per_pos * self.workers, 1)))
        window_bytes = sum(4 * acts[op.output].shape[0] * int(np.prod(windows.sizes[op.output]))
                           for op in ops)  # per position, all windows at once (the worst case)
        fits = max(1, WINDOW_CHUNK_BYTES // max(window_bytes * self.workers, 1))
        chunk = batch * max(1, min(DELTA_CHUNK_POSITIONS, fits) // batch)
        chunk = max(1, min(chunk, -(-len(occlusions) // self.workers)))  # every worker busy

        def work(worker: int, idx: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
            vals = self._windows(volume, acts, padded, ops, windows, idx,
                                 [occlusions[i] for i in idx], fill, worker)
            trunk, out = self._trunk(depth, worker), []
            for i in range(0, len(idx), batch):
                part = idx[i:i + batch]
                feeds = {}
                for name in cut:
                    full = np.repeat(acts[name][None], len(part), axis=0)
                    paste(full, np.zeros((len(part), 3), np.int64), vals[name][i:i + batch],
                          windows.starts[name][part])
                    feeds[name] = full
                probs, members = trunk.run(list(OUTPUT_NAMES), feeds)
                out.append((probs, members))
            return out

        chunks = [np.arange(a, min(a + chunk, len(occlusions)))
                  for a in range(0, len(occlusions), chunk)]
        if self.workers == 1 or len(chunks) == 1:
            for idx in chunks:
                yield from work(0, idx)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers) as pool:  # ORT runs without the GIL
            for first in range(0, len(chunks), self.workers):
                group = chunks[first:first + self.workers]
                futures = [pool.submit(work, w, idx) for w, idx in enumerate(group)]
                for future in futures:  # in order: the same bits whatever finishes first
                    yield from future.result()

    def probabilities(self, volume: np.ndarray, occlusions: Sequence[Occlusion],
                      fill: float, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(mean [N, 2], members [N, M, 2]) of all occlusions, as the full model would give."""
        parts = list(self.batches(volume, occlusions, fill, batch))
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def _padded(self, acts, ops, windows: Windows) -> dict[tuple[str, float], tuple]:
        """Each windowed op's input, padded (with its pad value) so every crop fits."""
        out: dict[tuple[str, float], tuple] = {}
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

    def _windows(self, volume, acts, padded, ops, windows: Windows, idx: np.ndarray,
                 occlusions: Sequence[Occlusion], fill: float,
                 worker: int = 0) -> dict[str, np.ndarray]:
        """Each local tensor's window values for the positions `idx`."""
        start = windows.starts[INPUT_NAME][idx]
        vin = gather(volume, (0, 0, 0), start, windows.sizes[INPUT_NAME])
        for i, ((chans, sl), s0) in enumerate(zip(occlusions, start, strict=True)):
            cube = tuple(slice(max(s.start - int(a), 0), max(min(s.stop, full) - int(a), 0))
                         for s, a, full in zip(sl, s0, volume.shape[1:], strict=True))
            vin[(i, list(chans), *cube)] = np.float32(fill)
        vals = {INPUT_NAME: vin}
        last_use: dict[str, int] = {}
        for op in ops:
            for name in op.inputs:
                last_use[name] = max(last_use.get(name, 0), op.depth)
        keep = set(cut_tensors(self.split, max(op.depth for op in ops)))
        for d in sorted({op.depth for op in ops}):
            layer = [op for op in ops if op.depth == d and op.windowed]
            feeds = {}
            for j, op in enumerate(layer):
                before, _after, pad = padded[(op.inputs[0], op.pad_value)]
                crop = windows.crops[op.output][idx]
                x = gather(pad, before, crop, crop_size(op, windows.sizes[op.output]))
                paste(x, crop, vals[op.inputs[0]], windows.starts[op.inputs[0]][idx])
                feeds[f"x{j}"] = x
            if layer:
                outs = self._layer(d, worker=worker).run(None, feeds)
                vals.update({op.output: o for op, o in zip(layer, outs, strict=True)})
                del feeds
            for op in ops:
                if op.depth != d or op.windowed:
                    continue
                vals[op.output] = self._elementwise(op, acts, vals, windows, idx)
            for name in [n for n in vals if last_use.get(n, 0) <= d and n not in keep]:
                del vals[name]  # no later layer reads it: free the chunk's windows
        return vals

    @staticmethod
    def _elementwise(op: LocalOp, acts, vals, windows: Windows, idx) -> np.ndarray:
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
            return xs[0] * op.scale[:, None, None, None] + op.shift[:, None, None, None]
        return xs[0].copy()  # Identity

    # --- the per-depth choice -----------------------------------------------------------------

    def choose_depth(self, acts, windows: Windows, batch: int) -> int:
        """The depth with the least measured cost per position (cached; see the module doc)."""
        key = self._cache_key(acts, windows)
        path = _cache_dir() / f"{key}.json"
        if key in _CHOICES:
            return _CHOICES[key]
        try:
            _CHOICES[key] = int(json.loads(path.read_text())["depth"])
            return _CHOICES[key]
        except (OSError, ValueError, KeyError):
            pass
        depth, self.costs = self._measure(acts, windows, batch)
        _CHOICES[key] = depth
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"depth": depth, "costs_s": self.costs}) + "\n")
        except OSError:
            pass
        return depth

    def _cache_key(self, acts, windows: Windows) -> str:
        text = json.dumps([self.split.sha256, self.threads, list(acts[INPUT_NAME].shape),
                           sorted((k, list(v)) for k, v in windows.sizes.items())])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def _measure(self, acts, windows: Windows, batch: int) -> tuple[int, dict]:
        """Per depth: windowed layers (per position) vs whole layers; copying the cut tensors."""
        n = int(min(len(next(iter(windows.starts.values()))), DELTA_CHUNK_POSITIONS))
        idx = np.arange(n)
        candidates = [1]
        for d in range(2, self.split.max_depth + 1):
            outs = [op for op in self.split.ops if op.depth == d and op.windowed]
            if not outs or all(windows.sizes[op.output] == acts[op.output].shape[1:]
                               for op in outs):
                break
            candidates.append(d)
        inc, whole = {}, {}
        for d in candidates[1:]:
            layer = [op for op in self.split.ops if op.depth == d and op.windowed]
            feeds_w, feeds_f = {}, {}
            for j, op in enumerate(layer):
                crop = windows.crops[op.output][idx]
                size = crop_size(op, windows.sizes[op.output])
                src = acts[op.inputs[0]]
                pads = [(0, 0)] + [(int(max(0, -crop[:, a].min())),
                                    int(max(0, (crop[:, a] + size[a]).max() - src.shape[a + 1])))
                                   for a in range(3)]
                pad = np.pad(src, pads, constant_values=op.pad_value)
                feeds_w[f"x{j}"] = gather(pad, [p[0] for p in pads[1:]], crop, size)
                feeds_f[f"x{j}"] = src[None]
            inc[d] = _best_time(self._layer(d), feeds_w) / n
            whole[d] = _best_time(self._layer(d, pads=True), feeds_f)
        start = time.perf_counter()
        copies = 0  # the copy rate: pasting windows into whole cut tensors costs a copy
        while copies < 3 or time.perf_counter() - start < 0.02:
            np.repeat(acts[INPUT_NAME][None], 4, axis=0)
            copies += 1
        copy_rate = copies * 4 * acts[INPUT_NAME].nbytes / (time.perf_counter() - start)
        costs: dict[str, list] = {"depth": [], "seconds_per_position": []}
        best, best_cost = 1, None
        for d in candidates:
            cut_bytes = sum(acts[c].nbytes for c in cut_tensors(self.split, d))
            cost = sum(inc[e] for e in candidates[1:] if e <= d) \
                + sum(whole[e] for e in candidates[1:] if e > d) + cut_bytes / copy_rate
            costs["depth"].append(d)
            costs["seconds_per_position"].append(round(cost, 6))
            if best_cost is None or cost < best_cost:
                best, best_cost = d, cost
        return best, costs


def _best_time(session, feeds, repeats: int = 3, enough_s: float = 0.1) -> float:
    """Least wall time of a few runs after a warm-up (one run when a run takes long)."""
    t = time.perf_counter()
    session.run(None, feeds)
    best = float("inf") if time.perf_counter() - t < enough_s else 0.0
    for _ in range(repeats if best else 1):
        t = time.perf_counter()
        session.run(None, feeds)
        best = min(best or float("inf"), time.perf_counter() - t)
    return best


_CHOICES: dict[str, int] = {}


class IncrementalStem(IncrementalNetwork):
    """The stem-only form (depth 1): the convs that read `volumes` run on windows."""

    @classmethod
    def open(cls, model_path, threads: int, depth: int | None = 1) -> IncrementalStem | str:
        return super().open(model_path, threads, depth=1 if depth is None else depth)

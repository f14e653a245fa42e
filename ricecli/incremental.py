"""Exact incremental occlusion: run the stem conv once, then only the trunk per position.

A convolution is linear, so for an occluded volume x' = x + delta (delta = fill - x inside the
cube, 0 elsewhere): conv(x') = conv(x) + conv_without_bias(delta), and conv(delta) is nonzero
only in a small output window. The ONNX graph is split into the stem (the Conv nodes that read
`volumes`, one per ensemble member) and the trunk (conv outputs -> probabilities); the stem runs
once on the unoccluded volume, each position adds conv(delta) of a small crop into a copy of
that output, and the trunk runs on the batch. The zero padding of the crop is exact because
delta is 0 outside the cube (and the model pads with zeros too). An output index o reads the
input [o*s - p, o*s - p + K) with K = (k - 1) * dilation + 1.

Needs the `onnx` package (no torch). `split_stem` returns a reason instead of a split when the
graph does not fit the pattern; the caller then runs the plain path.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ricecli.model import INPUT_NAME, OUTPUT_NAMES

TRUNK_BATCH_BYTES = 256 << 20  # trunk input bytes per call (the stem outputs of a batch)
DELTA_CHUNK_POSITIONS = 512  # crops per crop-conv call (their outputs are small)
Occlusion = tuple[Sequence[int], tuple[slice, ...]]  # occluded channels, cube (z, y, x) slices


@dataclass(frozen=True)
class StemConv:
    """One Conv node reading `volumes`: its output name and what it computes."""

    output: str
    weight: np.ndarray  # [M, C, k, k, k] float32
    bias: np.ndarray | None
    strides: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    dilations: tuple[int, ...]

    @property
    def reach(self) -> tuple[int, ...]:
        """Input extent K read by one output voxel, per axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.weight.shape[2:], self.dilations,
                                                      strict=True))


@dataclass
class StemSplit:
    """The stem convs plus serialized ONNX graphs: stem, trunk and the crop conv."""

    convs: list[StemConv]
    stem: bytes  # volumes -> conv outputs
    trunk: bytes  # conv outputs -> probabilities, member_probabilities
    delta: bytes  # crops [N, C, d, h, w] -> conv without bias/padding, one output per conv


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _stem_conv(node, inits: dict) -> StemConv | str:
    """Read a Conv node's weights and geometry, or say why it cannot be used."""
    from onnx import numpy_helper

    a = _attrs(node)
    if node.input[0] != INPUT_NAME or node.input[1] not in inits:
        return f"{node.name}: weights are not an initializer"
    if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return f"{node.name}: bias is not an initializer"
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or int(a.get("group", 1)) != 1:
        return f"{node.name}: auto_pad or grouped conv"
    weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    if weight.ndim != 5:
        return f"{node.name}: not a 3D conv"
    bias = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
            if len(node.input) > 2 and node.input[2] else None)
    pads = tuple(int(p) for p in a.get("pads", [0] * 6))
    return StemConv(output=node.output[0], weight=weight, bias=bias,
                    strides=tuple(int(s) for s in a.get("strides", [1, 1, 1])),
                    pads_begin=pads[:3], pads_end=pads[3:],
                    dilations=tuple(int(d) for d in a.get("dilations", [1, 1, 1])))


def split_stem(model_path) -> StemSplit | str:
    """Split a ricenet ONNX graph into stem convs and trunk, or return why not."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in graph.node for a in n.attribute):
        return "graph has control flow (subgraphs)"
    if [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}] \
            != [INPUT_NAME] or any(o.name == INPUT_NAME for o in graph.output):
        return f"graph inputs are not just {INPUT_NAME!r}"
    inits = {t.name: t for t in graph.initializer}
    readers = [n for n in graph.node if INPUT_NAME in n.input]
    batch_shapes = [n for n in readers if _is_batch_shape(n)]
    readers = [n for n in readers if n not in batch_shapes]
    if not readers or any(n.op_type != "Conv" or n.domain not in ("", "ai.onnx")
                          for n in readers):
        return f"{INPUT_NAME!r} is read by {sorted({n.op_type for n in readers})}, not only Conv"
    convs = [_stem_conv(n, inits) for n in readers]
    bad = [c for c in convs if isinstance(c, str)]
    if bad:
        return bad[0]
    stem_outputs = [c.output for c in convs]
    for n in batch_shapes:  # the batch size N: the stem output has the same first dim
        n.input[0] = stem_outputs[0]
    kept = _reachable(graph, list(OUTPUT_NAMES), set(stem_outputs))
    if any(INPUT_NAME in n.input for n in kept):
        return f"the trunk still reads {INPUT_NAME!r}"
    used = {i for n in kept for i in n.input}
    trunk_inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                  ["N", c.weight.shape[0], "d", "h", "w"])
                    for name, c in zip(stem_outputs, convs, strict=True)]
    outputs = [o for o in graph.output if o.name in OUTPUT_NAMES]
    trunk = helper.make_graph(kept, "ricenet_trunk", trunk_inputs, outputs,
                              [t for t in graph.initializer if t.name in used],
                              value_info=[v for v in graph.value_info if v.name in used])
    stem_nodes = [n for n in graph.node if n in readers]
    stem_used = {i for n in stem_nodes for i in n.input}
    stem_out = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                for name in stem_outputs]
    stem = helper.make_graph(stem_nodes, "ricenet_stem", [graph.input[0]], stem_out,
                             [t for t in graph.initializer if t.name in stem_used])
    return StemSplit(convs=convs, stem=_model_bytes(model, stem), trunk=_model_bytes(model, trunk),
                     delta=_model_bytes(model, _delta_graph(convs)))


def _is_batch_shape(node) -> bool:
    """Shape(volumes, start=0, end=1): reads only N, which every stem output shares."""
    a = _attrs(node)
    return node.op_type == "Shape" and node.domain in ("", "ai.onnx") \
        and int(a.get("start", 0)) == 0 and int(a.get("end", -99)) == 1


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


def _delta_graph(convs: Sequence[StemConv]):
    """Conv of a crop with each stem conv's weights: no bias, no padding, dynamic spatial dims."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, outs = [], [], []
    for i, c in enumerate(convs):
        inits.append(numpy_helper.from_array(c.weight, f"w{i}"))
        nodes.append(helper.make_node("Conv", ["crop", f"w{i}"], [f"d{i}"],
                                      kernel_shape=list(c.weight.shape[2:]),
                                      strides=list(c.strides), dilations=list(c.dilations),
                                      pads=[0] * 6, group=1))
        outs.append(helper.make_tensor_value_info(f"d{i}", TensorProto.FLOAT, None))
    crop = helper.make_tensor_value_info("crop", TensorProto.FLOAT,
                                         ["N", convs[0].weight.shape[1], "d", "h", "w"])
    return helper.make_graph(nodes, "ricenet_stem_delta", [crop], outs, inits)


def _model_bytes(model, graph) -> bytes:
    from onnx import helper

    out = helper.make_model(graph, opset_imports=list(model.opset_import),
                            ir_version=model.ir_version)
    out.functions.extend(model.functions)
    return out.SerializeToString()


def _session(model_bytes: bytes, threads: int, spin: bool = True):
    """An ORT CPU session with the engine's threads (intra-op = physical cores)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if not spin:  # its threads would spin after the run and steal the trunk's cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class _Window:
    """Per axis: where a position's crop starts in the input and its outputs start."""

    crop_start: tuple[int, ...]  # input index of crop voxel 0 (may be < 0 or past the end)
    out_start: tuple[int, ...]  # output index of delta output 0


class IncrementalStem:
    """Probabilities of occluded copies of one volume, with the stem conv run incrementally."""

    def __init__(self, split: StemSplit, threads: int):
        self.split = split
        self.convs = split.convs
        if len({(c.strides, c.pads_begin, c.reach) for c in self.convs}) != 1:
            raise ValueError("stem convs differ in geometry")  # split_stem callers check this
        self.stem = _session(split.stem, threads, spin=False)  # runs once per volume
        self.trunk = _session(split.trunk, threads)
        self.delta = _session(split.delta, threads, spin=False)  # once per chunk
        self.threads = threads

    @classmethod
    def open(cls, model_path, threads: int) -> IncrementalStem | str:
        """The incremental runner for a model file, or the reason it does not apply."""
        split = split_stem(model_path)
        if isinstance(split, str):
            return split
        if len({(c.strides, c.pads_begin, c.reach) for c in split.convs}) != 1:
            return "stem convs of the members differ in stride, padding or size"
        return cls(split, threads)

    def base(self, volume: np.ndarray) -> list[np.ndarray]:
        """Stem outputs [M, *out] of the unoccluded volume [C, z, y, x], one per conv."""
        outs = self.stem.run([c.output for c in self.convs], {INPUT_NAME: volume[None]})
        return [np.asarray(o[0], np.float32) for o in outs]

    def _geometry(self, cubes: Sequence[tuple[slice, ...]]) -> tuple[tuple[int, ...], list]:
        """Crop size per axis (the same for all cubes) and each cube's window."""
        c = self.convs[0]
        los, spans = [], []
        for sl in cubes:
            lo, span = [], []
            for axis, s in enumerate(sl):
                st, p, k = c.strides[axis], c.pads_begin[axis], c.reach[axis]
                first = math.ceil((s.start - k + 1 + p) / st)
                last = (s.stop - 1 + p) // st
                lo.append(first)
                span.append(last - first + 1)
            los.append(lo)
            spans.append(span)
        n_out = np.max(np.asarray(spans), axis=0)
        size = tuple(int((n - 1) * st + k) for n, st, k in zip(n_out, c.strides, c.reach,
                                                                strict=True))
        windows = [_Window(tuple(o * st - p for o, st, p in zip(lo, c.strides, c.pads_begin,
                                                                 strict=True)), tuple(lo))
                   for lo in los]
        return size, windows

    def batches(self, volume: np.ndarray, occlusions: Sequence[Occlusion], fill: float,
                batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(mean [n, 2], members [n, M, 2]) per `batch` occlusions (channels, cube slices).

        The crop convs run ahead in large chunks: ONNX Runtime sessions that take turns every
        batch lose much of their speed to each other's spinning threads.
        """
        base = self.base(volume)
        batch = max(1, min(batch, TRUNK_BATCH_BYTES // max(sum(b.nbytes for b in base), 1)))
        chunk = batch * max(1, DELTA_CHUNK_POSITIONS // batch)
        for first in range(0, len(occlusions), chunk):
            part = occlusions[first:first + chunk]
            windows, deltas = self._deltas(volume, part, fill)
            for i in range(0, len(part), batch):
                yield self._trunk(base, windows[i:i + batch], [d[i:i + batch] for d in deltas])

    def probabilities(self, volume: np.ndarray, occlusions: Sequence[Occlusion],
                      fill: float, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(mean [N, 2], members [N, M, 2]) of all occlusions, as the full model would give."""
        parts = list(self.batches(volume, occlusions, fill, batch))
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def _deltas(self, volume, occlusions, fill) -> tuple[list[_Window], list[np.ndarray]]:
        """Each occlusion's window and conv(delta crop) per stem conv."""
        size, windows = self._geometry([sl for _, sl in occlusions])
        crops = np.zeros((len(occlusions), volume.shape[0], *size), np.float32)
        for i, ((chans, sl), w) in enumerate(zip(occlusions, windows, strict=True)):
            src, dst = [], []
            for s, c0, n, full in zip(sl, w.crop_start, size, volume.shape[1:], strict=True):
                a, b = max(s.start, c0), min(s.stop, c0 + n, full)  # the cube inside the crop
                src.append(slice(a, b))
                dst.append(slice(a - c0, b - c0))
            chans = list(chans)
            crops[(i, chans, *dst)] = np.float32(fill) - volume[(chans, *src)]
        return windows, self.delta.run(None, {"crop": crops})

    def _trunk(self, base, windows, deltas) -> tuple[np.ndarray, np.ndarray]:
        """The trunk on base stem outputs plus each window's delta."""
        feeds = {}
        for conv, b, d in zip(self.convs, base, deltas, strict=True):
            batch = np.repeat(b[None], len(windows), axis=0)
            for i, w in enumerate(windows):
                src, dst = [slice(None)], [i, slice(None)]
                for o0, n, full in zip(w.out_start, d.shape[2:], b.shape[1:], strict=True):
                    lo, hi = max(o0, 0), min(o0 + n, full)
                    src.append(slice(lo - o0, hi - o0))
                    dst.append(slice(lo, hi))
                batch[tuple(dst)] += d[i][tuple(src)]
            feeds[conv.output] = batch
        probs, members = self.trunk.run(list(OUTPUT_NAMES), feeds)
        return probs, members

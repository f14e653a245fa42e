"""The network as incremental occlusion sees it: its local layers, their depth and reach.

Local (translation-equivariant) layers: Conv, MaxPool, ReLU, BatchNormalization, Identity and
the residual Add, reachable from `volumes` through local layers only. For an output index o a
conv or pool reads the input [o*s - p, o*s - p + K), K = (k - 1) * dilation + 1 (its reach).
Depth = the number of conv/pool layers on the longest path from `volumes`. `analyse` returns
a reason instead of a split when the graph does not fit (the caller then runs the plain path).
Stem convs merged at export (one Conv + a channel Split) are read as the convs they came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ricecli.contract import INPUT_NAME

if TYPE_CHECKING:
    import onnx

ELEMENTWISE = ("Relu", "Add", "Identity", "BatchNormalization")
Geometry = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # reach, strides, pads


@dataclass
class LocalOp:
    """One node of the local (translation-equivariant) part of the graph."""

    node: onnx.NodeProto
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
        """Conv and max-pool run on windows; the elementwise ops in numpy."""
        return self.kind in ("Conv", "MaxPool")

    @property
    def pad_value(self) -> float:
        """What the layer's padding holds: -inf for max-pool, 0 for conv."""
        return float(-np.inf) if self.kind == "MaxPool" else 0.0


@dataclass
class NetworkSplit:
    """The local ops of a ricenet graph (topological order) and the model they came from."""

    model: onnx.ModelProto
    ops: list[LocalOp]
    batch_shapes: list[onnx.NodeProto]  # Shape(volumes)[0:1]: re-pointed at a cut tensor
    sha256: str

    @property
    def max_depth(self) -> int:
        """The deepest local op's depth."""
        return max(op.depth for op in self.ops)

    def at_most(self, depth: int) -> list[LocalOp]:
        """The local ops of depth <= `depth` (the incremental part for that depth)."""
        return [op for op in self.ops if op.depth <= depth]


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _geometry(node: onnx.NodeProto, weight_dims: Sequence[int] | None) -> Geometry | str:
    """(reach, strides, pads_begin) of a Conv/MaxPool node, or why it cannot be windowed."""
    a = attributes(node)
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


def is_batch_shape(node: onnx.NodeProto) -> bool:
    """Shape(volumes, start=0, end=1): reads only N, which every cut tensor shares."""
    a = attributes(node)
    return node.op_type == "Shape" and node.domain in ("", "ai.onnx") \
        and int(a.get("start", 0)) == 0 and int(a.get("end", -99)) == 1


def analyse(model_path: str | Path) -> NetworkSplit | str:
    """The local ops of a ricenet ONNX graph, or why it does not fit (then: the plain path)."""
    import onnx
    from onnx import numpy_helper

    raw = Path(model_path).read_bytes()
    model = onnx.load_from_string(raw)
    graph = model.graph
    split_merged_convs(graph)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in graph.node for a in n.attribute):
        return "graph has control flow (subgraphs)"
    inits = constants(graph)
    if [i.name for i in graph.input if i.name not in inits] != [INPUT_NAME] \
            or any(o.name == INPUT_NAME for o in graph.output):
        return f"graph inputs are not just {INPUT_NAME!r}"
    readers = [n for n in graph.node if INPUT_NAME in n.input]
    batch_shapes = [n for n in readers if is_batch_shape(n)]
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
        geo: Geometry | str | None
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
            a = attributes(node)
            s, b, m, v = (numpy_helper.to_array(inits[i]).astype(np.float64)
                          for i in node.input[1:5])
            op.scale = (s / np.sqrt(v + float(a.get("epsilon", 1e-5)))).astype(np.float32)
            op.shift = (b - m * op.scale).astype(np.float32)
        depth[op.output] = d
        ops.append(op)
    return NetworkSplit(model=model, ops=ops, batch_shapes=batch_shapes,
                        sha256=hashlib.sha256(raw).hexdigest())


def constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
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


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove the initializers no node reads any more (after a rewrite replaced their users)."""
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def split_merged_convs(graph: onnx.GraphProto) -> int:
    """Undo export/merge_convs.py in place: a Conv whose only reader is a channel Split becomes
    one Conv per part, so each member's stem is a local op of its own (the very convs, weights
    and outputs of the unmerged graph). Returns how many Convs were split."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    done = 0
    for conv in [n for n in graph.node if n.op_type == "Conv" and n.domain in ("", "ai.onnx")]:
        users = readers.get(conv.output[0], [])
        if len(users) != 1 or users[0].op_type != "Split" or len(conv.input) < 3 \
                or any(i not in inits for i in conv.input[1:3]):
            continue
        split = users[0]
        if int(attributes(split).get("axis", 0)) != 1 or len(split.input) < 2 \
                or split.input[1] not in inits:
            continue
        sizes = numpy_helper.to_array(inits[split.input[1]]).tolist()
        weight, bias = (numpy_helper.to_array(inits[i]) for i in conv.input[1:3])
        edges = np.cumsum([0, *sizes])
        parts, tensors = [], []
        for k, out in enumerate(split.output):
            stem = f"{conv.name or conv.output[0]}_part{k}"
            tensors += [numpy_helper.from_array(weight[edges[k]:edges[k + 1]], f"{stem}_w"),
                        numpy_helper.from_array(bias[edges[k]:edges[k + 1]], f"{stem}_b")]
            part = helper.make_node("Conv", [conv.input[0], f"{stem}_w", f"{stem}_b"], [out],
                                    name=stem)
            part.attribute.extend(conv.attribute)
            parts.append(part)
        nodes = list(graph.node)
        at = nodes.index(conv)
        nodes = [n for n in nodes if n is not conv and n is not split]
        nodes[at:at] = parts
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(tensors)
        done += 1
    if done:
        drop_unused_initializers(graph)
    return done

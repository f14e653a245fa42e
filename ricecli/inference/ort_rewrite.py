"""Exact load-time rewrites of a ricenet ONNX graph that make ONNX Runtime's CPU path faster.

Profiling the shipped 5-member edge ensemble (SessionOptions.enable_profiling) showed ~80 % of
ORT's time in the five 7^3 stride-2 stem convs on 3 channels: ORT's CPU 3D conv expands the
input (im2col, 1029 rows x every output voxel) once per conv and then multiplies by only 8
filters, so the memory-bound expansion dominates and is repeated for every member. Sibling
convs that read the same tensor with the same geometry are merged into one conv with all their
filters (one expansion, a 5x taller GEMM) followed by a Split: the same dot products, so the
outputs are unchanged (bit-identical in our checks). Session settings live in sessions.py.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # onnx is imported where it is used: ricecli runs without it
    from onnx import ModelProto, NodeProto, TensorProto

ConvKey = tuple[str, tuple[tuple[str, str], ...], tuple[int, ...], int]


def _conv_key(node: NodeProto, inits: dict[str, TensorProto]) -> ConvKey | None:
    """What must match for two convs to merge: input, attributes, weight shape, bias or not."""
    from onnx import helper

    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    weight = inits.get(node.input[1])
    has_bias = len(node.input) > 2 and bool(node.input[2])
    if weight is None or (has_bias and node.input[2] not in inits):
        return None
    attrs = tuple(sorted((a.name, str(helper.get_attribute_value(a))) for a in node.attribute))
    if any(name == "group" and value != "1" for name, value in attrs):
        return None
    return (node.input[0], attrs, tuple(weight.dims[1:]), weight.data_type)


def merge_sibling_convs(model: ModelProto) -> int:
    """Merge Convs reading the same tensor with the same geometry into Conv + Split, in place.

    Returns how many Conv nodes were removed.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    groups: dict[ConvKey, list[NodeProto]] = defaultdict(list)
    for node in graph.node:
        key = _conv_key(node, inits)
        if key is not None:
            groups[key].append(node)
    removed = 0
    for key, convs in groups.items():
        if len(convs) < 2:
            continue
        weights = [numpy_helper.to_array(inits[c.input[1]]) for c in convs]
        biases = [numpy_helper.to_array(inits[c.input[2]]) if len(c.input) > 2 and c.input[2]
                  else np.zeros(w.shape[0], w.dtype) for c, w in zip(convs, weights, strict=True)]
        first = convs[0]
        stem = f"{first.name or first.output[0]}_merged"
        new_inits = [numpy_helper.from_array(np.concatenate(weights), f"{stem}_w"),
                     numpy_helper.from_array(np.concatenate(biases), f"{stem}_b"),
                     numpy_helper.from_array(np.array([w.shape[0] for w in weights], np.int64),
                                             f"{stem}_split")]
        merged = helper.make_node("Conv", [key[0], f"{stem}_w", f"{stem}_b"], [f"{stem}_y"],
                                  name=stem)
        merged.attribute.extend(first.attribute)
        split = helper.make_node("Split", [f"{stem}_y", f"{stem}_split"],
                                 [c.output[0] for c in convs], axis=1, name=f"{stem}_split")
        nodes = list(graph.node)
        at = nodes.index(first)
        keep = [n for n in nodes if all(n is not c for c in convs)]
        keep[at:at] = [merged, split]  # the first conv's place: its input is ready there
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(new_inits)
        removed += len(convs) - 1
    if removed:
        used = {i for n in graph.node for i in n.input}
        kept = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return removed


def _opset(model: ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
               default=0)


def rewritten_model(path: str | Path) -> bytes | str:
    """The model at `path` with the exact rewrites applied (bytes), or why it was left as is."""
    try:
        import onnx
    except ImportError:
        return "the onnx package is missing"
    model = onnx.load(str(path))
    if _opset(model) < 13:  # Split takes its sizes as an input from opset 13
        return f"opset {_opset(model)} < 13"
    if merge_sibling_convs(model) == 0:
        return "no sibling convs to merge"
    return model.SerializeToString()


def cpu_session_source(path: str | Path) -> str | bytes:
    """What to hand InferenceSession for the CPU provider: rewritten bytes, else the path."""
    out = rewritten_model(path)
    return str(path) if isinstance(out, str) else out

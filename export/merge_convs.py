"""Merge sibling convs of a ricenet ONNX graph, once, when the model is written (exact).

    python export/merge_convs.py IN.onnx OUT.onnx     # e.g. an older export, rewritten once

Profiling the 5-member edge ensemble showed ~80 % of ONNX Runtime's CPU time in the five 7^3
stride-2 stem convs that all read `volumes`: ORT expands the input (im2col) once per conv and
then multiplies by only 8 filters. Convs that read the same tensor with the same geometry are
merged into one conv with all their filters followed by a Split: the same dot products, so the
outputs are bit-identical, with one expansion instead of five. export/to_onnx.py applies it to
every export; metadata_props (spec, card) are kept.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ricecli.explain.incremental.graph import drop_unused_initializers

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, TensorProto

ConvKey = tuple[str, tuple[tuple[str, str], ...], tuple[int, ...], int]
MIN_OPSET = 13  # Split takes its sizes as an input from opset 13


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


def opset(model: ModelProto) -> int:
    """The model's default-domain opset."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
               default=0)


def merge_sibling_convs(model: ModelProto) -> int:
    """Merge Convs reading the same tensor with the same geometry into Conv + Split, in place.

    Returns how many Conv nodes were removed (0 below opset 13, where Split differs).
    """
    from onnx import helper, numpy_helper

    if opset(model) < MIN_OPSET:
        return 0
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:  # the torch exporter shares equal weights through Identity nodes
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
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
        outputs = {o.name for o in graph.output}
        used = {i for n in graph.node for i in n.input}
        orphans = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in inits
                   and n.output[0] not in used | outputs]
        for node in orphans:
            graph.node.remove(node)
        drop_unused_initializers(graph)
    return removed


def main(argv: list[str] | None = None) -> int:
    """Rewrite one model file; exit 1 when there was nothing to merge."""
    import onnx

    ap = argparse.ArgumentParser(prog="python export/merge_convs.py", description=__doc__)
    ap.add_argument("model", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    model = onnx.load(str(args.model))
    removed = merge_sibling_convs(model)
    if not removed:
        print(f"{args.model}: no sibling convs to merge (opset {opset(model)})", file=sys.stderr)
        return 1
    onnx.save(model, str(args.out))
    print(f"wrote {args.out}: {removed} conv(s) merged away")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

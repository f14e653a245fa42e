"""The graphs ONNX Runtime runs for incremental occlusion (sessions: `ricecli.runtime`).

Three kinds, all cut from the model's own graph: the base (the whole network with every local
tensor as an extra output: the unoccluded activations), one layer depth (its conv/pool layers
side by side, without padding: they run on padded crops), and the trunk (from the cut tensors
to the outputs, on whole tensors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ricecli.contract import INPUT_NAME, OUTPUT_NAMES
from ricecli.explain.incremental.graph import LocalOp, NetworkSplit, constants, is_batch_shape
from ricecli.explain.incremental.slices import conv_as_depth_slices

if TYPE_CHECKING:
    import onnx


def _model_bytes(model: onnx.ModelProto, graph: onnx.GraphProto) -> bytes:
    """`graph` as a serialised model with `model`'s opsets, IR version and functions, its 3D
    convs run as 2D convs over depth slices (`slices`: same dot products, faster kernels)."""
    from onnx import helper

    out = helper.make_model(graph, opset_imports=list(model.opset_import),
                            ir_version=model.ir_version)
    out.functions.extend(model.functions)
    conv_as_depth_slices(out)
    return out.SerializeToString()


def _reachable(graph: onnx.GraphProto, outputs: list[str],
               stop: set[str]) -> list[onnx.NodeProto]:
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
        if is_batch_shape(node):
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


def base_bytes(split: NetworkSplit, tensors: list[str]) -> bytes:
    """The whole graph with the given local tensors as extra outputs."""
    import copy

    from onnx import TensorProto, helper

    model = copy.deepcopy(split.model)
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                              for t in tensors if t not in have)
    return model.SerializeToString()


def layer_bytes(split: NetworkSplit, ops: list[LocalOp]) -> bytes:
    """One graph with the given conv/pool ops side by side, without their padding (the crop
    carries it); input x{i} -> output y{i}."""
    import copy

    from onnx import TensorProto, helper

    inits = constants(split.model.graph)
    nodes, used, ins, outs = [], [], [], []
    for i, op in enumerate(ops):
        node = helper.make_node(op.kind, [f"x{i}", *op.node.input[1:]], [f"y{i}"],
                                name=f"n{i}")
        for a in op.node.attribute:
            if a.name != "pads":
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


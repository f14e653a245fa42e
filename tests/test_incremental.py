"""Incremental occlusion: windowed layers (the stem only, or deeper: conv, batch norm, ReLU,
max-pool, residual add) give the same probabilities and maps as whole volumes, for cubes at
corners, edges and the centre, uneven strides, padding, dilation and bias; 3D convs run as 2D
convs over depth slices give the 3D conv's outputs; the depth is counted, not timed; graphs
that do not fit fall back to the plain path with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from ricecli.contract import CARD_KEY, SPEC_KEY
from ricecli.explain.incremental import IncrementalNetwork, incremental_for, runner
from ricecli.explain.incremental.graph import analyse
from ricecli.explain.occlusion import occlusion_maps
from ricecli.inference.engine import OnnxRuntimeEngine
from ricecli.inference.model import load_model
from ricecli.spec import ModelSpace, Spec

SPEC = Spec(model_space=ModelSpace(spacing_mm=(3.0, 3.0, 3.0), size_xyz=(13, 15, 11)))
SHAPE = SPEC.model_space.shape_zyx  # (11, 15, 13)

# stem conv geometries: (kernel, strides, pads begin+end, dilations, bias)
STEMS = {
    "resnet_stem": ((7, 7, 7), (2, 2, 2), (3, 3, 3, 3, 3, 3), (1, 1, 1), True),
    "uneven": ((3, 5, 4), (3, 1, 2), (1, 2, 0, 0, 1, 2), (2, 1, 1), True),
    "stride_over_kernel": ((2, 2, 2), (3, 3, 3), (0, 0, 0, 1, 1, 1), (1, 1, 1), False),
}


def _member(i: int, rng, kernel, strides, pads, dilations, bias, first=None, bn=False):
    """Conv(volumes) [-> BatchNormalization] -> Relu -> MaxPool -> GlobalAveragePool -> Gemm
    -> Softmax -> [N, 1, 2]."""
    w = rng.normal(scale=1 / np.sqrt(3 * np.prod(kernel)), size=(4, 3, *kernel))
    inits = [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
             numpy_helper.from_array(rng.normal(size=(2, 4)).astype(np.float32) * 0.5, f"g{i}"),
             numpy_helper.from_array(np.array([1], np.int64), f"ax{i}")]
    conv_in = [first or "volumes", f"w{i}"]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=4).astype(np.float32), f"b{i}"))
        conv_in.append(f"b{i}")
    norm = []
    if bn:  # an unfolded batch norm between conv and ReLU
        names = [f"bn{k}{i}" for k in "sbmv"]
        values = [rng.uniform(0.5, 1.5, 4), rng.normal(size=4), rng.normal(size=4) * 0.2,
                  rng.uniform(0.5, 1.5, 4)]
        inits += [numpy_helper.from_array(v.astype(np.float32), n)
                  for n, v in zip(names, values, strict=True)]
        norm = [helper.make_node("BatchNormalization", [f"c{i}", *names], [f"n{i}"])]
    nodes = [
        helper.make_node("Conv", conv_in, [f"c{i}"], kernel_shape=list(kernel),
                         strides=list(strides), pads=list(pads), dilations=list(dilations)),
        *norm,
        helper.make_node("Relu", [f"n{i}" if bn else f"c{i}"], [f"r{i}"]),
        helper.make_node("MaxPool", [f"r{i}"], [f"m{i}"], kernel_shape=[2, 2, 2],
                         strides=[1, 1, 1]),
        helper.make_node("GlobalAveragePool", [f"m{i}"], [f"a{i}"]),
        helper.make_node("Flatten", [f"a{i}"], [f"f{i}"]),
        helper.make_node("Gemm", [f"f{i}", f"g{i}"], [f"l{i}"], transB=1),
        helper.make_node("Softmax", [f"l{i}"], [f"s{i}"], axis=1),
        helper.make_node("Unsqueeze", [f"s{i}", f"ax{i}"], [f"u{i}"]),
    ]
    return nodes, inits


def write_model(path, stem="resnet_stem", members=2, seed=0, pre=None, shape_of_input=False,
                group=1, bn=False):
    """A small real ricenet-contract ONNX model built with onnx.helper (no torch)."""
    rng = np.random.default_rng(seed)
    kernel, strides, pads, dil, bias = STEMS[stem]
    nodes, inits = [], []
    first = None
    if pre:  # an op before the convs: the input is not read by Conv only
        nodes.append(helper.make_node(pre, ["volumes"], ["pre"]))
        first = "pre"
    for i in range(members):
        n, t = _member(i, rng, kernel, strides, pads, dil, bias, first, bn)
        nodes += n
        inits += t
    if group != 1:
        conv = nodes[-8 - bn]
        conv.attribute.append(helper.make_attribute("group", group))
        inits[-4] = numpy_helper.from_array(  # weights [4, 3 / group, ...] do not fit 3 channels
            rng.normal(size=(3, 1, *kernel)).astype(np.float32), inits[-4].name)
    nodes.append(helper.make_node("Concat", [f"u{i}" for i in range(members)],
                                  ["member_probabilities"], axis=1))
    nodes.append(helper.make_node("ReduceMean", ["member_probabilities", "ax0"],
                                  ["mean_p"], keepdims=0))
    if shape_of_input:  # the trunk reads `volumes`' batch size or its whole shape
        limits = {"start": 0, "end": 1} if shape_of_input == "batch" else {}
        nodes += [helper.make_node("Shape", ["volumes"], ["vshape"], **limits),
                  helper.make_node("Slice", ["vshape", "zero", "one"], ["nshape"]),
                  helper.make_node("Concat", ["nshape", "two"], ["pshape"], axis=0),
                  helper.make_node("Reshape", ["mean_p", "pshape"], ["probabilities"])]
        inits += [numpy_helper.from_array(np.array([v], np.int64), name)
                  for name, v in (("zero", 0), ("one", 1), ("two", 2))]
    else:
        nodes.append(helper.make_node("Identity", ["mean_p"], ["probabilities"]))
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("volumes", TensorProto.FLOAT,
                                                      ["N", 3, *SHAPE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("member_probabilities", TensorProto.FLOAT,
                                       ["N", members, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    for key, value in ((SPEC_KEY, SPEC.to_json()), (CARD_KEY, '{"name": "t", "version": "0"}')):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    import onnx

    onnx.save(model, str(path))
    return path


def volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3, *SHAPE)).astype(np.float32)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Whatever ricecli caches goes under RICENET_CACHE: keep it per test."""
    monkeypatch.setenv("RICENET_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("stem,shape_of_input,depth,bn", [
    *[(s, None, 1, False) for s in sorted(STEMS)], ("resnet_stem", "batch", 1, False),
    *[(s, None, 2, False) for s in sorted(STEMS)], ("resnet_stem", "batch", 2, True),
    ("uneven", None, 2, True)])
def test_probabilities_equal_whole_volumes(tmp_path, stem, shape_of_input, depth, bn):
    path = write_model(tmp_path / "m.onnx", stem, shape_of_input=shape_of_input, bn=bn)
    model = load_model(path)
    engine = OnnxRuntimeEngine(model, threads=1)
    inc = IncrementalNetwork.from_model(path, threads=1, depth=depth)
    assert isinstance(inc, IncrementalNetwork), inc
    vol = volume()
    z, y, x = SHAPE
    cubes = [((0, 1, 2), (slice(0, 4), slice(0, 4), slice(0, 4))),  # corner
             ((0, 1, 2), (slice(z - 4, z), slice(y - 4, y), slice(x - 4, x))),  # far corner
             ((1,), (slice(0, 3), slice(6, 9), slice(x - 3, x))),  # edge, one channel
             ((0, 2), (slice(4, 8), slice(5, 10), slice(4, 7))),  # centre, uneven cube
             ((2,), (slice(z - 2, z + 3), slice(0, 5), slice(9, 14))),  # clip: past the end
             ((0, 1, 2), (slice(0, z), slice(0, y), slice(0, x)))]  # everything
    fill = 0.7
    got_p, got_m = inc.probabilities(vol, cubes, fill, batch=4)
    occluded = np.repeat(vol[None], len(cubes), axis=0)
    for i, (chans, sl) in enumerate(cubes):
        occluded[(i, list(chans), *sl)] = fill
    want_p, want_m = engine.run(occluded)
    assert np.abs(want_p - want_p[0]).max() > 1e-3  # the positions do change the answer
    np.testing.assert_allclose(got_p, want_p, atol=2e-6, rtol=0)
    np.testing.assert_allclose(got_m, want_m, atol=2e-6, rtol=0)
    assert inc.depth == depth
    assert inc.method == ("incremental-stem" if depth == 1 else
                          "incremental-layers (depth 2: 4 conv/pool layers on windows)")


@pytest.mark.parametrize("stem,cube,stride,edges", [
    ("resnet_stem", 4, 3, "shift"), ("resnet_stem", 5, 4, "clip"),
    ("uneven", 3, 2, "shift"), ("stride_over_kernel", 4, 5, "clip")])
def test_maps_equal_plain_path(tmp_path, monkeypatch, stem, cube, stride, edges):
    monkeypatch.setattr(runner, "DELTA_CHUNK_POSITIONS", 12)  # several crop-conv chunks
    path = write_model(tmp_path / "m.onnx", stem, seed=1)
    model = load_model(path)
    engine = OnnxRuntimeEngine(model, threads=1)
    inc, method = incremental_for(model, engine)
    assert method == "incremental"  # the depth is counted on the first volume
    vol = volume(2)
    vol[:, :5] = 0.0  # a slab equal to the fill: skipped positions mix with run ones
    args = (vol, engine, SPEC.channels, (cube,) * 3, (stride,) * 3)
    kw = {"channels": "each", "edges": edges, "batch": 5, "target": "predicted"}
    plain = occlusion_maps(*args, **kw)
    fast = occlusion_maps(*args, **kw, incremental=inc)
    assert fast.method.startswith("incremental") and plain.method == "plain"
    assert fast.method == inc.method and inc.depth in (1, 2)
    assert fast.positions == plain.positions and fast.positions["skipped_unchanged"] > 0
    assert sorted(fast.maps) == ["all", "dose", "event", "post_op"]
    for name in plain.maps:
        assert np.abs(plain.maps[name]).max() > 1e-4
        np.testing.assert_allclose(fast.maps[name], plain.maps[name], atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant,reason", [
    ({"pre": "Relu"}, "not only Conv"),
    ({"shape_of_input": "all"}, "not only Conv"),
    ({"group": 3}, "grouped"),
])
def test_graphs_off_the_pattern_fall_back(tmp_path, variant, reason):
    path = write_model(tmp_path / "m.onnx", **variant)
    why = analyse(path)
    assert isinstance(why, str) and reason in why
    if variant.get("group"):
        return  # that graph is only for the split check (its weights do not fit 3 channels)
    model = load_model(path)
    engine = OnnxRuntimeEngine(model, threads=1)
    inc, method = incremental_for(model, engine)
    assert inc is None and method.startswith("plain (") and reason in method
    m = occlusion_maps(volume(), engine, SPEC.channels, (4, 4, 4), (4, 4, 4), method=method)
    assert m.method == method
    off, label = incremental_for(model, engine, wanted=False)
    assert off is None and label == "plain (incremental off)"


def test_depth_is_counted_from_the_layers_work(tmp_path):
    """The depth comes from counted multiply-adds (no timing): the same on every run."""
    path = write_model(tmp_path / "m.onnx", "resnet_stem", seed=3)
    vol = volume(4)
    cubes = [((0, 1, 2), (slice(z, z + 3), slice(4, 7), slice(2, 5))) for z in range(0, 9, 3)]
    first = IncrementalNetwork.from_model(path, threads=1)
    got = first.probabilities(vol, cubes, 0.0, batch=2)
    assert first.depth in (1, 2) and first.costs["depth"] == [1, 2]
    work = first.costs["work_per_position"]
    assert all(c > 0 for c in work) and first.depth == 1 + int(work[1] < work[0])
    again = IncrementalNetwork.from_model(path, threads=1)
    np.testing.assert_array_equal(again.probabilities(vol, cubes, 0.0, batch=2)[0], got[0])
    assert again.depth == first.depth and again.costs == first.costs


def test_conv_as_depth_slices_equals_3d_conv():
    """The 2D-over-depth-slices form of 3D convs (strides, dilation, uneven pads, bias, a
    kernel one deep left alone) gives the 3D conv's outputs on any depth."""
    import onnx
    import onnxruntime as ort

    from ricecli.explain.incremental.slices import conv_as_depth_slices

    rng = np.random.default_rng(9)
    convs = [((3, 3, 3), (1, 1, 1), (1, 1, 1, 1, 1, 1), (1, 1, 1), True),
             ((3, 5, 4), (3, 1, 2), (1, 2, 0, 0, 1, 2), (2, 1, 1), True),
             ((7, 7, 7), (2, 2, 2), (3, 3, 3, 3, 3, 3), (1, 1, 1), False),
             ((2, 3, 3), (2, 1, 1), (0, 1, 1, 1, 1, 1), (1, 1, 1), True),
             ((1, 1, 1), (2, 2, 2), (0, 0, 0, 0, 0, 0), (1, 1, 1), False)]
    for i, (kernel, strides, pads, dil, bias) in enumerate(convs):
        inits = [numpy_helper.from_array(rng.normal(size=(5, 4, *kernel)).astype(np.float32),
                                         "w")]
        if bias:
            inits.append(numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "b"))
        node = helper.make_node("Conv", ["x", "w", "b"][:2 + bias], ["y"], strides=strides,
                                pads=pads, dilations=dil)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, ["N", 4, "d", "h", "w"])], [helper.make_tensor_value_info(
                "y", TensorProto.FLOAT, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 8
        plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        rewritten = onnx.ModelProto()
        rewritten.CopyFrom(model)
        assert conv_as_depth_slices(rewritten) == int(kernel[0] > 1)
        fast = ort.InferenceSession(rewritten.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        for depth in (9, 10, 13):  # one session, several depths (odd and even for strides)
            x = rng.normal(size=(3, 4, depth, 11, 12)).astype(np.float32)
            want = plain.run(None, {"x": x})[0]
            got = fast.run(None, {"x": x})[0]
            assert got.shape == want.shape, (i, depth)
            np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5, err_msg=f"conv {i}")


@pytest.mark.slow
def test_resnet_every_depth_equals_whole_volumes(tmp_path):
    """A real torch-exported ResNet-18 ensemble (residual adds, downsampling): every depth."""
    pytest.importorskip("torch")
    from model_fixtures import TINY_SPEC, export_tiny_model

    path = export_tiny_model(tmp_path / "tiny.onnx", members=2, seed=5)
    model = load_model(path)
    engine = OnnxRuntimeEngine(model, threads=1)
    split = analyse(path)
    assert not isinstance(split, str) and split.max_depth >= 8
    assert {op.kind for op in split.ops} >= {"Conv", "MaxPool", "Relu", "Add"}
    shape = TINY_SPEC.model_space.shape_zyx
    vol = np.random.default_rng(6).normal(size=(3, *shape)).astype(np.float32)
    z, y, x = shape
    cubes = [((0, 1, 2), (slice(0, 4), slice(0, 4), slice(0, 4))),
             ((0, 1, 2), (slice(z - 4, z), slice(y - 4, y), slice(x - 4, x))),
             ((2,), (slice(10, 14), slice(12, 16), slice(x - 2, x + 2))),
             ((0, 1), (slice(7, 11), slice(3, 7), slice(15, 19)))]
    occluded = np.repeat(vol[None], len(cubes), axis=0)
    for i, (chans, sl) in enumerate(cubes):
        occluded[(i, list(chans), *sl)] = 0.0
    want_p, want_m = engine.run(occluded)
    assert np.abs(want_m - want_m[0]).max() > 1e-4
    for depth in range(1, split.max_depth + 1):
        inc = IncrementalNetwork.from_model(path, threads=1, depth=depth)
        got_p, got_m = inc.probabilities(vol, cubes, 0.0, batch=3)
        np.testing.assert_allclose(got_m, want_m, atol=2e-6, rtol=0, err_msg=f"depth {depth}")
        np.testing.assert_allclose(got_p, want_p, atol=2e-6, rtol=0, err_msg=f"depth {depth}")


def test_parallel_workers_give_the_same_bits(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "DELTA_CHUNK_POSITIONS", 4)  # several chunks per worker
    path = write_model(tmp_path / "m.onnx", "uneven", seed=7)
    vol = volume(8)
    cubes = [((0, 1, 2), (slice(z, z + 3), slice(y, y + 4), slice(1, 5)))
             for z in range(0, 9, 3) for y in range(0, 12, 4)]
    one = IncrementalNetwork.from_model(path, threads=1, depth=2)
    two = IncrementalNetwork.from_model(path, threads=2, depth=2)
    assert (one.workers, two.workers) == (1, 2)
    got_one = one.probabilities(vol, cubes, 0.5, batch=2)
    got_two = two.probabilities(vol, cubes, 0.5, batch=2)
    for a, b in zip(got_one, got_two, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(got_two[0]) == len(cubes) and np.ptp(got_two[0][:, 0]) > 1e-4


def test_a_model_with_merged_stem_convs_runs_incrementally_with_the_same_bits(tmp_path):
    """export/merge_convs.py turns the members' stem convs into one Conv + Split; the analysis
    splits it back into the very same convs, so the incremental path gives the bits of the
    unmerged model at every depth."""
    import onnx

    from export.merge_convs import merge_sibling_convs

    path = write_model(tmp_path / "m.onnx", "uneven", members=3, seed=4, bn=True)
    merged = onnx.load(str(path))
    assert merge_sibling_convs(merged) == 2
    onnx.save(merged, str(tmp_path / "merged.onnx"))
    plain, split = analyse(path), analyse(tmp_path / "merged.onnx")
    assert not isinstance(plain, str) and not isinstance(split, str)
    assert sorted((op.output, op.kind, op.depth, op.reach) for op in split.ops) == \
        sorted((op.output, op.kind, op.depth, op.reach) for op in plain.ops)
    vol = volume(5)
    cubes = [((0, 1, 2), (slice(z, z + 3), slice(2, 6), slice(1, 4))) for z in range(0, 9, 3)]
    for depth in (1, 2):
        want = IncrementalNetwork.from_model(path, threads=1, depth=depth)
        got = IncrementalNetwork.from_model(tmp_path / "merged.onnx", threads=1, depth=depth)
        for a, b in zip(got.probabilities(vol, cubes, 0.0, batch=2),
                        want.probabilities(vol, cubes, 0.0, batch=2), strict=True):
            np.testing.assert_array_equal(a, b)

import numpy as np
from onnx import helper

from edgeport.converters.rewrites import equal_split, slices_to_split
from tests.onnx_graphs import assert_same_outputs, make_model, ops

BIG = np.iinfo(np.int64).max


def chunk_graph(bounds, axis=1, shape=(1, 12, 3, 3)):
    """One Slice per (start, end) of `x` on `axis`, each consumed right away (so the first slice's
    consumer sits between the slices), results concatenated back in reverse."""
    consts, nodes, outs = {"axis": np.array([axis], np.int64)}, [], []
    for k, (start, end) in enumerate(bounds):
        consts[f"s{k}"], consts[f"e{k}"] = np.array([start], np.int64), np.array([end], np.int64)
        nodes.append(helper.make_node("Slice", ["x", f"s{k}", f"e{k}", "axis"], [f"p{k}"]))
        nodes.append(helper.make_node("Neg" if k % 2 else "Relu", [f"p{k}"], [f"q{k}"]))
        outs.append(f"q{k}")
    nodes.append(helper.make_node("Concat", outs[::-1], ["y"], axis=axis))
    return make_model(nodes, {"x": list(shape)}, ["y"], consts)


def test_equal_chunks_become_one_split():
    for bounds in ([(0, 6), (6, BIG)], [(0, 4), (4, 8), (8, 12)], [(8, 12), (0, 4), (4, -4)]):
        before = chunk_graph(bounds)
        after = slices_to_split.rewrite(before)
        assert ops(after).get("Split") == 1 and "Slice" not in ops(after)
        assert_same_outputs(before, after)


def test_slices_that_do_not_tile_the_axis_in_equal_parts_are_left_alone():
    for bounds in ([(0, 4), (4, 12)], [(0, 6)], [(0, 6), (7, 12)], [(0, 6), (6, 11)]):
        before = chunk_graph(bounds)
        assert slices_to_split.rewrite(before).SerializeToString() == before.SerializeToString()


def split_graph(sizes, axis=1):
    outs = [f"o{k}" for k in range(len(sizes))]
    nodes = [helper.make_node("Split", ["x", "sizes"], outs, axis=axis)]
    nodes.append(helper.make_node("Concat", outs[::-1], ["y"], axis=axis))
    return make_model(nodes, {"x": [1, 12, 4]}, ["y"], {"sizes": np.array(sizes, np.int64)})


def test_sized_equal_split_loses_its_sizes():
    before = split_graph([4, 4, 4])
    after = equal_split.rewrite(before)
    (split, _) = after.graph.node
    assert list(split.input) == ["x"]
    assert_same_outputs(before, after)


def test_unequal_split_keeps_its_sizes():
    before = split_graph([4, 8])
    assert equal_split.rewrite(before).SerializeToString() == before.SerializeToString()

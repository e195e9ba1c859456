import numpy as np
from onnx import helper

from edgeport.converters.rewrites import patch_tokens
from tests.onnx_graphs import assert_same_outputs, make_model, ops


def tokens_graph(shape=(1, 8, 3, 5), perm=(0, 2, 1), extra_user=False):
    n, c, *spatial = shape
    consts = {
        "w": np.random.default_rng(0).standard_normal((c, c, *[1] * len(spatial))),
        "flat": np.array([n, c, int(np.prod(spatial))], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["f"], kernel_shape=[1] * len(spatial)),
        helper.make_node("Reshape", ["f", "flat"], ["r"]),
        helper.make_node("Transpose", ["r"], ["y"], perm=list(perm)),
    ]
    outputs = ["y"]
    if extra_user:
        nodes.append(helper.make_node("Neg", ["r"], ["z"]))
        outputs.append("z")
    return make_model(nodes, {"x": list(shape)}, outputs, consts)


def test_flatten_transpose_becomes_channels_last_reshape():
    for shape in ((1, 8, 3, 5), (2, 6, 2, 3, 4)):
        before = tokens_graph(shape)
        after = patch_tokens.rewrite(before)
        transpose = next(n for n in after.graph.node if n.op_type == "Transpose")
        assert list(transpose.attribute[0].ints) == [0, *range(2, len(shape)), 1]
        assert ops(after) == {"Conv": 1, "Transpose": 1, "Reshape": 1}
        assert_same_outputs(before, after)


def test_other_transposes_and_shared_reshapes_are_left_alone():
    for graph in (tokens_graph(perm=(1, 0, 2)), tokens_graph(extra_user=True)):
        assert patch_tokens.rewrite(graph).SerializeToString() == graph.SerializeToString()

import numpy as np
from onnx import helper

from edgeport.converters.rewrites import channel_shuffle
from tests.onnx_graphs import assert_same_outputs, make_model, ops


def shuffle_graph(shape=(1, 12, 5, 4), groups=3, perm=None, extra_user=False):
    n, c, *rest = shape
    consts = {
        "split": np.array([n, groups, c // groups, *rest], np.int64),
        "merge": np.array([n, c, *rest], np.int64),
    }
    perm = perm or [0, 2, 1, *range(3, len(shape) + 1)]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["f"], kernel_shape=[1] * len(rest)),
        helper.make_node("Reshape", ["f", "split"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=perm),
        helper.make_node("Reshape", ["t", "merge"], ["y"]),
    ]
    consts["w"] = np.random.default_rng(1).standard_normal((c, c, *[1] * len(rest))).astype(np.float32)
    outputs = ["y"]
    if extra_user:
        nodes.append(helper.make_node("Neg", ["t"], ["z"]))
        outputs.append("z")
    return make_model(nodes, {"x": list(shape)}, outputs, consts)


def test_shuffle_becomes_one_gather_on_channels():
    before = shuffle_graph()
    after = channel_shuffle.rewrite(before)
    assert ops(after) == {"Conv": 1, "Gather": 1}
    assert_same_outputs(before, after)


def test_two_groups_and_1d_feature_maps():
    before = shuffle_graph(shape=(1, 8, 7), groups=2)
    after = channel_shuffle.rewrite(before)
    assert ops(after) == {"Conv": 1, "Gather": 1}
    assert_same_outputs(before, after)


def test_other_transposes_are_left_alone():
    for graph in (
        shuffle_graph(perm=[0, 1, 2, 4, 3]),  # swaps H and W, not a channel permutation
        shuffle_graph(extra_user=True),  # the 5-D tensor is an output too
    ):
        after = channel_shuffle.rewrite(graph)
        assert after.graph.SerializeToString() == graph.graph.SerializeToString()

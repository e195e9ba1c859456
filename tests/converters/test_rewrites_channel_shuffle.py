import io

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from edgeport.converters.onnx_prepare import fix_input_shapes, simplify
from edgeport.converters.rewrites import channel_shuffle
from tests.onnx_graphs import assert_same_outputs, make_model, ops
from tests.zoo.shuffle import _SHUFFLES


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


class Shuffle(torch.nn.Module):
    def __init__(self, spelling, groups: int):
        super().__init__()
        self.spelling, self.groups = spelling, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.spelling(torch.tanh(x), self.groups))


def exported(module: torch.nn.Module, shape: list[int]) -> onnx.ModelProto:
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(*shape),), buf, dynamo=False, opset_version=17)
    model, ok = simplify(onnx.load_from_string(buf.getvalue()), fuse_bn=False)
    assert ok
    return model


@pytest.mark.parametrize("spelling", ["view", "permute", "chunk_stack", "strided_cat", "einops"])
@pytest.mark.parametrize("groups", [2, 3, 4])
def test_every_spelling_of_the_shuffle_becomes_one_gather(spelling: str, groups: int):
    before = exported(Shuffle(_SHUFFLES[spelling], groups), [1, 24, 5, 7])
    after = channel_shuffle.rewrite(before)
    assert ops(after) == {"Tanh": 1, "Gather": 1, "Relu": 1}
    assert_same_outputs(before, after)


def test_reshape_round_trips_and_spatial_moves_are_left_alone():
    consts = {"flat": np.array([1, -1], np.int64), "back": np.array([1, 6, 4, 4], np.int64)}
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["f"]),
        helper.make_node("Reshape", ["f", "back"], ["r"]),
        helper.make_node("Transpose", ["r"], ["y"], perm=[0, 1, 3, 2]),  # H <-> W of a square map
    ]
    graph = make_model(nodes, {"x": [1, 6, 4, 4]}, ["y"], consts)
    assert channel_shuffle.rewrite(graph).SerializeToString() == graph.SerializeToString()


class ShuffleAfterConcat(torch.nn.Module):
    """ShuffleNetV2's stride-2 unit: two branches concatenated, then shuffled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SHUFFLES["view"](torch.cat([torch.tanh(x), torch.sigmoid(x)], dim=1), 2)


def test_a_shuffle_after_a_concat_starts_at_the_concat():
    before = exported(ShuffleAfterConcat(), [1, 6, 5, 5])
    after = channel_shuffle.rewrite(before)
    assert ops(after) == {"Tanh": 1, "Sigmoid": 1, "Concat": 1, "Gather": 1}
    assert_same_outputs(before, after)


def test_einops_shuffle_simplifies_after_the_input_shape_is_fixed():
    # The pipeline fixes input shapes first; the unflatten's Shape/Mod chain leaves the output's dims
    # unknown to ONNX inference, and onnxsim refused a model whose output had no shape field at all.
    buf = io.BytesIO()
    module = Shuffle(_SHUFFLES["einops"], 3)
    torch.onnx.export(module, (torch.zeros(1, 24, 5, 7),), buf, dynamo=False, opset_version=17)
    fixed = fix_input_shapes(onnx.load_from_string(buf.getvalue()), [[1, 24, 5, 7]])
    model, ok = simplify(fixed, fuse_bn=False)
    assert ok
    assert ops(channel_shuffle.rewrite(model)) == {"Tanh": 1, "Gather": 1, "Relu": 1}

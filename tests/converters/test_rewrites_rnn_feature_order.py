"""feature_order: a conv map turned into a sequence in (channel, frequency) order is read in
(frequency, channel) order with the weights permuted to match; onnxruntime before vs after."""

from __future__ import annotations

import numpy as np
import torch
from onnx import helper

from edgeport.converters.rewrites import feature_order
from tests.converters.test_rewrites_rnn_unroll import exported
from tests.onnx_graphs import make_model, max_rel_error, ops
from tests.zoo.recurrent import GRUKeywordSpotter


def perms(model) -> list[list[int]]:
    return [
        list(helper.get_attribute_value(n.attribute[0])) for n in model.graph.node if n.op_type == "Transpose"
    ]


def test_a_conv_front_end_feeds_the_gru_in_channels_last_order() -> None:
    torch.manual_seed(0)
    before = exported(GRUKeywordSpotter().eval(), (torch.randn(1, 1, 49, 10),))
    assert [0, 2, 1, 3] in perms(before)
    after = feature_order.rewrite(before)
    assert [0, 2, 1, 3] not in perms(after) and [0, 2, 3, 1] in perms(after)
    assert ops(after) == ops(before)
    assert max_rel_error(before, after) < 1e-5


def matmul_graph(extra_reader: bool = False):
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["t", "shape"], ["s"]),
        helper.make_node("MatMul", ["s", "w"], ["y"]),
    ]
    outputs = ["y"]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["s"], ["z"]))
        outputs.append("z")
    inits = {"shape": np.array([1, 5, 12], np.int64), "w": rng.standard_normal((12, 7))}
    return make_model(nodes, {"x": [1, 3, 5, 4]}, outputs, inits)


def test_a_linear_layer_on_the_sequence_gets_its_rows_permuted() -> None:
    before = matmul_graph()
    after = feature_order.rewrite(before)
    assert perms(after) == [[0, 2, 3, 1]]
    assert max_rel_error(before, after) < 1e-6


def test_a_bidirectional_layer_joining_its_directions_is_left_to_rnn_unroll() -> None:
    from tests.converters.test_rewrites_rnn_unroll import recurrent_model

    before = recurrent_model("lstm", "last", layers=2, bidirectional=True)
    assert feature_order.rewrite(before).SerializeToString() == before.SerializeToString()


def test_a_sequence_read_by_anything_but_weights_is_left_alone() -> None:
    before = matmul_graph(extra_reader=True)
    assert feature_order.rewrite(before).SerializeToString() == before.SerializeToString()

"""_axes: a Reshape that only drops or adds axes of size 1 is written as a Squeeze / Unsqueeze, which
onnx2tf converts without running the graph up to it (concat_fan_in's regrouping of long sequences)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgeport.converters.rewrites import _axes, concat_fan_in
from edgeport.onnx_graph import OnnxGraph
from tests.onnx_graphs import assert_same_outputs, make_model, ops


def test_unit_axes_finds_the_size_1_axes_to_drop() -> None:
    assert _axes.unit_axes([1, 1, 2560], [1, 2560]) == [1]
    assert _axes.unit_axes([1, 5, 1, 3, 1], [5, 3]) == [0, 2, 4]
    assert _axes.unit_axes([2, 3], [2, 3]) is None  # nothing dropped
    assert _axes.unit_axes([2, 3], [3, 2]) is None  # a real reshape
    assert _axes.unit_axes([1, 6], [2, 3]) is None
    assert _axes.unit_axes([1, 2560], [1, 1, 2560]) is None  # that adds an axis


@pytest.mark.parametrize(
    ("shape", "target", "op"),
    [([1, 1, 8], [1, 8], "Squeeze"), ([1, 8], [1, 1, 8], "Unsqueeze"), ([2, 4], [8], "Reshape"),
     ([1, 8], [1, 8], "Reshape")],
)  # fmt: skip
@pytest.mark.parametrize("opset", [11, 17])
def test_reshape_node_picks_the_op_and_computes_the_reshape(
    shape: list[int], target: list[int], op: str, opset: int
) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["r"])], {"x": shape}, ["r"], opset=opset)
    view = OnnxGraph(model)
    node = _axes.reshape_node(view, "r", shape, target, "y", "regroup")
    assert node.op_type == op
    view.graph.node.append(node)
    view.graph.output[0].name = "y"
    del view.graph.output[0].type.tensor_type.shape.dim[:]
    for size in target:
        view.graph.output[0].type.tensor_type.shape.dim.add().dim_value = size
    reshaped = view.model
    reference = make_model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "s"], ["y"])],
        {"x": shape},
        ["y"],
        {"s": np.array(target, np.int64)},
        opset=opset,
    )
    assert_same_outputs(reference, reshaped)


def test_a_long_sequence_of_3d_states_regroups_without_reshaping_3d_tensors() -> None:
    """rnn_unroll's 160 states [1, 1, 256] joined for the next layer: each group of ten is squeezed to
    [1, 40], and the groups' [1, 100] unsqueezed to the Concat's own shape; no Reshape at all."""
    count = 25
    inputs = {f"h{i}": [1, 1, 4] for i in range(count)}
    nodes = [helper.make_node("Concat", list(inputs), ["y"], axis=2)]
    before = make_model(nodes, inputs, ["y"])
    after = concat_fan_in.rewrite(before)
    counts = ops(after)
    assert counts == {"Concat": 4, "Squeeze": 3, "Unsqueeze": 1}
    assert_same_outputs(before, after)

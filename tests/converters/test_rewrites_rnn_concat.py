"""The two Concat rewrites recurrent models need on their way to TFLite Micro: stack_axis (a
`torch.stack` onnx2tf would give a permuted shape) and concat_fan_in (more inputs than TFLite Micro's
CONCATENATION takes). Pure ONNX checks: onnxruntime before vs after, and the ops written."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgeport.converters.rewrites import concat_fan_in, stack_axis
from tests.onnx_graphs import assert_same_outputs, make_model, ops


def stack_graph(count: int, shape: list[int], axis: int):
    """`torch.stack(xs, axis)` as PyTorch exports it: Unsqueeze each, Concat."""
    nodes, inputs = [], {}
    for i in range(count):
        inputs[f"x{i}"] = shape
        nodes.append(helper.make_node("Unsqueeze", [f"x{i}", "axes"], [f"u{i}"]))
    nodes.append(helper.make_node("Concat", [f"u{i}" for i in range(count)], ["y"], axis=axis))
    return make_model(nodes, inputs, ["y"], {"axes": np.array([axis], np.int64)})


def test_stacked_states_concatenate_along_an_axis_with_no_twin() -> None:
    before = stack_graph(2, [1, 16], 0)  # torch.stack([h1, h2]) -> [2, 1, 16]
    after = stack_axis.rewrite(before)
    (concat,) = [n for n in after.graph.node if n.op_type == "Concat"]
    assert helper.get_attribute_value(concat.attribute[0]) == 2
    assert ops(after)["Reshape"] == 1
    assert [d.dim_value for d in after.graph.output[0].type.tensor_type.shape.dim] == [2, 1, 16]
    assert_same_outputs(before, after)


@pytest.mark.parametrize(("shape", "axis"), [([1, 20], 1), ([3, 16], 0), ([2, 4, 16], 0)])
def test_stacks_without_an_ambiguous_axis_are_left_alone(shape: list[int], axis: int) -> None:
    before = stack_graph(3, shape, axis)
    assert stack_axis.rewrite(before).SerializeToString() == before.SerializeToString()


@pytest.mark.parametrize("count", [11, 25, 101])
def test_wide_concats_become_a_tree_of_at_most_ten_inputs(count: int) -> None:
    before = stack_graph(count, [1, 3], 1)
    after = concat_fan_in.rewrite(before)
    concats = [n for n in after.graph.node if n.op_type == "Concat"]
    assert max(len(n.input) for n in concats) <= concat_fan_in.MAX_INPUTS
    # No Concat reads another: the TFLite converter would fold them back into one.
    joined = {o for n in concats for o in n.output}
    assert not any(i in joined for n in concats for i in n.input)
    assert [o.name for o in after.graph.output] == ["y"]
    assert_same_outputs(before, after)


def test_nested_concats_along_one_axis_count_as_one() -> None:
    """Six [forward, backward] pairs joined along the same axis: the converter would fold them into one
    CONCATENATION of 12."""
    inputs = {f"x{i}": [1, 1, 4] for i in range(12)}
    nodes = [helper.make_node("Concat", [f"x{2 * i}", f"x{2 * i + 1}"], [f"p{i}"], axis=2) for i in range(6)]
    nodes.append(helper.make_node("Concat", [f"p{i}" for i in range(6)], ["y"], axis=2))
    before = make_model(nodes, inputs, ["y"])
    after = concat_fan_in.rewrite(before)
    concats = [n for n in after.graph.node if n.op_type == "Concat"]
    assert max(len(n.input) for n in concats) <= concat_fan_in.MAX_INPUTS
    joined = {o for n in concats for o in n.output}
    assert not any(i in joined for n in concats for i in n.input)
    assert_same_outputs(before, after)


def test_concats_of_ten_or_fewer_are_left_alone() -> None:
    before = stack_graph(10, [1, 3], 1)
    assert concat_fan_in.rewrite(before).SerializeToString() == before.SerializeToString()

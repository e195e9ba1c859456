"""OnnxGraph's tensor renames: readers only (replace_uses), or producer, readers and value_info."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from edgeport.onnx_graph import OnnxGraph


def _chain() -> onnx.ModelProto:
    """x -> Relu -> a -> Neg -> b, and a -> Add(a, a) -> y."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Neg", ["a"], ["b"], name="neg"),
        helper.make_node("Add", ["a", "a"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("b", "y")],
        value_info=[helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph)


def test_replace_uses_moves_every_reader_and_leaves_the_producer() -> None:
    graph = OnnxGraph(_chain())
    graph.replace_uses("a", "x")
    assert [list(n.input) for n in graph.graph.node] == [["x"], ["x"], ["x", "x"]]
    assert list(graph.graph.node[0].output) == ["a"] and graph.consumers("x")


def test_rename_tensor_renames_producer_readers_and_value_info() -> None:
    graph = OnnxGraph(_chain())
    graph.rename_tensor("a", "act")
    assert list(graph.graph.node[0].output) == ["act"]
    assert [list(n.input) for n in graph.graph.node[1:]] == [["act"], ["act", "act"]]
    assert [v.name for v in graph.graph.value_info] == ["act"] and graph.producer("act") is graph.graph.node[
        0
    ]
    assert graph.changed == 1

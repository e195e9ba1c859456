import numpy as np
from onnx import helper

from edgeport.converters.rewrites import prepare_for_onnx2tf, strided_shortcut
from tests.onnx_graphs import assert_same_outputs, make_model, ops

BIG = np.iinfo(np.int64).max


def shortcut_graph(
    starts=(0, 0), steps=(2, 2), pads=(0, 4, 0, 0, 0, 4, 0, 0), pad_value=None, extra_user=False
):
    consts = {
        "starts": np.array(starts, np.int64),
        "ends": np.array([BIG, BIG], np.int64),
        "axes": np.array([2, 3], np.int64),
        "steps": np.array(steps, np.int64),
        "pads": np.array(pads, np.int64),
    }
    pad_inputs = ["s", "pads"]
    if pad_value is not None:
        consts["value"] = np.array(pad_value, np.float32)
        pad_inputs.append("value")
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Pad", pad_inputs, ["p"], mode="constant"),
        helper.make_node("Relu", ["p"], ["y"]),
    ]
    outputs = ["y"]
    if extra_user:
        nodes.append(helper.make_node("Neg", ["s"], ["z"]))
        outputs.append("z")
    return make_model(nodes, {"x": [1, 8, 9, 8]}, outputs, consts)


def test_slice_and_channel_pad_become_one_strided_conv():
    before = shortcut_graph()
    after = strided_shortcut.rewrite(before)
    assert ops(after) == {"Conv": 1, "Relu": 1}
    assert_same_outputs(before, after)


def test_asymmetric_channel_pad_and_explicit_zero_value():
    before = shortcut_graph(steps=(2, 1), pads=(0, 3, 0, 0, 0, 5, 0, 0), pad_value=0.0)
    after = strided_shortcut.rewrite(before)
    assert ops(after) == {"Conv": 1, "Relu": 1}
    assert_same_outputs(before, after)


def test_input_model_is_not_modified():
    before = shortcut_graph()
    snapshot = before.SerializeToString()
    strided_shortcut.rewrite(before)
    assert before.SerializeToString() == snapshot


def test_non_matching_patterns_are_left_alone():
    for graph in (
        shortcut_graph(starts=(1, 1)),  # offset slice: not a 1x1 conv
        shortcut_graph(pads=(0, 4, 1, 0, 0, 4, 1, 0)),  # also pads H
        shortcut_graph(pad_value=1.0),  # non-zero pad value
        shortcut_graph(extra_user=True),  # the sliced tensor is needed elsewhere
    ):
        after = strided_shortcut.rewrite(graph)
        assert after.graph.SerializeToString() == graph.graph.SerializeToString()


def test_prepare_reports_the_rewrite():
    prepared = prepare_for_onnx2tf(shortcut_graph())
    assert strided_shortcut.NAME in prepared.applied
    untouched = prepare_for_onnx2tf(shortcut_graph(starts=(1, 1)))
    assert untouched.applied == []


def test_every_shortcut_in_a_graph_is_rewritten_and_nothing_dead_is_left():
    consts = {
        "starts": np.array([0, 0], np.int64),
        "ends": np.array([BIG, BIG], np.int64),
        "axes": np.array([2, 3], np.int64),
        "steps": np.array([2, 2], np.int64),
        "pads1": np.array([0, 4, 0, 0, 0, 4, 0, 0], np.int64),
        "pads2": np.array([0, 8, 0, 0, 0, 8, 0, 0], np.int64),
    }
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["s1"]),
        helper.make_node("Pad", ["s1", "pads1"], ["p1"]),
        helper.make_node("Slice", ["p1", "starts", "ends", "axes", "steps"], ["s2"]),
        helper.make_node("Pad", ["s2", "pads2"], ["y"]),
    ]
    before = make_model(nodes, {"x": [1, 8, 8, 8]}, ["y"], consts)
    after = strided_shortcut.rewrite(before)
    assert ops(after) == {"Conv": 2}
    assert {i.name for i in after.graph.initializer}.isdisjoint(consts)
    assert_same_outputs(before, after)


def test_slice_with_computed_bounds_is_left_alone():
    """Slice starts computed by an op (as Shape-derived bounds are before onnxsim): no rewrite, no crash."""
    zero = helper.make_tensor("zero", 7, [1], [0])
    nodes = [
        helper.make_node("ConstantOfShape", ["two"], ["starts"], value=zero),
        helper.make_node("Slice", ["x", "starts", "ends"], ["s"]),  # default axes and steps
        helper.make_node("Pad", ["s", "pads"], ["p"], mode="constant"),
    ]
    consts = {
        "two": np.array([2], np.int64),
        "ends": np.array([BIG, BIG], np.int64),
        "pads": np.array((0, 4, 0, 0, 0, 4, 0, 0), np.int64),
    }
    model = make_model(nodes, {"x": [1, 8, 9, 8]}, ["p"], consts)
    after = strided_shortcut.rewrite(model)
    assert ops(after) == {"ConstantOfShape": 1, "Slice": 1, "Pad": 1}

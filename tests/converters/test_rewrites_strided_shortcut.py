from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgeport.converters.rewrites import prepare_for_onnx2tf, strided_shortcut
from edgeport.pipeline import ConvertOptions, convert_model
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


def _pruned_shortcut(pick: list[int] | None) -> tuple:
    """A pruned option-A shortcut as the exporter and onnxsim leave it (quant/prune/channel_pads.py's
    ChannelGather after `x[:, :, ::2, ::2]`): one Slice over H, W and a run of channels, the channel pad,
    and with `pick` a Gather of channels after it. C, H and W end equal ([1, 8, 8, 8]), where onnx2tf
    mistook the crop's axis."""
    consts = {
        "starts": np.array([0, 0, 5], np.int64),
        "ends": np.array([BIG, BIG, 7], np.int64),
        "axes": np.array([2, 3, 1], np.int64),
        "steps": np.array([2, 2, 1], np.int64),
        "pads": np.array([0, 3, 0, 0, 0, 3 if pick is None else 4, 0, 0], np.int64),
        "w": np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Pad", ["s", "pads"], ["p" if pick is None else "padded"], mode="constant"),
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "p"], ["y"]),
    ]
    if pick is not None:
        consts["pick"] = np.array(pick, np.int64)
        nodes.insert(2, helper.make_node("Gather", ["padded", "pick"], ["p"], axis=1))
    return make_model(nodes, {"x": [1, 8, 16, 16]}, ["y"], consts)


def test_a_pruned_shortcut_keeping_a_run_of_channels_becomes_one_conv():
    before = _pruned_shortcut(None)
    after = strided_shortcut.rewrite(before)
    assert ops(after) == {"Conv": 2, "Add": 1}
    assert_same_outputs(before, after)


def test_channels_gathered_after_the_pad_become_the_conv_rows():
    before = _pruned_shortcut([0, 3, 4, 5, 2, 8, 1, -1])  # pad rows too; -1 from the end, as ONNX allows
    after = strided_shortcut.rewrite(before)
    assert ops(after) == {"Conv": 2, "Add": 1}
    assert_same_outputs(before, after)


def test_a_pruned_shortcut_with_equal_channels_and_pixels_converts_exactly(tmp_path: Path):
    """A ResNet-56 latency-search trial (stages 2 and 3 pruned to 8 channels) failed in onnx2tf with
    'Dimensions must be equal, but are 8 and 4' at the block's Add."""
    source = tmp_path / "pruned_shortcut.onnx"
    onnx.save(_pruned_shortcut(None), source)
    result = convert_model(ConvertOptions(source=str(source), outdir=tmp_path / "out"))
    assert result.manifest.verification.passed
    rewrites = next(p for p in result.manifest.passes if p.name == "onnx2tf_rewrites")
    assert "strided_shortcut_to_conv" in rewrites.model_dump()["applied"]

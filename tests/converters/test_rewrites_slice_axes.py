"""slice_whole_axes: a Slice over every axis (as onnxsim fuses them) keeps only the axes it cuts."""

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgeport.converters.rewrites import prepare_for_onnx2tf, slice_axes
from edgeport.pipeline import ConvertOptions, convert_model
from tests.onnx_graphs import make_model, ops, run

BIG = np.iinfo(np.int64).max
RNG = np.random.default_rng(0)


def test_cut_axes_keeps_the_cut_ones_with_clamped_bounds() -> None:
    shape = [1, 258, 3]
    assert slice_axes.cut_axes(shape, [0, 0, 0], [BIG, 129, BIG], [0, 1, 2], [1, 1, 1]) == [(1, 0, 129, 1)]
    assert slice_axes.cut_axes(shape, [0, 129, 0], [BIG] * 3, [0, 1, 2], [1, 1, 1]) == [(1, 129, 258, 1)]
    assert slice_axes.cut_axes(shape, [-1], [BIG], [-1], [1]) == [(2, 2, 3, 1)]  # clamped only
    assert slice_axes.cut_axes(shape, [0], [129], [1], [1]) is None  # already as simple as it gets
    assert slice_axes.cut_axes(shape, [0, 0], [BIG, BIG], [0, 1], [1, 1]) == []  # cuts nothing
    assert slice_axes.cut_axes(shape, [0, 0, 0], [BIG, 258, 3], [0, 1, 2], [1, 1, 1]) == []
    assert slice_axes.cut_axes(shape, [0, 5], [BIG, 1], [0, 1], [1, -1]) is None  # a negative step


def stft_halves() -> onnx.ModelProto:
    """A Conv1d whose output channels are cut in halves by full-rank Slices (silero-vad's STFT after
    onnxsim), then re^2 + im^2."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], strides=[2]),
        helper.make_node("Slice", ["c", "s0", "e0", "axes", "steps"], ["re"]),
        helper.make_node("Slice", ["c", "s1", "e1", "axes", "steps"], ["im"]),
        helper.make_node("Mul", ["re", "re"], ["re2"]),
        helper.make_node("Mul", ["im", "im"], ["im2"]),
        helper.make_node("Add", ["re2", "im2"], ["y"]),
    ]
    consts = {
        "w": RNG.standard_normal((8, 1, 4)),
        "s0": np.array([0, 0, 0], np.int64),
        "e0": np.array([BIG, 4, BIG], np.int64),
        "s1": np.array([0, 4, 0], np.int64),
        "e1": np.array([BIG, BIG, BIG], np.int64),
        "axes": np.array([0, 1, 2], np.int64),
        "steps": np.array([1, 1, 1], np.int64),
    }
    return make_model(nodes, {"x": [1, 1, 32]}, ["y"], consts)


def test_full_rank_slices_become_one_split_with_the_same_outputs() -> None:
    model = stft_halves()
    rewritten = slice_axes.rewrite(model)
    for node in rewritten.graph.node:
        if node.op_type == "Slice":
            axes = next(t for t in rewritten.graph.initializer if t.name == node.input[3])
            assert list(onnx.numpy_helper.to_array(axes)) == [1]
    prepared = prepare_for_onnx2tf(model)
    assert {"slice_whole_axes", "chunk_slices_to_split"} <= set(prepared.applied)
    assert "Slice" not in ops(prepared.model) and ops(prepared.model)["Split"] == 1
    x = RNG.standard_normal((1, 1, 32)).astype(np.float32)
    np.testing.assert_array_equal(run(prepared.model, {"x": x})[0], run(model, {"x": x})[0])


def test_full_rank_slices_of_a_conv1d_convert_within_tolerance(tmp_path: Path) -> None:
    """onnx2tf cut the channels-last tensor on the wrong axis (258 and 0 channels) before."""
    path = tmp_path / "stft.onnx"
    onnx.save(stft_halves(), str(path))
    result = convert_model(ConvertOptions(source=str(path), outdir=tmp_path / "out"))
    assert result.manifest.verification is not None and result.manifest.verification.passed


def width_one_conv() -> onnx.ModelProto:
    """magika's convolution as tf2onnx writes a JAX Conv over a sequence: the [N, L, C] features made
    [N, L, C, 1], a Slice that cuts nothing, a Transpose to NCHW, a (k, 1) Conv, then a Slice 0:1 on the
    width-1 axis (0..INT_MAX on the others) and a Squeeze of it."""
    nodes = [
        helper.make_node("Unsqueeze", ["x", "a3"], ["u"]),
        helper.make_node("Slice", ["u", "zeros", "big", "perm_axes", "ones"], ["s"]),
        helper.make_node("Transpose", ["s"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Conv", ["t", "w"], ["c"], kernel_shape=[3, 1]),
        helper.make_node("Slice", ["c", "zeros", "ends", "axes"], ["cs"]),
        helper.make_node("Squeeze", ["cs", "a3"], ["q"]),
        helper.make_node("Add", ["q", "b"], ["y"]),
    ]
    consts = {
        "a3": np.array([3], np.int64),
        "zeros": np.zeros(4, np.int64),
        "big": np.full(4, 10**9, np.int64),
        "perm_axes": np.array([0, 2, 1, 3], np.int64),
        "ones": np.ones(4, np.int64),
        "ends": np.array([2**31 - 1, 2**31 - 1, 2**31 - 1, 1], np.int64),
        "axes": np.array([0, 1, 2, 3], np.int64),
        "w": RNG.standard_normal((5, 6, 3, 1)),
        "b": RNG.standard_normal((1, 5, 1)),
    }
    return make_model(nodes, {"x": [1, 12, 6]}, ["y"], consts)


def test_a_slice_that_cuts_nothing_becomes_an_identity() -> None:
    model = width_one_conv()
    rewritten = slice_axes.rewrite(model)
    assert "Slice" not in ops(rewritten) and ops(rewritten)["Identity"] == 2
    x = RNG.standard_normal((1, 12, 6)).astype(np.float32)
    np.testing.assert_array_equal(run(rewritten, {"x": x})[0], run(model, {"x": x})[0])


def test_a_width_one_conv_sliced_whole_converts_within_tolerance(tmp_path: Path) -> None:
    """onnx2tf cut the channels-last Conv output to 1 channel at the 0:1 width Slice before."""
    path = tmp_path / "conv.onnx"
    onnx.save(width_one_conv(), str(path))
    result = convert_model(ConvertOptions(source=str(path), outdir=tmp_path / "out"))
    assert result.manifest.verification is not None and result.manifest.verification.passed

"""unit_clip_to_min_relu: clamps to [0, 1] and [-1, 1] without RELU_0_TO_1 / RELU_N1_TO_1."""

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgeport.converters.rewrites import unit_clip
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import read_tflite
from tests.onnx_graphs import make_model, ops, run

W = np.random.default_rng(0).standard_normal((6, 6)).astype(np.float32)


def clip_model(low: float, high: float) -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Clip", ["h", "lo", "hi"], ["y"]),
    ]
    consts = {"w": W, "lo": np.float32(low), "hi": np.float32(high)}
    return make_model(nodes, {"x": [4, 6]}, ["y"], consts)


def test_unit_clamps_are_rewritten_with_clip_values():
    x = {"x": np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)}
    for low, exact in ((0.0, True), (-1.0, False)):
        before = clip_model(low, 1.0)
        after = unit_clip.rewrite(before)
        assert "Clip" not in ops(after)
        want, got = run(before, x)[0], run(after, x)[0]
        if exact:
            np.testing.assert_array_equal(got, want)
        else:  # the rounding of x + 1, inside (-1, 1) only
            assert np.abs(got - want).max() <= 2.0**-24
            outside = np.abs(want) == 1.0
            assert outside.any() and np.array_equal(got[outside], want[outside])


def test_other_clamps_are_left_alone():
    for low, high in ((0.0, 6.0), (-2.0, 2.0)):
        model = clip_model(low, high)
        assert unit_clip.rewrite(model) == model


def test_both_clamps_quantize_to_int8_that_tflite_micro_runs(tmp_path: Path):
    """Refused before calibration: 'TFLite Micro has no kernel for op RELU_N1_TO_1' (zoo act_clamp)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Clip", ["h", "m1", "one"], ["a"]),
        helper.make_node("Clip", ["h", "zero", "one"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    consts = {"w": W, "m1": np.float32(-1.0), "zero": np.float32(0.0), "one": np.float32(1.0)}
    source = tmp_path / "clips.onnx"
    onnx.save(make_model(nodes, {"x": [1, 6]}, ["y"], consts), source)
    out = tmp_path / "out"
    convert_model(
        ConvertOptions(
            source=str(source), outdir=out, input_shapes=[[1, 6]], quantize=QuantOptions(mode="int8")
        )
    )
    tflite_ops = read_tflite(out / "model_int8.tflite").ops
    assert not {"RELU_0_TO_1", "RELU_N1_TO_1"} & set(tflite_ops)

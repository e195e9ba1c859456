"""HardSigmoid -> Mul, Add, Min, Max: same function, and the converted model has no RELU_0_TO_1."""

from pathlib import Path

import numpy as np
from onnx import helper

from edgeport.converters.rewrites import hard_sigmoid
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.runtimes.litert import LiteRTRunner
from edgeport.runtimes.tflm import run_tflm
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import read_tflite
from tests.onnx_graphs import assert_same_outputs, make_model, ops
from tests.quant import tflm_op_models as M


def hard_sigmoid_graph(**attrs):
    consts = {"w": np.random.default_rng(0).standard_normal((6, 6)).astype(np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("HardSigmoid", ["h"], ["y"], **attrs),
    ]
    return make_model(nodes, {"x": [4, 6]}, ["y"], consts)


def test_hard_sigmoid_becomes_min_max_with_the_same_outputs():
    for attrs in ({}, {"alpha": 1 / 6, "beta": 0.5}, {"alpha": 0.3, "beta": 0.1}):
        before = hard_sigmoid_graph(**attrs)
        after = hard_sigmoid.rewrite(before)
        assert ops(after) == {"MatMul": 1, "Mul": 1, "Add": 1, "Min": 1, "Max": 1}
        assert_same_outputs(before, after)


def test_graph_without_hard_sigmoid_is_untouched():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [2, 3]}, ["y"], {})
    assert hard_sigmoid.rewrite(model) == model


def test_converted_hard_sigmoid_runs_in_tflite_micro_like_litert(tmp_path: Path):
    out = tmp_path / "out"
    convert_model(
        ConvertOptions(source=f"{Path(M.__file__)}:HardSigmoidNet", outdir=out, input_shapes=[[1, *M.IMAGE]])
    )
    model = (out / "model_float32.tflite").read_bytes()
    tflite_ops = read_tflite(out / "model_float32.tflite").ops
    assert "RELU_0_TO_1" not in tflite_ops and "MINIMUM" in tflite_ops
    spec_in = [TensorSpec("x", [1, *M.IMAGE], channels_last=True)]
    runner = LiteRTRunner(model, spec_in, [TensorSpec("output", [1, 4, *M.IMAGE[1:]], channels_last=True)])
    x = np.random.default_rng(0).standard_normal((1, *M.IMAGE)).astype(np.float32) * 3
    raw = runner.quantize_inputs({"x": x})
    tflm = run_tflm(model, [raw]).raw_outputs[0][0]
    np.testing.assert_allclose(tflm, runner.run_raw(raw)[0], rtol=1e-5, atol=1e-5)

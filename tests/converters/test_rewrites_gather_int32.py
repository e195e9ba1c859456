"""Gather with constant int64 indices -> int32 indices: same outputs, and TFLite Micro runs the GATHER."""

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from edgeport.converters.rewrites import gather_int32
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.runtimes.litert import LiteRTRunner
from edgeport.runtimes.tflm import run_tflm
from edgeport.tensors import TensorSpec
from tests.onnx_graphs import assert_same_outputs, make_model
from tests.quant import tflm_op_models as M


def gather_graph(indices: np.ndarray):
    nodes = [helper.make_node("Gather", ["x", "idx"], ["y"], axis=1)]
    return make_model(nodes, {"x": [2, 6]}, ["y"], {"idx": indices})


def _indices_type(model) -> int:
    return next(t.data_type for t in model.graph.initializer if t.name.startswith("idx"))


def test_int64_indices_become_int32_with_the_same_outputs():
    before = gather_graph(np.array([3, 0, 5, 1], np.int64))
    after = gather_int32.rewrite(before)
    assert _indices_type(before) == TensorProto.INT64 and _indices_type(after) == TensorProto.INT32
    assert_same_outputs(before, after)


def test_int32_indices_and_computed_indices_are_untouched():
    int32 = gather_graph(np.array([1, 0], np.int32))
    assert gather_int32.rewrite(int32) == int32
    nodes = [
        helper.make_node("ArgMax", ["x"], ["i"], axis=1),
        helper.make_node("Gather", ["x", "i"], ["y"], axis=1),
    ]
    computed = make_model(nodes, {"x": [2, 6]}, ["y"], {})
    assert gather_int32.rewrite(computed) == computed


def test_converted_index_select_runs_in_tflite_micro_like_litert(tmp_path: Path):
    out = tmp_path / "out"
    convert_model(
        ConvertOptions(source=f"{Path(M.__file__)}:IndexSelect", outdir=out, input_shapes=[[1, *M.IMAGE]])
    )
    model = (out / "model_float32.tflite").read_bytes()
    runner = LiteRTRunner(
        model, [TensorSpec("x", [1, *M.IMAGE], channels_last=True)], [TensorSpec("output", [1, 6])]
    )
    raw = runner.quantize_inputs(
        {"x": np.random.default_rng(0).standard_normal((1, *M.IMAGE)).astype(np.float32)}
    )
    tflm = run_tflm(model, [raw]).raw_outputs[0][0]
    np.testing.assert_allclose(tflm, runner.run_raw(raw)[0], rtol=1e-5, atol=1e-5)

"""legacy_softmax_axis: opset < 13 Softmax-family nodes keep their flattening meaning through onnx2tf."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from edgeport.converters.rewrites import legacy_softmax


def _model(op: str, shape: list[int], opset: int, **attrs: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], name=f"{op}@0", **attrs)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize(
    ("shape", "attrs"), [([1, 4, 3, 5], {"axis": 1}), ([2, 6, 5], {}), ([2, 3, 4], {"axis": -2})]
)
def test_non_last_axis_is_written_out_with_the_same_values(op: str, shape: list[int], attrs: dict) -> None:
    model = _model(op, shape, 11, **attrs)
    rewritten = legacy_softmax.rewrite(model)
    assert [n.op_type for n in rewritten.graph.node] == ["Flatten", op, "Reshape"]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-6, atol=1e-6)
    # The opset-11 meaning really differs from normalising one axis (what onnx2tf would do).
    single_axis = _run(_model(op, shape, 13, axis=attrs.get("axis", 1)), x)
    assert not np.allclose(_run(model, x), single_axis, atol=1e-3)


@pytest.mark.parametrize(
    ("shape", "opset", "attrs"),
    [
        ([1, 4, 6], 11, {"axis": 2}),
        ([1, 4, 6], 11, {"axis": -1}),
        ([3, 5], 11, {}),
        ([1, 4, 3, 5], 13, {"axis": 1}),
    ],
)
def test_last_axis_and_new_opsets_are_left_alone(shape: list[int], opset: int, attrs: dict) -> None:
    model = _model("Softmax", shape, opset, **attrs)
    assert legacy_softmax.rewrite(model).SerializeToString() == model.SerializeToString()


def test_opset_11_channel_softmax_converts(tmp_path: Path, run_cli) -> None:
    onnx.save(_model("Softmax", [1, 4, 6, 5], 11, axis=1), tmp_path / "m.onnx")
    code, _, err = run_cli("convert", tmp_path / "m.onnx", "-o", tmp_path / "out")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "edgeport.json").read_text())["verification"]["passed"]

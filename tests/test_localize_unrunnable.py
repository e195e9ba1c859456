"""When bisection cannot localize a failure, the user is told why in plain words, and the
--skip-pass hint names only a rewrite that changed the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeport.converters.localize import NotLocalized, prefix_diverges
from edgeport.pipeline import stages
from edgeport.pipeline.onnx_passes import RewriteReport
from edgeport.pipeline.state import ConvertOptions, ConvertState
from edgeport.runtimes.onnxrt import run_onnx
from edgeport.tensors import TensorSpec, random_inputs


def _branch(name: str, op: str) -> onnx.GraphProto:
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, 4])
    return helper.make_graph([helper.make_node(op, ["r"], [f"{name}_out"])], name, [], [out])


def _if_reading_outer_tensor() -> onnx.ModelProto:
    """y = relu(x) if sum(x) > 0 else -relu(x): relu(x) is read only inside the If's branches, so a
    graph cut at y leaves the Relu out (the shape of silero-vad's decoder)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0])),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="positive"),
        helper.make_node(
            "If", ["cond"], ["y"], name="choose", then_branch=_branch("then", "Identity"),
            else_branch=_branch("else", "Neg"),
        ),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _args() -> tuple:
    specs = [TensorSpec("x", [1, 4])]
    return random_inputs(specs, 1, 0), specs, [], {}, 1e-4


def test_the_model_itself_runs() -> None:
    (samples, *_rest) = _args()
    (out,) = run_onnx(_if_reading_outer_tensor().SerializeToString(), samples)
    x = samples[0]["x"]
    expected = np.maximum(x, 0) * (1 if x.sum() > 0 else -1)
    np.testing.assert_allclose(out["y"], expected, rtol=1e-6)


def test_an_unrunnable_prefix_is_reported_plainly() -> None:
    with pytest.raises(NotLocalized) as failure:
        prefix_diverges(_if_reading_outer_tensor(), "y", *_args())
    message = str(failure.value)
    assert message == (
        "the graph cut after node choose (If) is not a valid model for onnxruntime; "
        "its If subgraphs read tensors the cut leaves out"
    )


def _state(tmp_path: Path, applied: dict[str, bool]) -> ConvertState:
    state = ConvertState(options=ConvertOptions(source="model.onnx", outdir=tmp_path / "out"))
    state.model = _if_reading_outer_tensor()
    state.pass_reports = [RewriteReport(name=name, applied=changed) for name, changed in applied.items()]
    return state


def test_conversion_error_says_why_the_node_was_not_found(tmp_path: Path) -> None:
    state = _state(tmp_path, {"chunk_slices_to_split": False, "gather_int32_indices": True})
    error = stages._tflite_failure(state, ValueError("tf.squeeze failed"))
    line = error.one_line()
    assert "the failing node could not be localized: the graph cut after node choose (If)" in line
    assert "ONNXRuntimeError" not in line and "INVALID_GRAPH" not in line
    # The hint names the rewrite that changed the model, never one that matched nothing.
    assert "--skip-pass gather_int32_indices" in line and "chunk_slices_to_split" not in line


def test_without_changing_rewrites_the_hint_names_no_pass(tmp_path: Path) -> None:
    state = _state(tmp_path, {"chunk_slices_to_split": False})
    line = stages._tflite_failure(state, ValueError("tf.squeeze failed")).one_line()
    assert "chunk_slices_to_split" not in line
    assert "--skip-pass NAME (edgeport convert --list-passes)" in line

"""ONNX If nodes: a constant condition is folded away, a data-dependent one converts with both branches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeport.converters import onnx_prepare


class Gate(nn.Module):
    """A TorchScript branch on the data: exported as an ONNX If whose branches read the input 'x.1'."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return self.fc(x)
        return -torch.relu(self.fc(x))


def _gate_onnx(path: Path) -> onnx.ModelProto:
    # No input_names: TorchScript names the input 'x.1', which edgeport renames for onnx2tf.
    torch.onnx.export(torch.jit.script(Gate()), (torch.randn(1, 16),), path, dynamo=False, opset_version=17)
    return onnx.load(path)


def _branch(op: str, out: str) -> onnx.GraphProto:
    node = helper.make_node(op, ["x.1"], [out], axes=[1], keepdims=0)
    return helper.make_graph([node], op, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])


def _constant_if() -> onnx.ModelProto:
    """`mean over time if time > 4 else max`: a condition fixed once --input-shape fixes time."""
    nodes = [
        helper.make_node("Shape", ["x.1"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["time"], axis=0),
        helper.make_node("Greater", ["time", "four"], ["cond"]),
        helper.make_node(
            "If",
            ["cond"],
            ["pooled"],
            name="if_long",
            then_branch=_branch("ReduceMean", "t"),
            else_branch=_branch("ReduceMax", "e"),
        ),
        helper.make_node("Relu", ["pooled"], ["y"]),
    ]
    constants = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("one", 1), ("four", 4))]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x.1", TensorProto.FLOAT, [1, "time", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        constants,
    )
    # IR 8 as exporters write it (onnx's default 12 is newer than onnxruntime reads; sources lowers it).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_rename_io_reaches_into_branches(tmp_path: Path) -> None:
    renamed = onnx_prepare.rename_io(_gate_onnx(tmp_path / "g.onnx"), {"x.1": "x_1"})
    if_node = next(n for n in renamed.graph.node if n.op_type == "If")
    branch_inputs = {i for a in if_node.attribute for n in a.g.node for i in n.input}
    assert "x_1" in branch_inputs and "x.1" not in branch_inputs


def test_constant_condition_if_is_folded_to_the_taken_branch() -> None:
    for time, taken in ((6, "ReduceMean"), (3, "ReduceMax")):
        fixed = onnx_prepare.fix_input_shapes(_constant_if(), [[1, time, 16]])
        simplified, ok = onnx_prepare.simplify(fixed, fuse_bn=False)
        assert ok
        assert [n.op_type for n in simplified.graph.node] == [taken, "Relu"]


def test_data_dependent_if_converts_with_both_branches(tmp_path: Path, run_cli) -> None:
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    _gate_onnx(tmp_path / "gate.onnx")
    code, _, err = run_cli("convert", tmp_path / "gate.onnx", "-o", tmp_path / "out")
    assert code == 0, err
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    interpreter = Interpreter(model_path=str(tmp_path / "out" / "model_float32.tflite"))
    runner = interpreter.get_signature_runner()
    (in_key,) = interpreter.get_signature_list()["serving_default"]["inputs"]
    base = np.random.default_rng(3).uniform(0.1, 1.0, (1, 16)).astype(np.float32)
    for x in (base, -base):  # sum > 0 takes the first branch, sum < 0 the second
        (expected,) = session.run(None, {session.get_inputs()[0].name: x})
        (got,) = runner(**{in_key: x}).values()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(session.run(None, {"x.1": base})[0], -session.run(None, {"x.1": -base})[0])

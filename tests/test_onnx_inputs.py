"""ONNX inputs as real exporters write them: -1 / 0 / named dynamic dims, scalar inputs, names TF refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeport.cli.convert import parse_shape
from edgeport.converters.onnx_prepare import fix_input_shapes, input_shapes_of, tf_safe_names
from edgeport.errors import EdgeportError


def _model(
    inputs: list[onnx.ValueInfoProto], nodes: list[onnx.NodeProto], out: str, out_shape
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _paddle_like() -> onnx.ModelProto:
    """Batch written as -1, free spatial dims, Paddle-style node and tensor names ('@', ':', ' ')."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv2d_0.w_0")
    nodes = [
        helper.make_node("Conv", ["x", "conv2d_0.w_0"], ["conv@1:tmp 0"], name="Conv@0", pads=[1, 1, 1, 1]),
        helper.make_node("Softmax", ["conv@1:tmp 0"], ["softmax@0.tmp_0"], name="Softmax@0", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "paddle",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "h", 0])],
        [helper.make_tensor_value_info("softmax@0.tmp_0", TensorProto.FLOAT, [-1, 4, "h", 0])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_minus_one_zero_and_named_dims_are_dynamic() -> None:
    model = _paddle_like()
    assert input_shapes_of(model) == {"x": ["?", 3, "h", "?"]}
    fixed = fix_input_shapes(model, [[1, 3, 48, 192]])
    assert input_shapes_of(fixed) == {"x": [1, 3, 48, 192]}
    with pytest.raises(EdgeportError, match="contradicts the model's fixed shape"):
        fix_input_shapes(model, [[1, 4, 48, 192]])
    with pytest.raises(
        EdgeportError, match=r"dynamic dimensions.*--input-shape 1,3,<h>,<\?>, a number for each"
    ):
        fix_input_shapes(model, [])


@pytest.mark.parametrize("text", ["scalar", "()", "[]", "", " Scalar "])
def test_scalar_shape_spellings(text: str) -> None:
    assert parse_shape(text) == []


def test_scalar_input_keeps_rank_zero() -> None:
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
        helper.make_tensor_value_info("sr", TensorProto.FLOAT, []),
    ]
    model = _model(inputs, [helper.make_node("Mul", ["x", "sr"], ["y"])], "y", [1, 4])
    for given in ([], [[1, 4], []]):
        fixed = fix_input_shapes(model, given)
        sr = next(i for i in fixed.graph.input if i.name == "sr")
        assert sr.type.tensor_type.HasField("shape") and len(sr.type.tensor_type.shape.dim) == 0
    with pytest.raises(EdgeportError, match="Write --input-shape scalar"):
        fix_input_shapes(model, [[1, 4], [1]])


def test_input_of_unknown_rank_needs_a_shape() -> None:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)]
    model = _model(inputs, [helper.make_node("Relu", ["x"], ["y"])], "y", None)
    with pytest.raises(EdgeportError, match="no shape in the model"):
        fix_input_shapes(model, [])
    fixed = fix_input_shapes(model, [[2, 5]])
    assert input_shapes_of(fixed) == {"x": [2, 5]}


def test_tf_safe_names_keep_io_and_stay_unique() -> None:
    model = _paddle_like()
    model.graph.node[1].name = "Softmax@0"
    model.graph.node.append(
        helper.make_node("Identity", ["softmax@0.tmp_0"], ["Softmax_0"], name="Softmax_0")
    )
    model.graph.output[0].name = "Softmax_0"
    safe = tf_safe_names(model)
    names = [n.name for n in safe.graph.node]
    assert names == ["Conv_0", "Softmax_0_1", "Softmax_0"]
    assert safe.graph.node[0].output[0] == safe.graph.node[1].input[0] == "conv_1_tmp_0"
    assert [i.name for i in safe.graph.input] == ["x"] and safe.graph.output[0].name == "Softmax_0"
    assert safe.graph.node[0].input[1] == safe.graph.initializer[0].name == "conv2d_0.w_0"  # already valid
    assert model.graph.node[0].name == "Conv@0"  # the caller's model is untouched


def test_paddle_like_model_converts_and_keeps_its_names(tmp_path: Path, run_cli) -> None:
    onnx.save(_paddle_like(), tmp_path / "m.onnx")
    code, _, err = run_cli(
        "convert", tmp_path / "m.onnx", "--input-shape", "1,3,8,12", "-o", tmp_path / "out"
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "edgeport.json").read_text())
    assert manifest["verification"]["passed"]
    onnx_art = next(a for a in manifest["artifacts"] if a["kind"] == "onnx")
    assert [o["name"] for o in onnx_art["outputs"]] == ["softmax@0.tmp_0"]
    assert [n.name for n in onnx.load(tmp_path / "out" / "model.onnx").graph.node] == ["Conv@0", "Softmax@0"]


@pytest.mark.parametrize(
    ("elem", "message"),
    [
        (
            TensorProto.DOUBLE,
            "input 'x' is double, which TFLite has no kernels for. Export the model in float32",
        ),
        (TensorProto.STRING, "input 'x' is string, which TFLite has no kernels for. Keep text processing"),
        (TensorProto.COMPLEX64, "input 'x' is complex64, which TFLite has no kernels for"),
    ],
)
def test_inputs_tflite_cannot_take_are_refused(elem: int, message: str) -> None:
    inputs = [helper.make_tensor_value_info("x", elem, [1, 4])]
    model = _model(inputs, [helper.make_node("Identity", ["x"], ["y"])], "y", [1, 4])
    with pytest.raises(EdgeportError, match=message.replace(".", r"\.")):
        fix_input_shapes(model, [])


def test_model_without_inputs_is_refused() -> None:
    const = numpy_helper.from_array(np.ones(2, np.float32), "c")
    model = _model([], [helper.make_node("Relu", ["c"], ["y"])], "y", [2])
    model.graph.initializer.append(const)
    with pytest.raises(EdgeportError, match="the model has no inputs"):
        fix_input_shapes(model, [])


SCALAR_SOURCE = '''
import torch
from torch import nn


class Gain(nn.Module):
    """A feature vector and a sample rate (rank 0), as voice-activity models take them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 8)

    def forward(self, x, sr):
        return self.fc(x) * (sr / 16000.0)
'''


def test_scalar_input_converts_end_to_end(tmp_path: Path, run_cli) -> None:
    (tmp_path / "gain.py").write_text(SCALAR_SOURCE)
    code, _, err = run_cli(
        "convert", f"{tmp_path / 'gain.py'}:Gain", "--input-shape", "1,16", "--input-shape", "scalar",
        "-o", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "edgeport.json").read_text())
    assert manifest["verification"]["passed"]
    onnx_art = next(a for a in manifest["artifacts"] if a["kind"] == "onnx")
    assert {i["name"]: i["shape"] for i in onnx_art["inputs"]} == {"x": [1, 16], "sr": []}


def test_onnx_newer_than_the_verifier_is_a_user_error(tmp_path: Path, run_cli) -> None:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    model = _model(inputs, [helper.make_node("Relu", ["x"], ["y"])], "y", [1, 4])
    model.opset_import[0].version = 24
    onnx.save(model, tmp_path / "m.onnx")
    code, _, err = run_cli("convert", tmp_path / "m.onnx", "-o", tmp_path / "out")
    assert code == 1, err
    assert "uses ONNX opset 24" in err and "Re-export the model with opset 23 or lower" in err


def test_repeated_node_names_are_made_unique_for_onnxruntime() -> None:
    import onnxruntime

    from edgeport.converters.onnx_prepare import unique_node_names

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="act"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="act"),
        helper.make_node("Tanh", ["b"], ["y"], name="act_1"),
    ]
    model = _model(inputs, nodes, "y", [1, 4])
    model.ir_version = 8
    fixed = unique_node_names(model)
    assert [n.name for n in fixed.graph.node] == ["act", "act_2", "act_1"]
    onnxruntime.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    assert unique_node_names(fixed) is fixed  # already unique: untouched


def test_a_source_that_does_not_run_at_its_input_shape_is_refused_in_one_line(
    tmp_path: Path, run_cli
) -> None:
    # What torch's TorchScript exporter writes for a sequence-first attention: axis 0 marked dynamic, its
    # traced length fixed in a Reshape; the default input shape (axis 0 = 1) cannot run it.
    shape = numpy_helper.from_array(np.array([3, 4], dtype=np.int64), "shape")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["seq", 4])]
    model = _model(inputs, [helper.make_node("Reshape", ["x", "shape"], ["y"], name="fixed")], "y", [3, 4])
    model.graph.initializer.append(shape)
    onnx.save(model, tmp_path / "m.onnx")
    code, _, err = run_cli("convert", tmp_path / "m.onnx", "-o", tmp_path / "out")
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        "edgeport: error: the source model does not run in onnxruntime at its input shape (x [1, 4]): "
    )
    assert "Reshape node 'fixed': " in line and "requested shape:{3,4}" in line
    assert "Give --input-shape the shape it was exported with" in line
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    # --prune runs the source in onnxruntime first (checking the ONNX-to-PyTorch evaluator): the same line.
    code, _, err = run_cli("convert", tmp_path / "m.onnx", "--prune", "0.3", "-o", tmp_path / "out")
    assert code == 1 and err.strip().splitlines()[-1] == line, err
    code, _, err = run_cli("convert", tmp_path / "m.onnx", "--input-shape", "3,4", "-o", tmp_path / "out")
    assert code == 0, err

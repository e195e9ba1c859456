"""one_hot_to_gather: OneHot and Cast(Equal(x, arange)) -> Gather from a constant table, exact for every
integer input (out of range included), and TFLite Micro runs the int8 model (it has no ONE_HOT)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from edgeport.converters.rewrites import one_hot
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import parse_tflite, read_tflite
from tests.onnx_graphs import ops, run

DEPTH = 5


def graph(
    nodes: list[onnx.NodeProto],
    x_shape: list[int],
    x_type: int,
    consts: dict[str, np.ndarray],
    opset: int = 17,
) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", x_type, x_shape)], [], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.append(inferred["y"])
    onnx.checker.check_model(model)
    return model


def one_hot_graph(
    axis: int, values: np.ndarray, x_type: int = TensorProto.INT64, cast: int | None = None
) -> onnx.ModelProto:
    out = "h" if cast is not None else "y"
    nodes = [helper.make_node("OneHot", ["x", "depth", "values"], [out], axis=axis)]
    if cast is not None:
        nodes.append(helper.make_node("Cast", ["h"], ["y"], to=cast))
    # onnxruntime's OneHot kernels pair int32 indices with an int32 depth
    depth = np.array(DEPTH, np.int32 if x_type == TensorProto.INT32 else np.int64)
    consts = {"depth": depth, "values": values}
    return graph(nodes, [2, 3, 4], x_type, consts)


def every_index(dtype: type, shape: tuple[int, ...] = (2, 3, 4)) -> np.ndarray:
    """Each index from well below -depth to well above depth, in the input's shape."""
    values = np.arange(-2 * DEPTH - 3, 2 * DEPTH + 3)
    return np.resize(values, shape).astype(dtype)


def assert_same(before: onnx.ModelProto, after: onnx.ModelProto, x: np.ndarray) -> None:
    want, got = run(before, {"x": x})[0], run(after, {"x": x})[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("axis", [-1, -2, 0, 1, 2, 3])
@pytest.mark.parametrize(
    "values",
    [np.array([0, 1], np.int64), np.array([-1.5, 3.0], np.float32), np.array([2.0, -7.0], np.float32)],
)
def test_one_hot_is_exact_on_every_axis_values_and_index(axis: int, values: np.ndarray):
    before = one_hot_graph(axis, values)
    after = one_hot.rewrite(before)
    assert "OneHot" not in ops(after) and "Gather" in ops(after)
    for start in range(0, 2 * (2 * DEPTH + 3), 24):  # every index in some position
        assert_same(before, after, np.roll(every_index(np.int64), start))


def test_one_hot_absorbs_its_cast_and_reads_int32_indices():
    before = one_hot_graph(-1, np.array([0.0, 1.0], np.float32), TensorProto.INT32, cast=TensorProto.INT32)
    after = one_hot.rewrite(before)
    assert sorted(ops(after)) == ["Add", "Clip", "Gather"]  # no Cast: indices are int32, table int32
    assert_same(before, after, every_index(np.int32))


class TorchOneHot(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x, DEPTH).float() * 2 - 1


class TorchEqual(torch.nn.Module):
    """The comparison spelling, on the middle axis (JAX's one_hot as tf2onnx exports it, transposed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(1) == torch.arange(DEPTH).reshape(1, DEPTH, 1)).float()


class TorchEqualLast(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[..., None] == torch.arange(DEPTH)).to(torch.int32) * 3


def exported(
    module: torch.nn.Module, shape: tuple[int, ...], dtype: torch.dtype = torch.int64
) -> onnx.ModelProto:
    buffer = io.BytesIO()
    example = torch.zeros(shape, dtype=dtype)
    torch.onnx.export(module, (example,), buffer, input_names=["x"], opset_version=17, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("module", [TorchOneHot(), TorchEqual(), TorchEqualLast()])
def test_torch_one_hots_are_exact(module: torch.nn.Module):
    before = exported(module, (2, 12))
    after = one_hot.rewrite(before)
    assert not {"OneHot", "Equal"} & set(ops(after)) and "Gather" in ops(after)
    x = every_index(np.int64, (2, 12))
    if isinstance(module, TorchOneHot):
        x = x % DEPTH  # the reference: PyTorch's one_hot takes 0..depth-1 only
    assert_same(before, after, x)
    assert_same(before, after, np.random.default_rng(0).integers(-3, DEPTH + 3, (2, 12)))


@pytest.mark.parametrize(
    ("nodes", "consts", "x_type", "why"),
    [
        (
            [helper.make_node("OneHot", ["x", "d", "values"], ["y"])],
            {"values": np.array([0.0, 1.0], np.float32)},
            TensorProto.INT64,
            "its depth is not a constant scalar",
        ),
        (
            [helper.make_node("OneHot", ["x", "depth", "values"], ["y"])],
            {"depth": np.array(DEPTH, np.int64), "values": np.array([0.0, 1.0], np.float32)},
            TensorProto.FLOAT,
            "its indices are not integers",
        ),
        (
            [helper.make_node("Equal", ["x", "iota"], ["y"])],
            {"iota": np.arange(DEPTH).reshape(1, 1, DEPTH)},
            TensorProto.INT64,
            "read by other than one Cast",
        ),
        (
            [helper.make_node("Equal", ["x", "iota"], ["e"]), helper.make_node("Cast", ["e"], ["y"], to=1)],
            {"iota": np.arange(4).reshape(1, 1, 4)},
            TensorProto.INT64,
            "has size 4, not 1, on the iota's axis",
        ),
    ],
)
def test_unmet_preconditions_leave_the_graph_and_say_why(
    nodes: list[onnx.NodeProto], consts: dict, x_type: int, why: str, caplog: pytest.LogCaptureFixture
):
    inputs = [helper.make_tensor_value_info("d", TensorProto.INT64, [])] if "d" in nodes[0].input else []
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    x = helper.make_tensor_value_info("x", x_type, [2, 3, 4])
    g = helper.make_graph(nodes, "t", [x, *inputs], [helper.make_tensor_value_info("y", 1, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with caplog.at_level(logging.INFO, logger=one_hot.__name__):
        assert one_hot.rewrite(model) == model
    assert why in caplog.text


def test_old_opset_and_huge_depth_are_left_with_the_reason(caplog: pytest.LogCaptureFixture):
    old = one_hot_graph(-1, np.array([0, 1], np.int64))
    del old.opset_import[:]
    old.opset_import.append(helper.make_opsetid("", 11))
    huge = one_hot_graph(-1, np.array([0, 1], np.int64))
    huge.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(4096, np.int64), "depth"))
    with caplog.at_level(logging.INFO, logger=one_hot.__name__):
        assert one_hot.rewrite(old) == old
        assert one_hot.rewrite(huge) == huge
    assert "opset 11 has no integer Clip" in caplog.text and "depth 4096 needs a table" in caplog.text


def test_table_rows_and_bounds():
    table = one_hot.one_hot_table(3, -1, 2, np.dtype(np.float32), wrap_negative=True)
    low, high, offset = one_hot.index_bounds(3, True)
    for index in range(-6, 7):
        row = table[min(max(index, low), high) + offset]
        want = np.full(3, -1.0)
        if -3 <= index < 3:
            want[index] = 2.0
        np.testing.assert_array_equal(row, want)
    assert one_hot.iota_axis(np.arange(4).reshape(1, 4, 1)) == 1
    assert one_hot.iota_axis(np.arange(1, 5)) is None
    assert one_hot.iota_axis(np.arange(4).reshape(2, 2)) is None


class OneHotClassifier(torch.nn.Module):
    """Tokens -> one-hot -> dense -> pooled logits (magika's front end, small): the comparison spelling
    on int32 tokens, or F.one_hot on int64 ones (the input becomes int32: TFLite Micro casts no int64)."""

    def __init__(self, spelling: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.spelling = spelling
        self.dense = torch.nn.Linear(17, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spelling == "equal":
            onehot = (x[..., None] == torch.arange(17, dtype=torch.int32)).float()
        else:
            onehot = F.one_hot(x, 17).float()
        return self.head(torch.relu(self.dense(onehot)).mean(1))


@pytest.mark.parametrize(("spelling", "dtype"), [("equal", torch.int32), ("one_hot", torch.int64)])
def test_one_hot_model_quantizes_to_int8_that_tflite_micro_runs(tmp_path: Path, spelling: str, dtype):
    """Refused before calibration: 'TFLite Micro has no kernel for op ONE_HOT' (magika)."""
    source = tmp_path / "onehot.onnx"
    onnx.save(exported(OneHotClassifier(spelling), (1, 32), dtype), source)
    out = tmp_path / "out"
    convert_model(
        ConvertOptions(
            source=str(source),
            outdir=out,
            input_shapes=[[1, 32]],
            input_range={"x": (0.0, 16.0)},
            quantize=QuantOptions(mode="int8"),
        )
    )
    for name in ("model_float32.tflite", "model_int8.tflite"):
        found = read_tflite(out / name).ops
        assert "ONE_HOT" not in found and "GATHER" in found
        assert found.count("FULLY_CONNECTED") == 1  # the dense layer after the one-hot is the table
    assert [np.dtype(i.dtype) for i in parse_tflite((out / "model_int8.tflite").read_bytes()).inputs] == [
        np.int32
    ]


@pytest.mark.parametrize("values", [np.array([0.0, 1.0], np.float32), np.array([-0.5, 2.0], np.float32)])
def test_a_matmul_by_constant_weights_folds_into_the_table(values: np.ndarray):
    weights = np.random.default_rng(0).standard_normal((DEPTH, 3)).astype(np.float32)
    nodes = [
        helper.make_node("OneHot", ["x", "depth", "values"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["y"]),
    ]
    consts = {"depth": np.array(DEPTH, np.int64), "values": values, "w": weights}
    before = graph(nodes, [2, 3, 4], TensorProto.INT64, consts)
    after = one_hot.rewrite(before)
    assert "MatMul" not in ops(after)
    x = every_index(np.int64)
    want, got = run(before, {"x": x})[0], run(after, {"x": x})[0]
    if values[0] == 0.0:  # each row of the product is a row of the weights
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_matmul_by_a_computed_matrix_is_kept():
    nodes = [
        helper.make_node("OneHot", ["x", "depth", "values"], ["h"]),
        helper.make_node("Relu", ["w"], ["r"]),
        helper.make_node("MatMul", ["h", "r"], ["y"]),
    ]
    consts = {
        "depth": np.array(DEPTH, np.int64),
        "values": np.array([0.0, 1.0], np.float32),
        "w": np.ones((DEPTH, 3), np.float32),
    }
    after = one_hot.rewrite(graph(nodes, [2, 3, 4], TensorProto.INT64, consts))
    assert "MatMul" in ops(after) and "OneHot" not in ops(after)


@pytest.mark.parametrize(
    ("bias", "folded"),
    [
        (np.linspace(-1, 1, 3, dtype=np.float32), True),
        (np.linspace(-1, 1, 3, dtype=np.float32).reshape(1, 1, 1, 3), True),
        (np.ones((1, 1, 1, 1, 3), np.float32), False),  # it would add an axis
        (np.ones((4, 1), np.float32) * 0.5, False),  # not over the last axis
    ],
)
def test_the_dense_layers_bias_folds_into_the_table(bias: np.ndarray, folded: bool):
    weights = np.random.default_rng(1).standard_normal((DEPTH, 3)).astype(np.float32)
    nodes = [
        helper.make_node("OneHot", ["x", "depth", "values"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["m"]),
        helper.make_node("Add", ["b", "m"], ["y"]),
    ]
    consts = {"depth": np.array(DEPTH, np.int64), "values": np.array([0.0, 1.0], np.float32), "w": weights}
    before = graph(nodes, [2, 3, 4], TensorProto.INT64, {**consts, "b": bias})
    after = one_hot.rewrite(before)
    assert "MatMul" not in ops(after)
    assert ops(after)["Add"] == (1 if folded else 2)  # the index offset's Add, then the bias's
    assert_same(before, after, every_index(np.int64))


def test_an_int64_input_becomes_int32_only_for_a_one_hot_that_is_rewritten():
    from edgeport.pipeline.index_inputs_int32 import convert_index_inputs

    model = one_hot_graph(-1, np.array([0.0, 1.0], np.float32))
    converted, report = convert_index_inputs(model)
    assert list(report.converted) == ["x"]
    assert converted.graph.input[0].type.tensor_type.elem_type == TensorProto.INT32
    x = every_index(np.int32)
    want, got = run(model, {"x": x.astype(np.int64)})[0], run(one_hot.rewrite(converted), {"x": x})[0]
    np.testing.assert_array_equal(got, want)
    # Left as it is, a OneHot on int32 indices with an int64 depth has no onnxruntime kernel.
    huge = one_hot_graph(-1, np.array([0.0, 1.0], np.float32))
    huge.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(4096, np.int64), "depth"))
    kept, report = convert_index_inputs(huge)
    assert kept == huge and "x" in report.left

"""if_to_where and where_to_arithmetic: same outputs, and the int8 model runs in TFLite Micro (no SELECT)."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeport.converters.rewrites import if_to_where, where_arithmetic
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import read_tflite
from tests.onnx_graphs import make_model, ops, run

RNG = np.random.default_rng(0)
W = RNG.standard_normal((6, 6)).astype(np.float32)


def branch(name: str, nodes: list[onnx.NodeProto], out: str, shape: list[int]) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)])


def gated_model() -> onnx.ModelProto:
    """h = x @ w; if mean(h) >= 0: sigmoid(h) * 2 else: h - 1 (what openwakeword's gate looks like)."""
    then_branch = branch(
        "then",
        [helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Mul", ["s", "two"], ["t"])],
        "t",
        [1, 6],
    )
    else_branch = branch("else", [helper.make_node("Sub", ["h", "one"], ["e"])], "e", [1, 6])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("ReduceMean", ["h"], ["m"], keepdims=1),
        helper.make_node("GreaterOrEqual", ["m", "zero"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    consts = {"w": W, "two": np.float32(2.0), "one": np.float32(1.0), "zero": np.float32(0.0)}
    return make_model(nodes, {"x": [1, 6]}, ["y"], consts)


def feeds_for_both_branches() -> list[dict[str, np.ndarray]]:
    x = RNG.standard_normal((1, 6)).astype(np.float32)
    mean = float((x @ W).mean())
    return [{"x": x}, {"x": -x}] if mean != 0 else [{"x": x}]


def test_if_becomes_where_with_the_same_outputs_on_both_branches():
    before = gated_model()
    after = if_to_where.rewrite(before)
    onnx.checker.check_model(after)
    assert "If" not in ops(after) and ops(after)["Where"] == 1
    feeds = feeds_for_both_branches()
    taken = set()
    for feed in feeds:
        np.testing.assert_array_equal(run(after, feed)[0], run(before, feed)[0])
        taken.add(bool((feed["x"] @ W).mean() >= 0))
    assert taken == {True, False}


def test_if_whose_branches_disagree_in_shape_is_left_alone():
    model = gated_model()
    (if_node,) = [n for n in model.graph.node if n.op_type == "If"]
    else_out = next(a.g for a in if_node.attribute if a.name == "else_branch").output[0]
    else_out.type.tensor_type.shape.dim[0].dim_value = 2  # declared [2, 6]: a Where would broadcast
    assert if_to_where.rewrite(model) == model


def where_model(x_zero: bool = False, y_value: float | None = None, y_shape: list[int] | None = None):
    nodes = [helper.make_node("Greater", ["x", "zero"], ["c"]), helper.make_node("Mul", ["x", "w"], ["p"])]
    consts = {"zero": np.float32(0.0), "w": RNG.standard_normal((4, 5)).astype(np.float32)}
    then = "p"
    if x_zero:
        consts["x0"] = np.zeros((4, 5), np.float32)
        then = "x0"
    if y_value is None:
        nodes.append(helper.make_node("Sub", ["x", "w"], ["q"]))
    else:
        consts["q"] = np.full(y_shape or (4, 5), y_value, np.float32)
    nodes.append(helper.make_node("Where", ["c", then, "q"], ["y"]))
    return make_model(nodes, {"x": [4, 5]}, ["y"], consts)


def test_where_of_one_shape_becomes_arithmetic_bit_for_bit():
    for model, kept in (
        (where_model(), {"Mul": 3, "Sub": 2, "Add": 1}),
        (where_model(y_value=0.0), {"Mul": 2}),  # y = 0: x * Cast(c)
        (where_model(x_zero=True), {"Mul": 1, "Sub": 2}),  # x = 0: y * (1 - Cast(c))
    ):
        after = where_arithmetic.rewrite(model)
        onnx.checker.check_model(after)
        counts = ops(after)
        assert "Where" not in counts and counts["Cast"] == 1
        assert {k: v for k, v in counts.items() if k in ("Mul", "Sub", "Add")} == kept
        feed = {"x": RNG.standard_normal((4, 5)).astype(np.float32)}
        np.testing.assert_array_equal(run(after, feed)[0], run(model, feed)[0])


def test_broadcasting_or_non_finite_where_stays_a_select():
    for model in (where_model(y_value=3.0, y_shape=[1, 5]), where_model(y_value=-np.inf)):
        assert where_arithmetic.rewrite(model) == model


def test_gated_model_quantizes_to_int8_that_tflite_micro_runs(tmp_path: Path):
    """The int8 stage refused this before calibration ('TFLite Micro has no kernel for op SELECT');
    its TFLite Micro check runs the int8 model, so converting at all is the proof."""
    source = tmp_path / "gated.onnx"
    onnx.save(gated_model(), source)
    out = tmp_path / "out"
    convert_model(
        ConvertOptions(
            source=str(source), outdir=out, input_shapes=[[1, 6]], quantize=QuantOptions(mode="int8")
        )
    )
    tflite_ops = read_tflite(out / "model_int8.tflite").ops
    assert "SELECT" not in tflite_ops and "SELECT_V2" in tflite_ops

"""`edgeport convert` of a quantized (QDQ) ONNX model: the dequantize_qdq pass (quant/qdq.py) hands onnx2tf
the float model it dequantizes to, verification's reference is that float graph, and the .tflite
computes what onnxruntime computes on the QDQ model but for the rounding; --quantize int8 quantizes it
again. A float model is left alone; an activation QuantizeLinear that is no pair is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from edgeport.manifest import MANIFEST_NAME
from edgeport.pipeline.dequantize_qdq import NAME, dequantize_qdq
from edgeport.pipeline.onnx_passes import reference_model
from edgeport.quant.qdq import (
    QDQ_OPS,
    NotAPair,
    crosses_zero_end,
    float_graph,
    float_note,
    fold_weight_dequantizers,
    interval,
    pair_range,
    value_bounds,
)
from edgeport.runtimes.onnxrt import run_onnx
from edgeport.tensors import to_channels_last
from tests.onnx_graphs import make_model
from tests.quant.qdq_models import GeluNet, calibration_samples, qdq_model, quantized_activation

# onnxruntime quantize_static's model against its float graph on its calibration inputs (within every
# pair's range, so only the rounding differs): 0.4 % measured per tensor and per channel.
ROUNDING = 0.03


def _largest_error(ours: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """The largest relative error (max |difference| / max |reference|) over the samples."""
    return max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ours, reference, strict=True))


def _outputs(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    return [r["output"] for r in run_onnx(model.SerializeToString(), samples)]


def _expected_counts(model: onnx.ModelProto) -> tuple[int, int]:
    """(weight DequantizeLinears of initializers, activation QuantizeLinears) in a quantize_static model,
    where every weight and bias is one DequantizeLinear of an integer initializer."""
    inits = {t.name for t in model.graph.initializer}
    weights = sum(n.op_type == "DequantizeLinear" and n.input[0] in inits for n in model.graph.node)
    activations = sum(n.op_type == "QuantizeLinear" and n.input[0] not in inits for n in model.graph.node)
    return weights, activations


@pytest.fixture(scope="module", params=[False, True], ids=["per_tensor", "per_channel"])
def qdq_source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return qdq_model(tmp_path_factory.mktemp("qdq") / "q.onnx", per_channel=request.param)


def test_the_float_graph_has_no_qdq_and_computes_the_qdq_model_but_for_rounding(qdq_source: Path) -> None:
    model = onnx.load(str(qdq_source))
    graph, counts = float_graph(model)
    assert not {n.op_type for n in graph.graph.node} & set(QDQ_OPS)
    assert (counts.weights, counts.pairs) == _expected_counts(model)
    assert counts.pairs > counts.clips > 0
    onnx.checker.check_model(graph, full_check=True)
    samples = calibration_samples(8, 0)
    assert _largest_error(_outputs(graph, samples), _outputs(model, samples)) < ROUNDING


def test_convert_of_a_qdq_model_is_verified_against_its_float_graph_and_quantizes(
    qdq_source: Path, tmp_path: Path, run_cli
) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("convert", qdq_source, "-o", out, "--quantize", "int8")
    assert code == 0, stderr
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    model = onnx.load(str(qdq_source))
    weights, pairs = _expected_counts(model)
    entry = next(p for p in manifest["passes"] if p["name"] == NAME)
    assert entry["quantized"] and (entry["weights_dequantized"], entry["pairs_dropped"]) == (weights, pairs)
    assert 0 < entry["pairs_kept_as_clamps"] < pairs
    verification = manifest["verification"]
    assert verification["passed"] and verification["reference"] == f"onnx (source after {NAME})"
    text = stdout + stderr
    assert "quantized (QDQ) model converted as float" in text
    assert f"{weights} constant tensors (weights, biases) dequantized, {pairs} activation" in text
    assert "--quantize int8 quantizes it again" in text
    converted = onnx.load(str(out / "model.onnx"))
    assert not {n.op_type for n in converted.graph.node} & set(QDQ_OPS)
    # The float32 .tflite against onnxruntime on the QDQ model itself, on its calibration inputs.
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(out / "model_float32.tflite")).get_signature_runner()
    samples = calibration_samples(8, 0)
    ours = [runner(x=to_channels_last(s["x"]))["output"] for s in samples]
    assert _largest_error(ours, _outputs(model, samples)) < ROUNDING
    quantized = manifest["sections"]["quantization"]
    assert (out / "model_int8.tflite").exists() and quantized["mode"] == "int8"
    assert quantized["fidelity"]["outputs"][0]["sqnr_db"] > 20


def test_a_float_model_is_left_alone(tmp_path: Path) -> None:
    qdq_model(tmp_path / "q.onnx")  # writes the float model it quantizes beside it
    model = onnx.load(str(tmp_path / "float.onnx"))
    same, report = dequantize_qdq(model)
    assert same.SerializeToString() == model.SerializeToString()
    assert not report.quantized and report.headline() == "" and report.warnings_() == []
    assert report.weights_dequantized == report.pairs_dropped == 0
    reference, changed = reference_model(model, [])
    assert reference.SerializeToString() == model.SerializeToString() and changed == []


def test_the_reference_is_the_qdq_source_when_the_pass_is_skipped(qdq_source: Path) -> None:
    model = onnx.load(str(qdq_source))
    reference, changed = reference_model(model, [NAME])
    assert reference is model and changed == []
    reference, changed = reference_model(model, [])
    assert changed == [NAME] and not {n.op_type for n in reference.graph.node} & set(QDQ_OPS)


@pytest.mark.parametrize("opset", [10, 17])
def test_a_weight_dequantize_chain_becomes_its_value(opset: int) -> None:
    """A float W -> QuantizeLinear -> DequantizeLinear -> Transpose -> MatMul chain (a fake-quantized
    weight, written unfolded): one initializer of the rounded, transposed W; the int8 tensors, the scale
    and the chain's nodes go; onnxruntime computes the same outputs."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 6)).astype(np.float32)
    scale = np.float32(np.abs(weight).max() / 127)
    arrays = {"w": weight, "s": scale, "z": np.int8(0)}
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"]),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
        helper.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "wt"], ["y"]),
    ]
    model = make_model(nodes, {"x": [2, 6]}, ["y"], arrays, opset)
    folded, names = fold_weight_dequantizers(model)
    assert names == ["wt"] and [n.op_type for n in folded.graph.node] == ["MatMul"]
    assert [t.name for t in folded.graph.initializer] == ["wt"]
    rounded = (np.clip(np.round(weight / scale), -128, 127) * scale).astype(np.float32).T
    assert np.array_equal(onnx.numpy_helper.to_array(folded.graph.initializer[0]), rounded)
    x = {"x": rng.normal(size=(2, 6)).astype(np.float32)}
    (a,), (b,) = (run_onnx(m.SerializeToString(), [x])[0].values() for m in (folded, model))
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("per_channel", "why"),
    [(False, "not only read by DequantizeLinears of its scale"), (True, "per channel")],
    ids=["no_pair", "per_channel"],
)
def test_an_activation_quantize_that_is_no_pair_is_refused_in_one_line(
    per_channel: bool, why: str, tmp_path: Path, run_cli
) -> None:
    source = quantized_activation(tmp_path / "m.onnx", per_channel)
    out = tmp_path / "out"
    code, _, err = run_cli("convert", source, "-o", out, "-q")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    assert "quantized (QDQ)" in lines[0] and "QuantizeLinear node 'the_q' quantizes an activation" in lines[0]
    assert why in lines[0] and "Convert the float model it was quantized from" in lines[0]
    assert not out.exists()


def test_exact_gelu_in_a_qdq_model_converts_to_one_gelu(tmp_path: Path, run_cli) -> None:
    """1 + erf(x / sqrt 2) is never negative, so its pair's range starts at zero; no Relu was folded
    there, so no clamp goes in, and the erf GELU pattern is still whole for erf_gelu_to_gelu (with the
    clamp the model was refused: 'needs Erf')."""
    source = qdq_model(tmp_path / "q.onnx", per_channel=True, net=GeluNet)
    model = onnx.load(str(source))
    graph, counts = float_graph(model)
    assert counts.pairs > 0 and counts.clips == 0
    assert not {n.op_type for n in graph.graph.node} & {"Relu", "Clip", *QDQ_OPS}
    out = tmp_path / "out"
    code, _, stderr = run_cli("convert", source, "-o", out)
    assert code == 0, stderr
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["verification"]["passed"]
    tflite = next(a for a in manifest["artifacts"] if a["path"] == "model_float32.tflite")
    assert tflite["op_counts"] == {"FULLY_CONNECTED": 2, "GELU": 1}
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(out / "model_float32.tflite")).get_signature_runner()
    samples = calibration_samples(8, 0, GeluNet.SHAPE)
    ours = [runner(x=s["x"])["output"] for s in samples]
    # This net's 4 small outputs round more: 4.8 % measured, as for the float model it was quantized from.
    assert _largest_error(ours, _outputs(model, samples)) < 0.1


def test_interval_arithmetic() -> None:
    assert interval((0, 2), (1, 1), "Add") == (1, 3)
    assert interval((0, 2), (-1, 3), "Sub") == (-3, 3)
    assert interval((-1, 1), (-2, 0.5), "Mul") == (-2, 2)
    assert interval((0, 2), (2, 4), "Div") == (0, 1)
    assert interval((0, 2), (-1, 1), "Div") is None  # a divisor spanning zero
    assert interval((0, np.inf), (0, 1), "Mul") is None  # 0 x infinity


def test_value_bounds_follow_bounded_ops_arithmetic_and_pairs() -> None:
    """x -> Erf -> Q/DQ -> Add 1 -> Mul -2 (within [-4, 0]); Sigmoid / Div by a constant spanning zero;
    a Conv output and a graph input are unknown."""
    c = {"one": np.float32(1), "minus_two": np.float32(-2), "span": np.array([-1, 1], np.float32)}
    nodes = [
        helper.make_node("Erf", ["x"], ["e"]),
        helper.make_node("QuantizeLinear", ["e", "s"], ["eq"]),
        helper.make_node("DequantizeLinear", ["eq", "s"], ["ed"]),
        helper.make_node("Add", ["ed", "one"], ["a"]),
        helper.make_node("Mul", ["a", "minus_two"], ["m"]),
        helper.make_node("Sigmoid", ["x"], ["g"]),
        helper.make_node("Div", ["g", "span"], ["d"]),
        helper.make_node("Conv", ["x", "w"], ["conv"]),
    ]
    producers = {n.output[0]: n for n in nodes}
    bounds = {
        name: value_bounds(producers, name, c.get) for name in ["e", "ed", "a", "m", "g", "d", "conv", "x"]
    }
    assert bounds == {
        "e": (-1, 1),
        "ed": (-1, 1),
        "a": (0, 2),
        "m": (-4, 0),
        "g": (0, 1),
        "d": None,
        "conv": None,
        "x": None,
    }


def test_value_bounds_through_ops_that_move_values_and_known_tensors() -> None:
    """Reshape, Concat, Pad (its value, zero by default), AveragePool (its padding's zeros) keep their
    inputs' bounds (hulls); a tensor in `known` (a pair's output kept as its clamp) has the bounds given."""
    c = {"shape": np.array([1, -1]), "five": np.float32(5)}
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["g"]),
        helper.make_node("Reshape", ["g", "shape"], ["r"]),
        helper.make_node("Concat", ["r", "k"], ["cat"], axis=1),
        helper.make_node("Pad", ["g", "pads"], ["zero_pad"]),
        helper.make_node("Pad", ["g", "pads", "five"], ["five_pad"]),
        helper.make_node("Neg", ["g"], ["neg"]),
        helper.make_node("AveragePool", ["k"], ["pool"], kernel_shape=[2, 2]),
        helper.make_node("Concat", ["r", "neg"], ["unknown"], axis=1),
    ]
    producers = {n.output[0]: n for n in nodes}
    known = {"k": (0.5, 3.0)}
    names = ["r", "cat", "zero_pad", "five_pad", "pool", "unknown"]
    assert {n: value_bounds(producers, n, c.get, known) for n in names} == {
        "r": (0, 1),
        "cat": (0, 3),
        "zero_pad": (0, 1),
        "five_pad": (0, 5),
        "pool": (0, 3),
        "unknown": None,  # Neg is not analysed
    }


def test_value_bounds_looks_at_a_tensor_read_twice_once() -> None:
    """a_i = a_(i-1) + a_(i-1), 20 times from a Sigmoid: (0, 2^20), each tensor looked at once (without
    remembering, 2^20 times)."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["a0"])]
    nodes += [helper.make_node("Add", [f"a{i - 1}", f"a{i - 1}"], [f"a{i}"]) for i in range(1, 21)]
    looked: list[str] = []

    def constant(name: str) -> None:
        looked.append(name)

    assert value_bounds({n.output[0]: n for n in nodes}, "a20", constant) == (0, 2**20)
    assert len(looked) == len(set(looked)) == 21


def test_a_pair_after_a_clamped_pair_through_a_maxpool_is_no_clamp() -> None:
    """x -> Conv -> pair (zero point 0: the Relu the quantizer folded, a clamp) -> MaxPool -> pair (zero
    point 0): the MaxPool of the clamped tensor cannot go below zero, so the second pair goes."""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(4, 3, 3, 3)), "s": np.float32(0.02), "z": np.uint8(0)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"]),
        helper.make_node("MaxPool", ["cd"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"]),
        helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["y"]),
    ]
    graph, counts = float_graph(make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], arrays))
    assert (counts.pairs, counts.clips) == (2, 1)
    assert [n.op_type for n in graph.graph.node] == ["Conv", "Relu", "Clip", "MaxPool", "Identity"]


def test_only_a_tensor_that_can_cross_the_zero_end_is_clamped() -> None:
    assert crosses_zero_end([0, 1.9], None)  # unknown producer: a folded Relu
    assert crosses_zero_end([0, 1.9], (-1, 1))
    assert not crosses_zero_end([0, 1.9], (0, 2))  # 1 + erf: no Relu folded, its top is calibration's
    assert not crosses_zero_end([-3, 0], (-4, 0))
    assert crosses_zero_end([-3, 0], (-1, 0.5))


def test_a_weight_read_inside_an_if_branch_is_folded() -> None:
    """x -> If (constant condition; both branches MatMul(x, wd)), wd = DequantizeLinear(int8): the If
    reads graph input x in its branches, so it is no constant (it was taken for one, and wd stayed a
    DequantizeLinear); wd becomes the initializer of its value, onnxruntime computes the same."""
    rng = np.random.default_rng(0)
    branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wd"], ["o"])],
        "branch",
        [],
        [helper.make_tensor_value_info("o", onnx.TensorProto.FLOAT, None)],
    )
    arrays = {
        "wq": rng.integers(-127, 128, (4, 3)).astype(np.int8),
        "s": np.float32(0.05),
        "cond": np.array(True),
    }
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "s"], ["wd"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
    ]
    model = make_model(nodes, {"x": [2, 4]}, ["y"], arrays)
    folded, names = fold_weight_dequantizers(model)
    assert names == ["wd"] and [n.op_type for n in folded.graph.node] == ["If"]
    x = {"x": rng.normal(size=(2, 4)).astype(np.float32)}
    (a,), (b,) = (run_onnx(m.SerializeToString(), [x])[0].values() for m in (folded, model))
    assert np.array_equal(a, b)


def test_a_quantize_s_integer_type() -> None:
    """Its zero point's type, else output_dtype, 0 (UNDEFINED) or none read as uint8; not an 8- or
    16-bit integer refused."""
    scale = np.float32(0.5)

    def quantize(**attrs: int) -> onnx.NodeProto:
        return helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q", **attrs)

    assert pair_range(quantize(), scale, None) == ([0.0, 127.5], True)
    assert pair_range(quantize(output_dtype=0), scale, None) == ([0.0, 127.5], True)
    assert pair_range(quantize(output_dtype=onnx.TensorProto.UINT16), scale, None) == ([0.0, 32767.5], True)
    assert pair_range(quantize(), scale, np.int8(0)) == ([-64.0, 63.5], False)
    with pytest.raises(NotAPair, match="to float8e4m3fn, not an 8- or 16-bit integer"):
        pair_range(quantize(output_dtype=onnx.TensorProto.FLOAT8E4M3FN), scale, None)


def test_the_float_note() -> None:
    how, weights = " and is converted as float", "3 constant tensors (weights, biases) dequantized"
    assert float_note(how, "", 0, 0) == []
    assert float_note(how, weights, 0, 0) == [
        f"the ONNX model is quantized (QDQ){how}: {weights}; --quantize int8 quantizes it again"
    ]
    (line,) = float_note(how, weights, 1, 1)
    assert line.endswith(
        f"{weights}, 1 activation QuantizeLinear -> DequantizeLinear pair dropped (1 kept as the clamp to "
        "their range, a Relu or Clip the quantizer folded in); --quantize int8 quantizes it again"
    )
    assert "2 activation QuantizeLinear -> DequantizeLinear pairs dropped;" in float_note(how, "", 2, 0)[0]

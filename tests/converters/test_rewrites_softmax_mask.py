"""softmax_mask_to_where: -inf attention masks become a Where with a finite fill, same probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from edgeport.converters.rewrites import softmax_mask
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import read_tflite
from tests.onnx_graphs import make_model, ops, run

L, D = 11, 16


def _causal(value: float = -np.inf) -> np.ndarray:
    return np.where(np.triu(np.ones((L, L), bool), 1), value, 0.0).astype(np.float32)


def scores_model(
    mask: np.ndarray, mask_first: bool = False, opset: int = 17, axis: int = -1
) -> onnx.ModelProto:
    """scores [2, L, L] (an input, so any values can be fed) + constant mask -> Softmax."""
    add = ["mask", "s"] if mask_first else ["s", "mask"]
    nodes = [
        helper.make_node("Add", add, ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=axis),
    ]
    return make_model(nodes, {"s": [2, L, L]}, ["p"], {"mask": mask}, opset=opset)


def attention_model(seed: int) -> onnx.ModelProto:
    """One head of causal self-attention on x [L, D], weights drawn from `seed`."""
    rng = np.random.default_rng(seed)
    w = {n: (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32) for n in ("wq", "wk", "wv")}
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[1, 0]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Add", ["s", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    return make_model(nodes, {"x": [L, D]}, ["y"], {**w, "mask": _causal()})


def _scores(seed: int, scale: float) -> dict[str, np.ndarray]:
    return {"s": (np.random.default_rng(seed).standard_normal((2, L, L)) * scale).astype(np.float32)}


def assert_same_probabilities(before: onnx.ModelProto, after: onnx.ModelProto, feeds: dict) -> None:
    """Kept positions bit for bit; masked ones at most exp(-MARGIN) instead of 0."""
    want, got = run(before, feeds)[0], run(after, feeds)[0]
    kept = want > 0
    np.testing.assert_array_equal(got[kept], want[kept])
    assert got[~kept].max() <= 1.001 * np.exp(-softmax_mask.MARGIN)  # float32 exp rounding


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("value", [-np.inf, np.finfo(np.float32).min, -1e30])
def test_kept_probabilities_are_bit_exact(opset: int, value: float):
    before = scores_model(_causal(value), opset=opset)
    after = softmax_mask.rewrite(before)
    assert ops(after)["Where"] == 1 and "Add" not in ops(after)
    assert all(np.isfinite(onnx.numpy_helper.to_array(t)).all() for t in after.graph.initializer)
    for seed, scale in ((0, 1.0), (1, 30.0), (2, 1e4)):  # scores far apart: the fill follows the row
        assert_same_probabilities(before, after, _scores(seed, scale))


def test_finite_part_of_the_mask_is_kept_and_operand_order_does_not_matter():
    bias = np.random.default_rng(3).standard_normal((L, L)).astype(np.float32)
    mask = np.where(np.isfinite(_causal()), bias, -np.inf).astype(np.float32)
    before = scores_model(mask, mask_first=True)
    after = softmax_mask.rewrite(before)
    assert ops(after) == {"Add": 1, "ReduceMin": 1, "Sub": 1, "Where": 1, "Softmax": 1}
    assert_same_probabilities(before, after, _scores(4, 3.0))


@pytest.mark.parametrize("bias", [False, True])
def test_a_mask_fused_into_gemm_is_split_out(bias: bool):
    """onnxsim fuses q @ kT + mask into Gemm(q, k, mask, transB=1)."""
    rng = np.random.default_rng(7)
    mask = np.where(np.isfinite(_causal()), rng.standard_normal((L, L)) if bias else 0.0, -np.inf)
    nodes = [
        helper.make_node("Gemm", ["q", "k", "mask"], ["s"], transB=1, alpha=0.25, beta=2.0),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
    ]
    before = make_model(nodes, {"q": [L, D], "k": [L, D]}, ["p"], {"mask": mask.astype(np.float32)})
    after = softmax_mask.rewrite(before)
    assert ops(after) == {"Gemm": 1, "ReduceMin": 1, "Sub": 1, "Where": 1, "Softmax": 1}
    feeds = {n: rng.standard_normal((L, D)).astype(np.float32) * 3 for n in ("q", "k")}
    assert_same_probabilities(before, after, feeds)


@pytest.mark.parametrize("masked_first", [True, False])
@pytest.mark.parametrize("constant_condition", [True, False])
def test_a_selected_mask_gets_the_finite_fill(masked_first: bool, constant_condition: bool):
    """masked_fill(mask, -inf): Where(mask, -inf, scores), or with the operands the other way round."""
    mask = np.triu(np.ones((L, L), bool), 1)
    cond = mask if masked_first else ~mask
    operands = ["c", "minus_inf", "s"] if masked_first else ["c", "s", "minus_inf"]
    nodes = [
        helper.make_node("Where", operands, ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
    ]
    consts = {"minus_inf": np.float32(-np.inf)}
    inputs = {"s": [2, L, L]}
    if constant_condition:
        consts["c"] = cond
    else:  # a condition computed in the graph
        nodes.insert(0, helper.make_node("Greater", ["m", "zero"], ["c"]))
        consts["zero"] = np.float32(0.0)
        inputs["m"] = [L, L]
    before = make_model(nodes, inputs, ["p"], consts)
    after = softmax_mask.rewrite(before)
    assert ops(after)["Where"] == 1 and "ReduceMin" in ops(after)
    assert all(np.isfinite(onnx.numpy_helper.to_array(t)).all() for t in after.graph.initializer)
    feeds = _scores(8, 5.0) | ({} if constant_condition else {"m": cond.astype(np.float32)})
    assert_same_probabilities(before, after, feeds)


def test_softmax_over_another_axis_fills_along_that_axis():
    before = scores_model(_causal().T[None].copy(), axis=1)  # each column keeps its diagonal
    after = softmax_mask.rewrite(before)
    assert "Where" in ops(after)
    assert_same_probabilities(before, after, _scores(5, 10.0))


def test_a_fully_masked_row_becomes_uniform_instead_of_nan():
    mask = _causal()
    mask[3, :] = -np.inf
    after = softmax_mask.rewrite(scores_model(mask))
    probs = run(after, _scores(6, 1.0))[0]
    np.testing.assert_allclose(probs[:, 3], 1.0 / L, rtol=1e-6)


def test_other_adds_are_left_alone():
    finite = scores_model(np.where(np.isfinite(_causal()), 0.0, -1e4).astype(np.float32))
    assert softmax_mask.rewrite(finite) == finite  # finite masks quantize (badly, but without refusal)
    nodes = [helper.make_node("Add", ["s", "mask"], ["y"])]  # no Softmax behind it
    no_softmax = make_model(nodes, {"s": [2, L, L]}, ["y"], {"mask": _causal()})
    assert softmax_mask.rewrite(no_softmax) == no_softmax


# int8 SQNR against the float model of attention_model(seed), seeds 0-4: 27.5 to 28.3 dB.
MIN_INT8_SQNR_DB = 20.0


def test_causal_attention_quantizes_to_int8_that_tflite_micro_runs_bit_exactly(tmp_path: Path):
    """Refused before calibration without the rewrite: 'int8 tensor ... gets a quantization step of
    1.3e+36: an infinite or float32-max constant reaches it' (zoo mha_causal_mask, sdpa_causal)."""
    source = tmp_path / "attention.onnx"
    onnx.save(attention_model(0), source)
    out = tmp_path / "out"
    convert_model(ConvertOptions(source=str(source), outdir=out, quantize=QuantOptions(mode="int8")))
    section = json.loads((out / "edgeport.json").read_text())["sections"]["quantization"]
    assert section["fidelity"]["outputs"][0]["sqnr_db"] > MIN_INT8_SQNR_DB
    assert section["tflm_vs_litert"]["max_diff_steps"] == 0  # against TFLite's reference kernels
    assert "SELECT_V2" in read_tflite(out / "model_int8.tflite").ops

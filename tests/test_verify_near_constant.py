"""A probability map near 0 everywhere (a text detector on noise) is judged against its natural scale:
kernels' absolute rounding there is not divergence, while a real error still fails."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.agreement import compare
from edgeport.converters.verify import UNIT_BOUNDED_SCALE_FLOOR, scale_floors
from edgeport.pipeline.onnx_passes import _fold_batch_norms
from edgeport.pipeline.stages import FLOAT32_TOLERANCE
from edgeport.runtimes.onnxrt import run_onnx
from tests.onnx_graphs import make_model

CHANNELS = 8


def _detector(logit_bias: float, seed: int = 0) -> onnx.ModelProto:
    """Conv -> BatchNorm -> Sigmoid whose BN shift pushes every logit far below 0 (no text found)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["n"]),
        helper.make_node("Sigmoid", ["n"], ["y"]),
    ]
    inits = {
        "w": rng.normal(0.0, 0.3, (CHANNELS, 3, 3, 3)),
        "b": np.zeros(CHANNELS),
        "g": rng.uniform(0.5, 2.0, CHANNELS),
        "beta": np.full(CHANNELS, logit_bias),
        "mean": rng.normal(0.0, 0.1, CHANNELS),
        "var": rng.uniform(0.5, 2.0, CHANNELS),
    }
    return make_model(nodes, {"x": [1, 3, 32, 32]}, ["y"], inits)


def _inputs(count: int = 3, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(count)]


def _near_zero_map(top: float, seed: int = 2) -> np.ndarray:
    """A sigmoid output with nothing detected: values between 0 and `top`."""
    return np.random.default_rng(seed).uniform(0.0, top, (1, 1, 16, 16)).astype(np.float32)


def test_rounding_on_a_near_zero_probability_map_passes_with_the_floor_only() -> None:
    ref = _near_zero_map(1e-5)
    got = ref.copy()
    got[0, 0, 3, 4] += np.float32(1.8e-7)  # what ORT's Sigmoid differs by near 0 after a BN fold
    (bare,) = compare("onnx", [{"y": ref}], [{"y": got}])
    (floored,) = compare("onnx", [{"y": ref}], [{"y": got}], {"y": UNIT_BOUNDED_SCALE_FLOOR})
    assert bare.max_rel_error > 10 * FLOAT32_TOLERANCE  # max|ref| = 1e-5 turns 1.8e-7 into 1.8e-2
    assert floored.max_rel_error < FLOAT32_TOLERANCE / 4
    assert floored.max_abs_error == bare.max_abs_error  # the floor changes the scale, not the error


def test_real_errors_still_fail_with_the_floor() -> None:
    floors = {"y": UNIT_BOUNDED_SCALE_FLOOR}
    # 12 % of the map's maximum (plain onnx2tf's error on PP-OCRv4, whose map reaches 1e-3 on the
    # verification inputs), and a map with text.
    ref = _near_zero_map(1e-3)
    wrong = ref * np.float32(1.12) + np.float32(0.12 * ref.max())
    (near_zero,) = compare("onnx", [{"y": ref}], [{"y": wrong}], floors)
    text = np.random.default_rng(3).uniform(0.0, 0.9, ref.shape).astype(np.float32)
    (with_text,) = compare("onnx", [{"y": text}], [{"y": text + np.float32(1e-3)}], floors)
    assert near_zero.max_rel_error > 10 * FLOAT32_TOLERANCE
    assert with_text.max_rel_error > 10 * FLOAT32_TOLERANCE


def test_the_floor_never_lowers_the_scale_of_a_large_output() -> None:
    ref = np.array([0.5, 0.9], np.float32)
    got = ref + np.float32(1e-3)
    (bare,) = compare("onnx", [{"y": ref}], [{"y": got}])
    (floored,) = compare("onnx", [{"y": ref}], [{"y": got}], {"y": UNIT_BOUNDED_SCALE_FLOOR})
    assert floored.max_rel_error == bare.max_rel_error


def test_scale_floors_name_only_outputs_a_bounded_op_produces() -> None:
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["prob"]),
        helper.make_node("Softmax", ["x"], ["classes"], axis=-1),
        helper.make_node("Tanh", ["x"], ["t"]),
        helper.make_node("Relu", ["t"], ["unbounded"]),
        helper.make_node("Sigmoid", ["x"], ["inner"]),
        helper.make_node("Add", ["inner", "x"], ["sum"]),
    ]
    model = make_model(nodes, {"x": [1, 4]}, ["prob", "classes", "unbounded", "sum"])
    assert scale_floors(model) == {"prob": UNIT_BOUNDED_SCALE_FLOOR, "classes": UNIT_BOUNDED_SCALE_FLOOR}


def test_folded_batch_norm_before_a_saturated_sigmoid_verifies() -> None:
    """The PP-OCRv4 detector's case in small: the fold is exact up to float rounding of the logits."""
    source = _detector(logit_bias=-20.0)
    folded, _ = _fold_batch_norms(source)
    assert "BatchNormalization" not in {n.op_type for n in folded.graph.node}
    samples = _inputs()
    reference = run_onnx(source.SerializeToString(), samples)
    (error,) = compare("onnx", reference, run_onnx(folded.SerializeToString(), samples), scale_floors(folded))
    assert max(float(np.abs(r["y"]).max()) for r in reference) < 1e-3  # nothing detected: near 0
    assert error.problem is None and error.max_rel_error < FLOAT32_TOLERANCE


def test_a_wrong_fold_before_a_saturated_sigmoid_still_fails() -> None:
    source = _detector(logit_bias=-20.0)
    folded, _ = _fold_batch_norms(source)
    wrong = onnx.ModelProto()
    wrong.CopyFrom(folded)
    bias = next(t for t in wrong.graph.initializer if t.name == wrong.graph.node[0].input[2])
    value = onnx.numpy_helper.to_array(bias).copy()
    value += np.float32(0.5)  # every logit off by 0.5: the probabilities off by about 65 %
    bias.CopyFrom(onnx.numpy_helper.from_array(value, bias.name))
    samples = _inputs()
    reference = run_onnx(source.SerializeToString(), samples)
    (error,) = compare("onnx", reference, run_onnx(wrong.SerializeToString(), samples), scale_floors(wrong))
    assert error.max_rel_error > 10 * FLOAT32_TOLERANCE


def test_the_error_says_when_the_floor_was_its_scale() -> None:
    floors = {"y": UNIT_BOUNDED_SCALE_FLOOR}
    (near_zero,) = compare("onnx", [{"y": _near_zero_map(1e-5)}], [{"y": _near_zero_map(1e-5)}], floors)
    large = np.array([0.5, 0.9], np.float32)
    (above,) = compare("onnx", [{"y": large}], [{"y": large}], floors)
    assert near_zero.scale_floor == UNIT_BOUNDED_SCALE_FLOOR and above.scale_floor is None


def test_the_zoo_benches_judge_a_near_zero_map_as_verification_does() -> None:
    from bench.convert_zoo import rel_error

    ref = _near_zero_map(1e-6)
    got = ref + np.float32(1.25e-7)  # plain onnx2tf's difference on PP-OCRv4 det over uniform noise
    assert rel_error(got, ref) > 0.1
    assert rel_error(got, ref, UNIT_BOUNDED_SCALE_FLOOR) < FLOAT32_TOLERANCE / 4

"""A Sigmoid / Tanh model output reaches its whole int8 output range, whatever the calibration saw."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeport.quant import int8 as Q
from edgeport.quant.bounded_outputs import OUTPUT_LOGITS, widen_bounded_outputs
from edgeport.runtimes.litert import LiteRTRunner
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import builtin_code, parse_tflite, schema

X = TensorSpec("x", [1, 4])
Y = TensorSpec("y", [1, 2])
# logit = x0 - x1 + BIAS. Calibration inputs have x0 = x1 over [0, 19.5], so the logits stay near
# -10 (a detector's map on noise) while the inputs' own range covers the test input, whose logit is +3.
BIAS, TEST_LOGIT = -10.0, 3.0


def keras_model(activation: str, internal: bool = False):
    import tf_keras as K

    x = K.Input((4,), name="x")
    dense = K.layers.Dense(2, kernel_initializer="zeros", bias_initializer=K.initializers.Constant(BIAS))
    # The kernel is 0 except the first two inputs': logit = x0 - x1 + BIAS.
    h = K.layers.Activation(activation)(dense(x))
    if internal:
        h = K.layers.Dense(2)(h)
    model = K.Model(x, K.layers.Lambda(lambda t: t, name="y")(h))
    weights = dense.get_weights()
    weights[0][0, :], weights[0][1, :] = 1.0, -1.0
    dense.set_weights(weights)
    return model


def _samples(n: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(n):
        x = 0.1 * rng.standard_normal((1, 4))
        x[0, :2] = rng.uniform(0, 1.5 * (TEST_LOGIT - BIAS))
        samples.append({"x": x.astype(np.float32)})
    return samples


def _calibrated(model) -> bytes:
    return Q.calibrate_only(Q.int8_converter(model, [X], _samples(), "int8"))


def _logistic_input_range(calibrated: bytes, op: str) -> tuple[float, float]:
    m = parse_tflite(calibrated).raw
    graph = m.subgraphs[0]
    wanted = {"sigmoid": schema.BuiltinOperator.LOGISTIC, "tanh": schema.BuiltinOperator.TANH}[op]
    for o in graph.operators:
        if builtin_code(m.operatorCodes[o.opcodeIndex]) == wanted:
            q = graph.tensors[int(o.inputs[0])].quantization
            return float(q.min[0]), float(q.max[0])
    raise AssertionError(f"no {op} in the model")


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_an_output_activations_input_range_is_widened_to_its_output_range(activation: str):
    calibrated = _calibrated(keras_model(activation))
    low, high = _logistic_input_range(calibrated, activation)
    assert high < 1e-6  # what the calibration saw: logits near -10 only (and 0, always in a range)
    logit = OUTPUT_LOGITS["LOGISTIC" if activation == "sigmoid" else "TANH"]
    widened = _logistic_input_range(widen_bounded_outputs(calibrated), activation)
    assert widened[0] == pytest.approx(low) and widened[1] == pytest.approx(logit)


def test_an_internal_activation_is_left_as_calibrated():
    calibrated = _calibrated(keras_model("sigmoid", internal=True))
    assert widen_bounded_outputs(calibrated) == calibrated


def test_the_int8_model_outputs_a_probability_beyond_what_calibration_saw():
    """Without the widening the int8 output is capped at sigmoid(0) = 0.5 (the calibrated input range
    ends at 0): PP-OCRv4 detection's probability map."""
    model = keras_model("sigmoid")
    quantized = Q.keras_to_quantized(model, "int8", [X], _samples())
    runner = LiteRTRunner(quantized, [X], [Y])
    x = np.zeros((1, 4), np.float32)
    x[0, 0] = TEST_LOGIT - BIAS
    got = runner.run({"x": x})["y"]
    step = 1.0 / 256
    assert abs(float(got[0, 0]) - 1.0 / (1.0 + math.exp(-TEST_LOGIT))) < 3 * step

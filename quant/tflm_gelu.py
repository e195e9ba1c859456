"""GELU in an int8 model for TFLite Micro: the tanh form, in ops TFLite Micro has int8 kernels for.

TFLite Micro has no GELU kernel (int8 or float), so an int8 model with GELU could not run on a
microcontroller. The float model keeps the exact (erf) GELU (converters/rewrites/gelu.py); the int8
model gets GELU's tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), whose largest
difference from the erf GELU is `FLOAT_ERROR` (a small fraction of an int8 step on any range an
activation has), written as

    GELU(x) ~= relu(x) - |x| * sigmoid(-|x| (K1 + K2 x^2))      (K1 = 2 sqrt(2/pi), K2 = 0.044715 K1)

i.e. ABS, MUL, MUL, ADD, MUL, LOGISTIC, MUL, RELU, SUB. That spelling, rather than x * sigmoid(...),
keeps int8 rounding small: the subtracted term lies in [0, 0.17], so its int8 step is ~1000 times finer
than the output's, and LOGISTIC's fixed output step (1/256) multiplies |x| only where sigmoid(-|u|) is
not already 0. It is applied to the calibrate-only model (each tensor's min/max recorded), before the
quantizer reads it: the new tensors get ranges derived from the GELU input's recorded range (interval
arithmetic, the sigmoid input bounded where its int8 output stops changing), not from samples. Each new
tensor's name carries MARKER, so the finished int8 model says which GELUs it approximates; a GELU that
was the tanh form already (GELU's `approximate` option) is written out the same way under TANH_MARKER,
and is no approximation.
"""

from __future__ import annotations

import math

import numpy as np

from edgeport.quant.calibrated import (
    add_activation,
    add_scalar,
    drop_unused_codes,
    new_operator,
    recorded_range,
)
from edgeport.quant.tflm_saturation import ACTIVATION_BOUND
from edgeport.tflite_file import edit_tflite, op_name, parse_tflite, schema, serialize_tflite, tensor_name

MARKER = "/tflm_gelu/"
TANH_MARKER = "/tflm_tanh_gelu/"
K1 = 2.0 * math.sqrt(2.0 / math.pi)
K2 = 0.044715 * K1
# Below -ACTIVATION_BOUND the int8 LOGISTIC output is its lowest step already: sigmoid(-8) = 3.4e-4 < 1/512
# (tflm_saturation bounds gate inputs there for the same reason).
SIGMOID_INPUT_BOUND = ACTIVATION_BOUND


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def exact_gelu(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0)))


def tanh_gelu(x: np.ndarray) -> np.ndarray:
    """The approximation as written into the model (relu(x) - |x| sigmoid(-|x| (K1 + K2 x^2)))."""
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    return np.maximum(x, 0.0) - a / (1.0 + np.exp(a * (K1 + K2 * a * a)))


def _grid(low: float, high: float) -> np.ndarray:
    return np.linspace(low, high, 20001)


# The largest |tanh_gelu - exact_gelu| over all reals (it vanishes beyond |x| = 10).
FLOAT_ERROR = float(np.abs(tanh_gelu(_grid(-10, 10)) - exact_gelu(_grid(-10, 10))).max())


def stage_ranges(low: float, high: float) -> dict[str, tuple[float, float]]:
    """The range of each intermediate tensor for a GELU input in [low, high] (interval arithmetic;
    the sigmoid input bounded at -SIGMOID_INPUT_BOUND)."""
    big = max(abs(low), abs(high))
    small = 0.0 if low <= 0.0 <= high else min(abs(low), abs(high))
    a = np.linspace(small, big, 4001)
    term = a / (1.0 + np.exp(a * (K1 + K2 * a * a)))
    u_low = -(K1 * big + K2 * big**3)
    return {
        "abs": (small, big),
        "square": (small * small, big * big),
        "scaled": (-K2 * big * big, -K2 * small * small),
        "rate": (-K1 - K2 * big * big, -K1 - K2 * small * small),
        "logit": (max(u_low, -SIGMOID_INPUT_BOUND), -(K1 * small + K2 * small**3)),
        "sigmoid": (0.0, 0.5),
        "term": (float(term.min()), float(term.max())),
        "relu": (max(low, 0.0), max(high, 0.0)),
    }


def replace_gelu(calibrated: bytes) -> bytes:
    """`calibrated` with every GELU of its main subgraph whose input has a recorded range written as
    the ops above (the same bytes when there is none)."""
    if "GELU" not in parse_tflite(calibrated).ops:
        return calibrated
    model = edit_tflite(calibrated)
    graph = model.subgraphs[0]
    ops, options = schema.BuiltinOperator, schema.BuiltinOptions
    operators = []
    for op in graph.operators:
        source = int(op.inputs[0]) if len(op.inputs) else -1
        recorded = recorded_range(graph.tensors[source]) if source >= 0 else None
        if op_name(model.operatorCodes[op.opcodeIndex]) != "GELU" or recorded is None:
            operators.append(op)
            continue
        x, y = source, int(op.outputs[0])
        was_tanh = op.builtinOptions is not None and bool(getattr(op.builtinOptions, "approximate", False))
        base = tensor_name(graph.tensors[y]) + (TANH_MARKER if was_tanh else MARKER)
        t = {
            what: add_activation(model, graph, base + what, x, r)
            for what, r in stage_ranges(*recorded).items()
        }
        minus_k2 = add_scalar(model, graph, base + "k2", -K2, (-K2, -K2))
        minus_k1 = add_scalar(model, graph, base + "k1", -K1, (-K1, -K1))
        mul = (options.MulOptions, schema.MulOptionsT())
        operators += [
            new_operator(model, ops.ABS, [x], t["abs"], (options.AbsOptions, schema.AbsOptionsT())),
            new_operator(model, ops.MUL, [t["abs"], t["abs"]], t["square"], mul),
            new_operator(model, ops.MUL, [t["square"], minus_k2], t["scaled"], mul),
            new_operator(
                model, ops.ADD, [t["scaled"], minus_k1], t["rate"], (options.AddOptions, schema.AddOptionsT())
            ),
            new_operator(model, ops.MUL, [t["abs"], t["rate"]], t["logit"], mul),
            new_operator(model, ops.LOGISTIC, [t["logit"]], t["sigmoid"]),
            new_operator(model, ops.MUL, [t["abs"], t["sigmoid"]], t["term"], mul),
            new_operator(model, ops.RELU, [x], t["relu"]),
            new_operator(
                model, ops.SUB, [t["relu"], t["term"]], y, (options.SubOptions, schema.SubOptionsT())
            ),
        ]
    graph.operators = operators
    drop_unused_codes(model)  # GELU's, when every GELU was written out
    return serialize_tflite(model)


def approximated_gelus(model: bytes) -> list[str]:
    """The output tensors of the erf GELUs `replace_gelu` wrote out in `model` (the approximated ones),
    in graph order."""
    found: list[str] = []
    for tensor in parse_tflite(model).raw.subgraphs[0].tensors:
        name = tensor_name(tensor)
        if MARKER in name and (gelu := name.split(MARKER)[0]) not in found:
            found.append(gelu)
    return found

"""A model output from a Sigmoid or Tanh gets an input range that reaches its whole output range.

The int8 output of LOGISTIC is fixed at [0, 1) (step 1/256) and that of TANH at [-1, 1) (1/128),
whatever the data, but the range of their input is calibrated like any other. When the calibration
samples are not like the real inputs (data-free calibration on noise, say: a text detector whose
probability map is about 1e-6 everywhere on noise), that input range can stop short of the values
real inputs give, and every output beyond it saturates: PP-OCRv4 detection's map came out capped at
exactly sigmoid(0) = 0.5. For an output that is the model's answer the whole output range is by
definition reachable, so the input range of such an activation is widened to include the logits
of the lowest and highest output steps (+-ln(511) for LOGISTIC, +-atanh(1 - 1/256) for TANH);
ranges that already include them are left as calibrated.
"""

from __future__ import annotations

import math

from edgeport.quant.calibrated import recorded_range, set_recorded_range
from edgeport.tflite_file import builtin_code, edit_tflite, schema, serialize_tflite

# Input values whose activations land half a step inside the ends of the fixed int8 output range.
OUTPUT_LOGITS = {
    "LOGISTIC": math.log(511.0),  # sigmoid(x) = 1 - 1/512
    "TANH": math.atanh(1.0 - 1.0 / 256.0),  # tanh(x) = 1 - 1/256
}


def widen_bounded_outputs(calibrated: bytes) -> bytes:
    """`calibrated` (a calibrate-only model with recorded min/max) with the recorded input range of
    each LOGISTIC / TANH whose output is a model output widened to OUTPUT_LOGITS; the same bytes when
    nothing changes."""
    model = edit_tflite(calibrated)
    graph = model.subgraphs[0]
    codes = {schema.BuiltinOperator.LOGISTIC: "LOGISTIC", schema.BuiltinOperator.TANH: "TANH"}
    outputs = {int(i) for i in graph.outputs}
    changed = False
    for op in graph.operators:
        kind = codes.get(builtin_code(model.operatorCodes[op.opcodeIndex]))
        if kind is None or not len(op.outputs) or int(op.outputs[0]) not in outputs:
            continue
        changed |= _widen(graph.tensors[int(op.inputs[0])], OUTPUT_LOGITS[kind])
    return serialize_tflite(model) if changed else calibrated


def _widen(tensor: schema.TensorT, logit: float) -> bool:
    """Widen the tensor's recorded (min, max) to include [-logit, logit]; whether it changed."""
    recorded = recorded_range(tensor)
    if recorded is None:
        return False
    low, high = recorded
    if low <= -logit and high >= logit:
        return False
    set_recorded_range(tensor, (min(low, -logit), max(high, logit)))
    return True

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
from typing import Any

import numpy as np

from edgeport.tflite_file import builtin_code

# Input values whose activations land half a step inside the ends of the fixed int8 output range.
OUTPUT_LOGITS = {
    "LOGISTIC": math.log(511.0),  # sigmoid(x) = 1 - 1/512
    "TANH": math.atanh(1.0 - 1.0 / 256.0),  # tanh(x) = 1 - 1/256
}


def widen_bounded_outputs(calibrated: bytes) -> bytes:
    """`calibrated` (a calibrate-only model with recorded min/max) with the recorded input range of
    each LOGISTIC / TANH whose output is a model output widened to OUTPUT_LOGITS; the same bytes when
    nothing changes."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    graph = model.subgraphs[0]
    codes = {schema.BuiltinOperator.LOGISTIC: "LOGISTIC", schema.BuiltinOperator.TANH: "TANH"}
    outputs = {int(i) for i in graph.outputs}
    changed = False
    for op in graph.operators:
        kind = codes.get(builtin_code(model.operatorCodes[op.opcodeIndex]))
        if kind is None or not len(op.outputs) or int(op.outputs[0]) not in outputs:
            continue
        changed |= _widen(graph.tensors[int(op.inputs[0])].quantization, OUTPUT_LOGITS[kind])
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if changed else calibrated


def _widen(q: Any, logit: float) -> bool:
    """Widen a recorded (min, max) to include [-logit, logit]; whether it changed."""
    if q is None or q.min is None or q.max is None or len(q.min) != 1:
        return False
    low, high = float(q.min[0]), float(q.max[0])
    if low <= -logit and high >= logit:
        return False
    q.min = np.array([min(low, -logit)], np.float32)
    q.max = np.array([max(high, logit)], np.float32)
    return True

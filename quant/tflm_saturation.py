"""int8 LOGISTIC / TANH that TFLite Micro saturates on every input, found from the input's scale alone.

TFLite Micro's int8 kernels (reference_integer_ops::Logistic / Tanh) first compare the input, less its
zero point, with a radius derived from the input scale (4 integer bits of a 32-bit fixed-point value):
`input <= -radius` gives the lowest output and `input >= radius` the highest. Above an input scale of
about 7.5 to 15 per step (a range wider than about +-1000 to 2000) the radius is 0, so even an input of
exactly 0 comes out as sigmoid 0 or tanh -1, where TFLite's kernels (a lookup table) give 0.5 and 0.
That happens to an LSTM fed unnormalized features: silero-vad's gate pre-activations span +-6e4. The
int8 model then differs between the two runtimes whenever a value quantizes to 0, which a comparison on
a few samples finds only by chance; this check finds it on every model, before any sample is run.
"""

from __future__ import annotations

import math

from edgeport.tflite_file import op_name, parse_tflite

INPUT_INTEGER_BITS = 4  # tensorflow/lite/micro/kernels/logistic_common.cc and tanh.cc
_SATURATING_OPS = ("LOGISTIC", "TANH")
_INT8 = 9  # TensorType.INT8


def input_radius(scale: float) -> int:
    """TFLite Micro's input_range_radius for an int8 LOGISTIC / TANH input of this scale
    (CalculateInputRadius(4, input_left_shift, 31), the shift from frexp(scale * 2^27))."""
    _, shift = math.frexp(scale * (1 << (31 - INPUT_INTEGER_BITS)))
    rescaled = ((1 << INPUT_INTEGER_BITS) - 1) * (1 << (31 - INPUT_INTEGER_BITS)) / 2.0**shift
    return math.floor(rescaled)


def saturating_activations(model: bytes) -> list[tuple[str, str, float]]:
    """(op, its output tensor's name, input scale) of each int8 LOGISTIC / TANH whose radius is 0."""
    raw = parse_tflite(model).raw
    found = []
    for graph in raw.subgraphs or []:
        for op in graph.operators or []:
            name = op_name(raw.operatorCodes[op.opcodeIndex])
            if name not in _SATURATING_OPS or op.inputs is None or len(op.inputs) == 0:
                continue
            tensor = graph.tensors[op.inputs[0]]
            quant = tensor.quantization
            if tensor.type != _INT8 or quant is None or quant.scale is None or len(quant.scale) == 0:
                continue
            scale = float(quant.scale[0])
            if input_radius(scale) == 0 and op.outputs is not None and len(op.outputs):
                label = graph.tensors[op.outputs[0]].name
                found.append((name, label.decode() if isinstance(label, bytes) else str(label), scale))
    return found


def saturation_problem(model: bytes, name: str) -> tuple[str, str] | None:
    """(problem, fix) for the user when the model has such an activation, else None."""
    found = saturating_activations(model)
    if not found:
        return None
    op, tensor, scale = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    problem = (
        f"{name}: TFLite Micro's int8 {op} {tensor!r}{more} saturates every input, 0 included: "
        f"its input's calibrated range spans about +-{127 * scale:.1e}, too wide for that kernel (it "
        f"needs a scale below about 7.5 per step, here {scale:.3g}), so TFLite Micro and TFLite's "
        "reference kernels disagree"
    )
    fix = (
        "the values entering that activation are too large for int8 on TFLite Micro (an LSTM or GRU fed "
        "unnormalized features); keep the float model for the microcontroller, or for Android (no TFLite "
        "Micro) use --quantize dynamic or float16"
    )
    return problem, fix

"""int8 LOGISTIC / TANH that TFLite Micro saturates on every input, found from the input's scale alone.

TFLite Micro's int8 kernels (reference_integer_ops::Logistic / Tanh) first compare the input, less its
zero point, with a radius derived from the input scale (4 integer bits of a 32-bit fixed-point value):
`input <= -radius` gives the lowest output and `input >= radius` the highest. Above an input scale of
about 7.5 to 15 per step (a range wider than about +-1000 to 2000) the radius is 0, so even an input of
exactly 0 comes out as sigmoid 0 or tanh -1, where TFLite's kernels (a lookup table) give 0.5 and 0.
That happens to an LSTM fed unnormalized features: silero-vad's gate pre-activations span +-6e4. The
int8 model then differs between the two runtimes whenever a value quantizes to 0, which a comparison on
a few samples finds only by chance; this check finds it on every model, before any sample is run.

Most such inputs are bounded instead (`bound_activation_inputs`): the int8 output of LOGISTIC (step
1/256) is its first or last step beyond |x| = ln(511) = 6.24 and that of TANH (1/128) beyond 3.2, so
values that reach nothing but these activations may be clamped at +-ACTIVATION_BOUND without changing
any int8 output. Their recorded ranges are narrowed so before the quantizer reads them (the gate
inputs, and through an ADD the projection feeding it, less the other addend's range); the step of
silero-vad's gate pre-activations becomes 16/255 instead of 469, so the radius is no longer 0, and the
gates get fine inputs instead of three values. An input with another reader (x * sigmoid(x) on a large
x) keeps its range: that one is refused, from the TFLite Micro probe's scales before calibration
(`saturation_problem` on the probe model) and, as a backstop, from the calibrated model's.
"""

from __future__ import annotations

import math
from typing import Any

from edgeport.quant.calibrated import recorded_range, recorded_ranges, set_recorded_range
from edgeport.tflite_file import edit_tflite, op_name, parse_tflite, serialize_tflite, tensor_name

INPUT_INTEGER_BITS = 4  # tensorflow/lite/micro/kernels/logistic_common.cc and tanh.cc
_SATURATING_OPS = ("LOGISTIC", "TANH")
_INT8 = 9  # TensorType.INT8
# Beyond +-8 the int8 LOGISTIC and TANH outputs are their end steps (from 6.24 and 3.2, above), with a
# margin for the bound's own rounding (its int8 end values are 8 +- one step of 16/255).
ACTIVATION_BOUND = 8.0
# Ops whose int8 output range is their own recorded one (quant/int8.py's module docstring names ADD,
# CONV_2D, FULLY_CONNECTED; the others requantize the same way). A tensor made by any other op is not
# clamped: a CONCATENATION's or MAXIMUM's output range is imposed on its inputs, which others may read.
_OWN_RANGE = {"ADD", "SUB", "MUL", "FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL"}
# Ops whose int8 output takes the scale of their (data) input (quant/int8.py's module docstring), by
# the index of that input: a clamp on their input reaches their outputs.
_SCALE_KEEPING = {
    "RESHAPE": 0,
    "SQUEEZE": 0,
    "EXPAND_DIMS": 0,
    "TRANSPOSE": 0,
    "SLICE": 0,
    "STRIDED_SLICE": 0,
    "SPLIT": 1,
    "SPLIT_V": 0,
}


def input_radius(scale: float) -> int:
    """TFLite Micro's input_range_radius for an int8 LOGISTIC / TANH input of this scale
    (CalculateInputRadius(4, input_left_shift, 31), the shift from frexp(scale * 2^27))."""
    _, shift = math.frexp(scale * (1 << (31 - INPUT_INTEGER_BITS)))
    rescaled = ((1 << INPUT_INTEGER_BITS) - 1) * (1 << (31 - INPUT_INTEGER_BITS)) / 2.0**shift
    return math.floor(rescaled)


Range = tuple[float, float]
_NOTHING: Range = (math.inf, -math.inf)  # what a tensor nobody reads needs


def _hull(x: Range, y: Range) -> Range:
    return min(x[0], y[0]), max(x[1], y[1])


def bound_activation_inputs(
    calibrated: bytes, bound: float = ACTIVATION_BOUND, clamped: list[str] | None = None
) -> bytes:
    """`calibrated` (a calibrate-only model with recorded min/max) with recorded ranges narrowed where
    the values beyond them only ever reach a LOGISTIC / TANH input beyond +-`bound`; the same bytes when
    nothing changes. The names of the tensors narrowed are appended to `clamped`, if given.

    What a tensor may be clamped to without changing any int8 result is the hull of what each of its
    readers needs: a LOGISTIC / TANH input, [-bound, bound]; a scale-keeping op (an LSTM's gates split
    four ways), the hull of what its outputs need; an ADD whose output needs [lo, hi], with the other
    addend's int8 range [b_lo, b_hi] (its own recorded one, or its source's through scale-keeping ops),
    [lo - b_hi, hi - b_lo] (in int8 the other addend never leaves its range, so beyond that the sum
    saturates either way; with both addends' unclamped ranges this holds when both are clamped). A
    tensor with any other reader, or a model input or output, keeps its range.
    The ADD rule is what bounds an LSTM's input projection (+-6e4 in silero-vad) to the gate range plus
    the recurrent term, where the gate inputs alone would keep the projection's coarse step.
    """
    model = edit_tflite(calibrated)
    graph = model.subgraphs[0]
    ops = graph.operators
    names = [op_name(code) for code in model.operatorCodes]
    kinds = [names[op.opcodeIndex] for op in ops]
    readers: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        for t in op.inputs:
            readers.setdefault(int(t), []).append(i)
    producer = {int(t): i for i, op in enumerate(ops) for t in op.outputs}
    boundary = {int(t) for t in (*graph.inputs, *graph.outputs)}
    recorded = recorded_ranges(calibrated)
    clampable = {t for t, i in producer.items() if kinds[i] in _OWN_RANGE or kinds[i] in _SCALE_KEEPING}
    memo: dict[int, Range | None] = {}

    def int8_range(t: int) -> Range | None:
        """The range `t` has in the int8 model: a scale-keeping op's output has its input's."""
        while t in producer and kinds[producer[t]] in _SCALE_KEEPING:
            op = ops[producer[t]]
            t = int(op.inputs[_SCALE_KEEPING[kinds[producer[t]]]])
        if t in producer and kinds[producer[t]] not in _OWN_RANGE:
            return None
        return recorded.get(t)

    def need_of(reader: int, t: int) -> Range | None:
        op, kind = ops[reader], kinds[reader]
        inputs = [int(i) for i in op.inputs]
        if kind in _SATURATING_OPS and inputs[0] == t:
            return -bound, bound
        if kind in _SCALE_KEEPING and inputs[_SCALE_KEEPING[kind]] == t and inputs.count(t) == 1:
            needs = [tolerance(int(o)) for o in op.outputs]
            if any(n is None for n in needs):
                return None
            hull = _NOTHING
            for n in needs:
                hull = _hull(hull, n)  # type: ignore[arg-type]
            return hull
        fused = getattr(op.builtinOptions, "fusedActivationFunction", 0)
        if kind == "ADD" and fused == 0 and len(inputs) == 2 and inputs[0] != inputs[1]:
            out, other = tolerance(int(op.outputs[0])), int8_range(inputs[1 - inputs.index(t)])
            if out is None or other is None:
                return None
            return (out[0] - other[1], out[1] - other[0]) if out != _NOTHING else _NOTHING
        return None

    def tolerance(t: int) -> Range | None:
        """The range `t` may be clamped to without changing an int8 result; None: no clamp."""
        if t not in memo:
            memo[t] = None  # a cycle (none in a TFLite graph) clamps nothing
            allowed = t in recorded and t in clampable and t not in boundary
            hull: Range | None = _NOTHING if allowed else None
            for reader in readers.get(t, []) if hull is not None else []:
                need = need_of(reader, t)
                hull = None if need is None else _hull(hull, need)  # type: ignore[arg-type]
                if hull is None:
                    break
            memo[t] = hull
        return memo[t]

    # Readers before the tensors they read (operators are stored in execution order): each tolerance
    # then finds its readers' outputs known, and the recursion stays one level deep on any graph.
    for t in sorted(recorded, key=lambda t: producer.get(t, -1), reverse=True):
        tolerance(t)
    changed = False
    for t in sorted(recorded):
        clamp = tolerance(t)
        if clamp is not None and clamp != _NOTHING and _clamp(graph.tensors[t], *clamp):
            changed = True
            if clamped is not None:
                clamped.append(tensor_name(graph.tensors[t]))
    return serialize_tflite(model) if changed else calibrated


def _clamp(tensor: Any, low_end: float, high_end: float) -> bool:
    """Clamp a tensor's recorded range into [low_end, high_end], 0 kept inside (as the quantizer makes
    it); whether it changed."""
    low, high = recorded_range(tensor)  # type: ignore[misc]
    if low >= low_end and high <= high_end:
        return False
    set_recorded_range(tensor, (min(max(low, low_end), 0.0), max(min(high, high_end), 0.0)))
    return True


def clamp_note(clamped: list[str], bound: float = ACTIVATION_BOUND) -> str:
    """The calibration note for the tensors `bound_activation_inputs` narrowed."""
    more = f" and {len(clamped) - 1} more" if len(clamped) > 1 else ""
    return (
        f"{clamped[0]!r}{more}, read only by LOGISTIC / TANH (directly or through an ADD), quantized over "
        f"at most +-{bound:g}, beyond which those activations' int8 outputs are their end steps anyway: "
        "finer int8 steps, the same saturation; their per-layer SQNR vs float counts the clamp"
    )


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
                found.append((name, tensor_name(graph.tensors[op.outputs[0]]), scale))
    return found


def saturation_problem(
    model: bytes, name: str, ranges_from: str = "calibrated range"
) -> tuple[str, str] | None:
    """(problem, fix) for the user when the model has such an activation, else None. `ranges_from` says
    where the model's ranges come from (the calibration, or the probe's few samples before it)."""
    found = saturating_activations(model)
    if not found:
        return None
    op, tensor, scale = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    problem = (
        f"{name}: TFLite Micro's int8 {op} {tensor!r}{more} saturates every input, 0 included: "
        f"its input's {ranges_from} spans about +-{127 * scale:.1e}, too wide for that kernel (it "
        f"needs a scale below about 7.5 per step, here {scale:.3g}), and edgeport cannot bound it (another "
        "op reads the same values), so TFLite Micro and TFLite's reference kernels would disagree"
    )
    fix = (
        "the values entering that activation are too large for int8 on TFLite Micro (unnormalized "
        "features): normalize them in the model, or give --calibration with real samples if real inputs "
        "stay smaller; else keep the float model for the microcontroller, or for Android (no TFLite Micro) "
        "use --quantize dynamic or float16"
    )
    return problem, fix

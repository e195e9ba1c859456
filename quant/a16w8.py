"""`--quantize a16w8`: 16-bit activations, 8-bit weights (TFLite's int16x8 post-training quantization).

Per-tensor int8 activations give every value of a tensor the same step, set by its widest channel:
after a residual sum whose range a few large channels set, the small channels keep a handful of steps
(PP-OCRv4 detection). int16 activations have 256 times finer steps over the same range; weights stay
int8 per-channel (the flash cost of int8), biases become int64, activations symmetric (zero point 0)
as TFLite's int16x8 spec and TFLite Micro's int16 kernels require.

TensorFlow 2.19 quantizes int16x8 with its older quantizer (tflite::optimize::QuantizeModel, reached
through the calibration wrapper), not the MLIR one int8 uses: the MLIR quantizer's int16 path writes
int32 biases and non-zero zero points that TFLite Micro refuses. The calibration half is int8's
(quant/int8.py's `calibrate_only`, with max-pool padding bounded and a model output's sigmoid input
widened the same way); `quantize_a16w8` is the second half as `converter.convert()` runs it, byte for
byte on an unedited calibration (tested), except for int16 MUL output scales nudged so the runtimes
agree (`agree_mul_multipliers`).

Every recorded range is widened HEADROOM times before quantizing (`with_headroom`). Data-free
calibration samples are not the real inputs, and a range they stop short of clips every larger value;
int8 cannot spare the bits to guard against that, int16 can: 4 times the range costs 2 of its 15 bits
(about 78 dB of quantization SQNR per tensor is left, far above the int8 weights' ~45 dB per layer).
Measured on PP-OCRv4 detection calibrated on noise, evaluated on 16 rendered text images (SQNR vs float):
10.4 dB unwidened, 14.7 / 20.6 / 20.3 / 19.7 / 16.7 dB widened 2 / 4 / 8 / 16 / 64 times (its SE
blocks' means on text are up to 1.6 times what noise gave). A power of two keeps the exact MUL
multipliers below exact.

TFLite's int16 MUL kernels (reference and optimized) compute their output multiplier as
input1_scale * input2_scale / output_scale in float32 arithmetic, TFLite Micro's in double: the two
31-bit multipliers differ in their low bits and the outputs by one int16 step now and then (measured
on a hard-swish's x * gate: the reference matches the float32 multiplier, TFLite Micro the double one).
`agree_mul_multipliers` changes scales until both give the same multiplier, so TFLite Micro and
TFLite's kernels agree bit for bit again: first the MUL's output scale by the fewest float32 ulps
(at most MAX_NUDGE_ULPS, a relative change below 1e-3; enough for most MULs), else an input's scale
rounded up to a power of two (the float32 product is then exact) and the output's to that of the other
input times a power of two (the multiplier is then a power of two): at most one bit of the 16 lost on
each. A scale is always changed on every int16 tensor that has that exact scale (scale-keeping ops
such as pooling, reshape or concatenation give their tensors one scale).

Two things in a calibrated model the int16x8 quantizer cannot take are rewritten first
(`int16_ready`), each exactly or to float rounding: HARD_SWISH, which TFLite's converter fuses from
x * relu6(x + 3) / 6 and which has no int16 form in the quantizer nor an int16 kernel in TFLite Micro,
goes back to ADD (fused RELU6), MUL, MUL, with power-of-two scales on the two new tensors and the
input's range on the output so that both MULs' multipliers are exact; a constant bias of rank other
than 1 (onnx2tf writes a TRANSPOSE_CONV bias as [1, 1, 1, C] or a scalar for one channel) gets shape
[C] (the quantizer refuses it: "Expected bias tensor to be a vector").

TFLite Micro has int16 kernels for most layers (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
TRANSPOSE_CONV, ADD, SUB, MUL, pooling, LOGISTIC, TANH, SOFTMAX, CONCATENATION, PAD, TRANSPOSE,
STRIDED_SLICE, RESIZE_NEAREST_NEIGHBOR, ...) but not all (HARD_SWISH, RESIZE_BILINEAR, DEPTH_TO_SPACE,
SPACE_TO_BATCH_ND, GATHER, DIV, ELU: int8 or float only). As for int8, which ops run is not typed out
here: a probe model quantized from a few synthetic samples runs in TFLite Micro before calibration,
and an op that fails there is named with the fix. The TFLite quantizer takes no denylist on this path,
so such an op cannot be kept float the way int8 keeps one: the fix is int8 or a rewrite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.quant.bounded_outputs import widen_bounded_outputs
from edgeport.quant.calibrated import (
    add_activation,
    add_scalar,
    drop_unused_codes,
    new_operator,
    recorded_range,
    set_recorded_range,
)
from edgeport.quant.int8 import (
    bound_max_pool_padding,
    calibrate_only,
    converter_step,
    finish_quantized,
    int8_converter,
)
from edgeport.quant.tflm_ops import TflmPlan, arena_for, failing_op, no_kernel_fix, node_output
from edgeport.runtimes.tflm import run_tflm
from edgeport.tensors import Sample, TensorSpec
from edgeport.tflite_file import edit_tflite, op_name, schema, serialize_tflite, tensor_name

T = TypeVar("T")
_INT16, _INT64 = 7, 4  # TensorType
HEADROOM = 4.0  # times the calibrated range; a power of two (see the module docstring)
MAX_NUDGE_ULPS = 1 << 12
_FIXED_SCALE_OPS = ("LOGISTIC", "TANH", "SOFTMAX", "LOG_SOFTMAX")  # int16 outputs of a fixed scale
MAX_ROUNDS = 4  # passes over the MULs: a change to a shared scale can undo an earlier MUL's agreement
# Tensor types a full-integer a16w8 model holds: int16 activations, int8 weights, int64 biases, int32
# shapes and indices, bool from comparisons.
TENSOR_TYPES = ("int16", "int8", "int64", "int32", "bool")
ACTIVATIONS = "int16 per-tensor (symmetric, zero point 0)"
WEIGHTS = "int8 per-channel (symmetric); biases int64"


def io_type(io: str) -> str:
    """The model's input/output type for --io: integer I/O is int16 in a16w8."""
    return "float" if io == "float" else "int16"


def a16w8_converter(keras_model: Any, in_specs: Sequence[TensorSpec], samples: Sequence[Sample]) -> Any:
    """int8's converter (same representative dataset) with the int16x8 op set. Float I/O: the I/O type
    is applied when quantizing (a calibrate-only conversion with int16 I/O fails in the converter's
    I/O rewrite, which expects a quantized model)."""
    import tensorflow as tf

    converter = int8_converter(keras_model, in_specs, samples, "float")
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    return converter


def quantize_a16w8(converter: Any, calibrated: bytes, io: str, report: dict[str, Any] | None = None) -> bytes:
    """The converter's second half for int16x8, as tensorflow 2.19's lite.py runs it: the old
    quantizer on the recorded min/max (nothing is fed again), int16 or float I/O, integer-only
    (allow_float False, as with TFLITE_BUILTINS_INT8), then the I/O types, `agree_mul_multipliers`
    (what it changed goes into `report`) and `finish_quantized`."""
    import tensorflow as tf
    from tensorflow.lite.python import util
    from tensorflow.lite.python.optimize import calibrator

    io_dtype = tf.int16 if io_type(io) == "int16" else tf.float32
    io_num = np.dtype(io_dtype.as_numpy_dtype).num
    prepared = int16_ready(widen_bounded_outputs(bound_max_pool_padding(calibrated)))
    wrapper = calibrator.Calibrator(prepared)._calibrator
    model = wrapper.QuantizeModel(
        io_num,
        io_num,
        False,
        np.dtype(np.int16).num,
        np.dtype(np.int64).num,
        converter._experimental_disable_per_channel,
        converter._experimental_disable_per_channel_quantization_for_dense_layers,
    )
    model = util.modify_model_io_type(bytes(model), io_dtype, io_dtype)
    model, changes = agree_mul_multipliers(bytes(model))
    if report is not None:
        report.update(changes)
    return finish_quantized(converter, model)


# Bias input position by op, for `int16_ready`'s bias shapes.
_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}
# hard_swish(x) = x * relu6(x + 3) / 6. Recorded ranges whose symmetric int16 scales (max / 32767) are
# 2^-12 for relu6(x + 3) (up to 7.9998) and 2^-15 for the gate relu6(x + 3) / 6 (up to 0.99997: a gate of
# 1 saturates one step short): with these the MULs' multipliers are exact in float32 and double alike.
_RELU6_RANGE, _GATE_RANGE = (0.0, 32767 * 2.0**-12), (0.0, 32767 * 2.0**-15)


def int16_ready(calibrated: bytes) -> bytes:
    """`calibrated` (float, recorded min/max) with HARD_SWISH decomposed and biases made vectors (see
    the module docstring); the same bytes when there is nothing to change."""
    model = edit_tflite(calibrated)
    graph = model.subgraphs[0]
    changed = False
    operators = []
    for op in graph.operators:
        kind = op_name(model.operatorCodes[op.opcodeIndex])
        if kind in _BIAS_INPUT:
            changed |= _bias_as_vector(model, graph, op, _BIAS_INPUT[kind])
        if kind != "HARD_SWISH":
            operators.append(op)
            continue
        changed = True
        x, out = int(op.inputs[0]), int(op.outputs[0])
        name = tensor_name(graph.tensors[out])
        three = add_scalar(model, graph, f"{name}/three", 3.0)
        sixth = add_scalar(model, graph, f"{name}/sixth", 1.0 / 6.0)
        relu6 = add_activation(model, graph, f"{name}/relu6", x, _RELU6_RANGE)
        gate = add_activation(model, graph, f"{name}/gate", x, _GATE_RANGE)
        # |hard_swish(x)| <= |x|: x's scale, and x * gate's multiplier is 2^-15
        if (x_range := recorded_range(graph.tensors[x])) is not None and graph.tensors[out].quantization:
            set_recorded_range(graph.tensors[out], x_range)
        relu6_add = schema.AddOptionsT()
        relu6_add.fusedActivationFunction = schema.ActivationFunctionType.RELU6
        # The general int16 ADD, as the quantizer writes its own (the schema's default, power-of-two
        # scales only, rounds differently in TFLite's kernels and is not what TFLite Micro runs).
        relu6_add.potScaleInt16 = False
        add = (schema.BuiltinOptions.AddOptions, relu6_add)
        mul = (schema.BuiltinOptions.MulOptions, schema.MulOptionsT())
        operators += [
            new_operator(model, schema.BuiltinOperator.ADD, [x, three], relu6, add),
            new_operator(model, schema.BuiltinOperator.MUL, [relu6, sixth], gate, mul),
            new_operator(model, schema.BuiltinOperator.MUL, [x, gate], out, mul),
        ]
    if not changed:
        return calibrated
    graph.operators = operators
    drop_unused_codes(model)  # the calibration wrapper's resolver refuses a HARD_SWISH code nobody reads
    return serialize_tflite(model)


def _bias_as_vector(model: Any, graph: Any, op: Any, position: int) -> bool:
    """Give a constant bias of rank != 1 the shape [C] (C = the output's channels, its element count)."""
    if len(op.inputs) <= position or int(op.inputs[position]) < 0:
        return False
    bias = graph.tensors[int(op.inputs[position])]
    data = model.buffers[bias.buffer].data if bias.buffer else None
    shape = [int(d) for d in bias.shape] if bias.shape is not None else []
    channels = int(graph.tensors[int(op.outputs[0])].shape[-1])
    if data is None or len(shape) == 1 or int(np.prod(shape)) != channels:
        return False
    bias.shape = np.array([channels], np.int32)
    bias.shapeSignature = None
    return True


def _quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: a 31-bit fixed-point mantissa (rounded half away from zero), a shift."""
    mantissa, shift = math.frexp(real)
    fixed = math.floor(mantissa * (1 << 31) + 0.5)
    if fixed == 1 << 31:
        fixed, shift = fixed // 2, shift + 1
    return fixed, shift


def multipliers_agree(scale1: float, scale2: float, out_scale: float) -> bool:
    """Whether TFLite's float32 and TFLite Micro's double MUL multiplier are the same."""
    f32 = np.float32
    single = float(f32(f32(scale1) * f32(scale2)) / f32(out_scale))
    double = float(f32(scale1)) * float(f32(scale2)) / float(f32(out_scale))
    return _quantize_multiplier(single) == _quantize_multiplier(double)


def _agreeing_scale(scale1: float, scale2: float, out_scale: float) -> float | None:
    """The float32 output scale nearest `out_scale` (in ulps) whose multipliers agree; None past
    MAX_NUDGE_ULPS."""
    below = above = np.float32(out_scale)
    for _ in range(MAX_NUDGE_ULPS):
        above = np.nextafter(above, np.float32(np.inf))
        if multipliers_agree(scale1, scale2, float(above)):
            return float(above)
        below = np.nextafter(below, np.float32(0))
        if multipliers_agree(scale1, scale2, float(below)):
            return float(below)
    return None


def _power_of_two_above(scale: float) -> float:
    return float(2.0 ** math.ceil(math.log2(scale)))


def agree_mul_multipliers(model: bytes) -> tuple[bytes, dict[str, Any]]:
    """The quantized a16w8 model with scales changed until every int16 MUL's multiplier is the same in
    TFLite and TFLite Micro (see the module docstring), and what changed. A scale changes on its whole
    group (every int16 tensor with that exact scale), constants in it requantized to keep their values;
    never on a group holding a fixed-scale output (LOGISTIC, TANH, SOFTMAX). A MUL left disagreeing is
    left for the TFLite Micro check to report."""
    obj = edit_tflite(model)
    graph = obj.subgraphs[0]
    kinds = [op_name(obj.operatorCodes[op.opcodeIndex]) for op in graph.operators]
    fixed = {
        int(t)
        for op, kind in zip(graph.operators, kinds, strict=True)
        if kind in _FIXED_SCALE_OPS
        for t in op.outputs
    }

    def scale(index: int) -> float | None:
        tensor = graph.tensors[index]
        q = tensor.quantization
        if tensor.type != _INT16 or q is None or q.scale is None or len(q.scale) != 1:
            return None
        return float(q.scale[0])

    # The int16 tensors by their float32 scale, kept up to date by `rescale`: a group is one lookup.
    groups: dict[np.float32, set[int]] = {}
    for i in range(len(graph.tensors)):
        if (s := scale(i)) is not None:
            groups.setdefault(np.float32(s), set()).add(i)

    def group(index: int) -> set[int]:
        return groups[np.float32(scale(index))]

    def movable(index: int) -> bool:
        return not fixed & group(index)

    def requantize(tensor: Any, factor: float, dtype: str) -> None:
        """A constant's integers times `factor`, rounded and clipped: its real value kept."""
        data = obj.buffers[tensor.buffer].data if tensor.buffer else None
        if data is None or not len(data):
            return
        limits = np.iinfo(dtype)
        values = np.round(np.frombuffer(bytes(data), dtype).astype(np.float64) * factor)
        requantized = np.clip(values, limits.min, limits.max).astype(dtype)
        obj.buffers[tensor.buffer].data = np.frombuffer(requantized.tobytes(), np.uint8).copy()

    def rescale(index: int, new: float) -> float:
        """`new` on the group of `index`: its constants requantized, and the biases of the layers it
        feeds (their integers are in units of input scale x weight scale); the relative change."""
        old = float(np.float32(scale(index)))
        members = groups.pop(np.float32(old))
        for i in members:
            requantize(graph.tensors[i], old / new, "<i2")
            graph.tensors[i].quantization.scale = np.array([new], np.float32)
        groups.setdefault(np.float32(new), set()).update(members)
        for op, kind in zip(graph.operators, kinds, strict=True):
            data = 2 if kind == "TRANSPOSE_CONV" else 0
            if kind not in _BIAS_INPUT or int(op.inputs[data]) not in members:
                continue
            if len(op.inputs) > _BIAS_INPUT[kind] and int(op.inputs[_BIAS_INPUT[kind]]) >= 0:
                bias = graph.tensors[int(op.inputs[_BIAS_INPUT[kind]])]
                requantize(bias, old / new, "<i8" if bias.type == _INT64 else "<i4")
                bias_scales = np.asarray(bias.quantization.scale, np.float64) * new / old
                bias.quantization.scale = bias_scales.astype(np.float32)
        return abs(new / old - 1.0)

    def power_of_two(value: float) -> bool:
        return math.frexp(value)[0] == 0.5

    muls = [
        op
        for op, kind in zip(graph.operators, kinds, strict=True)
        if kind == "MUL"
        and len(op.inputs) == 2
        and None not in (scale(int(op.inputs[0])), scale(int(op.inputs[1])), scale(int(op.outputs[0])))
    ]
    nudged, rounded, worst = 0, 0, 0.0
    for _ in range(MAX_ROUNDS):
        changed = False
        for op in muls:
            a, b, out = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
            if multipliers_agree(scale(a), scale(b), scale(out)) or not movable(out):  # type: ignore[arg-type]
                continue
            changed = True
            new = _agreeing_scale(scale(a), scale(b), scale(out))  # type: ignore[arg-type]
            if new is not None:
                worst = max(worst, rescale(out, new))
                nudged += 1
                continue
            # One input on a power of two, the output on the other input's scale times one.
            for x, y in ((b, a), (a, b)):
                if power_of_two(scale(x)) or movable(x):  # type: ignore[arg-type]
                    if not power_of_two(scale(x)):  # type: ignore[arg-type]
                        worst = max(worst, rescale(x, _power_of_two_above(scale(x))))  # type: ignore[arg-type]
                    ratio = _power_of_two_above(scale(out) / scale(y))  # type: ignore[operator]
                    worst = max(worst, rescale(out, float(np.float32(scale(y) * ratio))))  # type: ignore[operator]
                    rounded += 1
                    break
        if not changed:
            break
    if not nudged and not rounded:
        return model, {}
    report = {
        "mul_output_scales_nudged": nudged,
        "mul_scales_rounded_to_powers_of_two": rounded,
        "max_relative_scale_change": float(f"{worst:.2g}"),
    }
    return serialize_tflite(obj), report


def with_headroom(calibrated: bytes, factor: float = HEADROOM) -> bytes:
    """`calibrated` with every recorded (min, max) multiplied by `factor` (see the module docstring)."""
    model = edit_tflite(calibrated)
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if (recorded := recorded_range(tensor)) is not None:
                set_recorded_range(tensor, (recorded[0] * factor, recorded[1] * factor))
    return serialize_tflite(model)


def keras_to_a16w8(
    keras_model: Any,
    in_specs: Sequence[TensorSpec],
    samples: Sequence[Sample],
    io: str,
    report: dict[str, Any] | None = None,
) -> bytes:
    """The a16w8 model calibrated on `samples` (`in_specs` in the Keras model's input order); `report`,
    if given, receives what `agree_mul_multipliers` changed."""
    if not samples:
        raise ValueError("a16w8 quantization needs representative samples")
    converter = a16w8_converter(keras_model, in_specs, samples)
    calibrated = with_headroom(_quantizing(lambda: calibrate_only(converter)))
    return _quantizing(lambda: quantize_a16w8(converter, calibrated, io, report))


def _quantizing(step: Callable[[], T]) -> T:
    return converter_step(
        "a16w8",
        step,
        "a layer has no 16-bit-activation form in TFLite: use --quantize int8, or rewrite that layer",
    )


def no_int16_kernel_fix(op: str) -> str:
    return (
        f"use --quantize int8 (TFLite Micro's {op} runs in int8), or replace that op in the model before "
        "conversion; for Android (no TFLite Micro) use --quantize dynamic or float16"
    )


def plan_a16w8_for_tflm(
    keras_model: Any,
    keras_specs: Sequence[TensorSpec],
    samples: Sequence[Sample],
    io: str,
    raw_inputs: Callable[[bytes], list[list[np.ndarray]]],
    name: str,
) -> TflmPlan:
    """Before calibration: an a16w8 model quantized from `samples` (a few synthetic ones) runs once in
    TFLite Micro; an op TFLite Micro cannot run in int16 raises EdgeportError naming op, node and fix.
    Nothing is kept float (see the module docstring); an inconclusive probe is recorded as for int8."""
    try:
        model = keras_to_a16w8(keras_model, keras_specs, samples, io)
    except EdgeportError as exc:
        raise EdgeportError(f"{exc.problem}; found before calibration", exc.fix) from exc
    try:
        run_tflm(model, raw_inputs(model), name, arena_size=arena_for(model))
    except EdgeportError as exc:
        op, index, detail = failing_op(exc.problem)
        if not op:
            return TflmPlan(probes=1, inconclusive=exc.problem)
        if index is None:  # no kernel at all, in any type: int8 would not help
            raise EdgeportError(
                f"{name}: TFLite Micro has no kernel for op {op}; found before calibration", no_kernel_fix(op)
            ) from exc
        where = f" (node {index}, tensor {node_output(model, index)!r})"
        raise EdgeportError(
            f"{name}: TFLite Micro cannot run op {op}{where} with 16-bit activations"
            + (f" ({detail})" if detail else "")
            + "; found before calibration",
            no_int16_kernel_fix(op),
        ) from exc
    return TflmPlan(probes=1)

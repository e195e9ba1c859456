"""Which nodes of a .tflite TFLite's GPU delegate would take, by TensorFlow's own static rules.

TensorFlow 2.19's model analyzer no longer checks GPU compatibility (delegates.py says why), so this is
a Python port of the rules the GPU delegate itself applies when it is attached to an interpreter (the
classic delegate, `TfLiteGpuDelegateV2` / Android's `GpuDelegate`, with its default options). Ported
from the TF 2.19-era sources, read at google-ai-edge/LiteRT commit ce6afc9 (2025-01-29; the files below
are TensorFlow's tensorflow/lite/..., mirrored there, and did not change again until 2025-10-24):

- tensorflow/lite/delegates/gpu/common/model_builder.cc, `NewOperationParser`: which builtins have a GPU
  parser at all, the highest op version each parser takes, and the parsers' own checks in front of the
  shared rules (a comparison must feed a CAST or SELECT to float; a bool->float CAST must follow a
  comparison). `GetOpsToReplace` / `IsAllAllowedTensors`: every non-constant tensor float32/float16
  (int8/uint8 too, as the default options allow quantized models; bool/int32 for the few ops listed in
  _EXTRA_TYPES) and no tensor of rank 5 or more.
- tensorflow/lite/tools/versioning/gpu_compatibility.cc, `CheckGpuDelegateCompatibility(op_sig)`: the
  per-op rules (runtime/constant input counts, strides, dilations, kernel sizes, fused activations,
  ranks, broadcasting, option flags). The runtime path uses GpuCompatibilityFlags::kStandard, the
  stricter broadcasting rule, and so does this port.
- tensorflow/lite/delegates/utils.cc, `FP16GraphPartitionHelper`: a DEQUANTIZE of a constant float16
  tensor (float16 weights) is folded into the consumer's check; if every other node passes, the whole
  graph is delegated, otherwise those DEQUANTIZEs stay on the CPU.
- tensorflow/lite/graph_info.cc, `PartitionGraphIntoIndependentNodeSubsets` (greedy): how the graph is
  cut into GPU and CPU partitions. The delegate's default `max_delegated_partitions` is 1: it takes the
  largest GPU partition and leaves the others on the CPU.

One failure of the build step (`Parse`) is checked, as edgeport's own w4a8 variant has it: constant
int4 weights, which the delegate cannot read (model_builder_helper.cc `CreateVectorCopyData` takes
float32/float16/int8/uint8/int32); building the GPU graph then fails and nothing runs on the GPU
(`build_problem`). Left out: the other `Parse` failures (e.g. a PReLU alpha whose shape does not match
the input); the contents of custom ops' options (MediaPipe's Convolution2DTransposeBias,
MaxPoolingWithArgmax2D and MaxUnpooling2D keep strides and kernel sizes in an opaque struct; only their
tensor counts are checked); data-dependent output shapes (dynamic tensors), which make the delegate
refuse the whole model at run time; and gpu_compatibility.cc's rules for ops no GPU parser takes
(EMBEDDING_LOOKUP, DYNAMIC_UPDATE_SLICE, STABLEHLO_*, ...), which are unsupported here as on the device.
This is the static rule set, not a run on a phone's GPU: a driver or GPU-memory limit can still fail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from edgeport.tflite_file import op_name, schema, tensor_name, type_name

FLOAT = ("float32", "float16")
QUANT = ("int8", "uint8")  # allowed: the delegate's default options set ENABLE_QUANT
MAX_RANK = 4
SIGN_BIT = schema.ActivationFunctionType.SIGN_BIT
# Comparisons: their bool output may only feed a CAST / SELECT to float (model_builder.cc IsLogicalCode).
LOGICAL = ("GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "EQUAL", "NOT_EQUAL")
SIDE_EFFECT_OPS = ("IF", "WHILE", "CALL_ONCE")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a node as the delegate sees it (OpSignatureTensorSpec)."""

    type: str  # "float32", "int8", ...; "none" for an omitted optional input
    dims: tuple[int, ...] = ()
    is_const: bool = False
    name: str = ""


@dataclass(frozen=True)
class OpSignature:
    """A node's op, version, tensors and builtin options (OpSignature), from the flatbuffer."""

    op: str  # builtin name, "CUSTOM:<name>" for a custom op
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    version: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)

    def option(self, key: str, default: Any = 0) -> Any:
        return self.options.get(key, default)


Check = Callable[[OpSignature], "str | None"]  # None: the rule passes; else why it fails


# --- helpers of gpu_compatibility.cc ---------------------------------------------------------------


def _runtime_inputs(sig: OpSignature) -> int:
    return sum(1 for t in sig.inputs if not t.is_const and t.type != "none")


def _io(sig: OpSignature, runtime: int, outputs: int) -> str | None:
    """CheckInputsOutputs."""
    have = _runtime_inputs(sig)
    if have != runtime:
        return f"expected {runtime} runtime input tensor(s), but node has {have}"
    if len(sig.outputs) != outputs:
        return f"expected {outputs} output tensor(s), but node has {len(sig.outputs)}"
    return None


def _io_consts(sig: OpSignature, runtime: int, consts: int, outputs: int) -> str | None:
    """CheckInputsConstsOutputs."""
    have = sum(1 for t in sig.inputs if t.is_const)
    if have != consts:
        return f"expected {consts} constant input tensor(s), but node has {have}"
    return _io(sig, runtime, outputs)


def _one_or_two_operands(sig: OpSignature) -> str | None:
    if _io_consts(sig, 2, 0, 1) and _io_consts(sig, 1, 1, 1):
        return "op can only handle 1 or 2 operand(s) (two runtime inputs, or one and a constant)"
    return None


def _activation(code: int) -> str | None:
    return "fused activation SIGN_BIT is not supported" if code == SIGN_BIT else None


def _positive(what: str, h: int, w: int) -> str | None:
    return None if h > 0 and w > 0 else f"incorrect {what} values: {h} x {w}"


def _conv_io(sig: OpSignature) -> str | None:
    """CheckConvoultionInputOutput (sic)."""
    runtime = _runtime_inputs(sig)
    if runtime > 2:
        return f"expected 1 or 2 runtime input tensor(s), but node has {runtime}"
    if len(sig.outputs) != 1:
        return f"expected 1 output tensor, but node has {len(sig.outputs)}"
    if runtime == 1 and len(sig.inputs) < 2:
        return "the weights input is missing"
    return None


def _axes_int32_const(sig: OpSignature, index: int) -> str | None:
    if index >= len(sig.inputs):
        return "the axes input is missing"
    axes = sig.inputs[index]
    if not axes.is_const:
        return f"{sig.op} is only supported with constant axes"
    if axes.type != "int32":
        return f"{sig.op} takes int32 axes, not {axes.type}"
    return None


def _first(*checks: Callable[[], str | None]) -> str | None:
    """The first failing check's message (RETURN_IF_ERROR chains)."""
    for check in checks:
        problem = check()
        if problem:
            return problem
    return None


def _broadcastable_standard(a: Sequence[int], b: Sequence[int]) -> bool:
    """CheckAddMulBroadcastCompatibility with kStandard: which rank-mismatched pairs the kernels take."""
    if len(a) <= 1 or len(b) <= 1 or len(a) == len(b):
        return True
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    if len(longer) != 4:
        return False
    if len(shorter) == 3:
        return longer[0] == 1  # 3-D to 4-D with batch 1
    if len(shorter) == 2:
        # [1, 1] to [1, h, w, c], or [b, c] to [b, h, w, c]
        return (longer[0] == 1 and tuple(shorter) == (1, 1)) or (
            longer[0] == shorter[0] and longer[3] == shorter[1]
        )
    return False


def _broadcast(sig: OpSignature) -> str | None:
    a, b = sig.inputs[0].dims, sig.inputs[1].dims
    if _broadcastable_standard(a, b):
        return None
    return f"broadcasting {list(a)} with {list(b)} is not supported"


# --- per-op rules (CheckGpuDelegateCompatibility's switch) --------------------------------------------


def _add(sig: OpSignature) -> str | None:
    if len(sig.inputs) != 2:
        return "ADD requires two input tensors"
    return _broadcast(sig)


def _add_n(sig: OpSignature) -> str | None:
    return None if len(sig.inputs) == 2 else "ADD_N only supports 2 inputs"


def _mul(sig: OpSignature) -> str | None:
    if len(sig.inputs) != 2:
        return "MUL requires two input tensors"
    return _broadcast(sig) or _activation(sig.option("fusedActivationFunction"))


def _pooling(sig: OpSignature) -> str | None:
    return _first(
        lambda: _io(sig, 1, 1),
        lambda: _positive("kernel", sig.option("filterHeight"), sig.option("filterWidth")),
        lambda: _positive("stride", sig.option("strideH"), sig.option("strideW")),
        lambda: _activation(sig.option("fusedActivationFunction")),
    )


def _conv(sig: OpSignature) -> str | None:
    return _first(
        lambda: _conv_io(sig),
        lambda: _positive("stride", sig.option("strideH"), sig.option("strideW")),
        lambda: _positive("dilation", sig.option("dilationHFactor", 1), sig.option("dilationWFactor", 1)),
        lambda: _activation(sig.option("fusedActivationFunction")),
    )


def _depthwise(sig: OpSignature) -> str | None:
    problem = _conv(sig)
    if problem:
        return problem
    multiplier = sig.option("depthMultiplier")
    x, w, y = sig.inputs[0].dims, sig.inputs[1].dims, sig.outputs[0].dims
    # An omitted bias still counts (as one element), as in the source.
    bias = sig.inputs[2] if len(sig.inputs) > 2 else None
    for what, dims in (("input", x), ("filter", w), ("output", y)):
        if len(dims) != 4:
            return f"depthwise {what} has rank {len(dims)}, not 4"
    if x[0] != y[0]:
        return "input batch != output batch"
    if w[3] != y[3]:
        return "filter channels != output channels"
    if y[3] != x[3] * multiplier:
        return "output channels != input channels * depth_multiplier"
    if bias is not None and _elements(bias.dims) != y[3]:
        return "bias size != output channels"
    if multiplier != 1 and x[3] != 1:
        return "depth_multiplier != 1 with more than one input channel"
    return None


def _elements(dims: Sequence[int]) -> int:
    count = 1
    for d in dims:
        count *= d
    return count


def _cast(sig: OpSignature) -> str | None:
    problem = _io(sig, 1, 1)
    if problem:
        return problem
    src, dst = sig.inputs[0].type, sig.outputs[0].type
    if (src == "bool" and dst in FLOAT) or (src in FLOAT and dst == "bool"):
        return None
    if src in ("float32", "int32") and dst in ("float32", "int32"):
        return None
    return f"CAST from {src} to {dst} is not supported"


def _cumsum(sig: OpSignature) -> str | None:
    if len(sig.inputs) != 2:
        return "CUMSUM expects 2 inputs"
    x, axis = sig.inputs
    if x.type not in FLOAT or sig.outputs[0].type != x.type or axis.type != "int32" or not axis.is_const:
        return "CUMSUM input/output must be float and its axis a constant int32"
    return None


def _block_size(sig: OpSignature) -> str | None:
    problem = _io(sig, 1, 1)
    if problem:
        return problem
    size = sig.option("blockSize")
    if size == 1:
        return f"{sig.op} block_size = 1 is a no-op"
    return None if size > 1 else f"{sig.op} block_size must be > 1"


def _dequantize(sig: OpSignature) -> str | None:
    if len(sig.inputs) != 1 or len(sig.outputs) != 1:
        return "DEQUANTIZE expects 1 input and 1 output"
    return "int16 dequantization is not supported" if sig.inputs[0].type == "int16" else None


def _fully_connected(sig: OpSignature) -> str | None:
    if sig.option("weightsFormat") != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
        return "shuffled FULLY_CONNECTED weights are not supported"
    if _runtime_inputs(sig) > 2:
        return "FULLY_CONNECTED takes at most 2 runtime inputs"
    if sig.inputs[0].is_const:
        return "FULLY_CONNECTED with a constant input is not supported"
    if sig.option("keepNumDims", False) and len(sig.inputs[0].dims) != len(sig.outputs[0].dims):
        return "FULLY_CONNECTED keep_num_dims with input and output ranks that differ"
    return None


def _gather(sig: OpSignature) -> str | None:
    problem = _one_or_two_operands(sig)
    if problem:
        return problem
    indices = sig.inputs[1]
    if len(indices.dims) != 1:
        return "GATHER only takes 1-D indices"
    return None if indices.type == "int32" else "GATHER only takes int32 indices"


def _lstm(sig: OpSignature) -> str | None:
    activation = sig.option("fusedActivationFunction")
    if sig.option("kernelType") == schema.LSTMKernelType.FULL:
        if len(sig.inputs) not in (20, 24):
            return f"LSTM expects 20 or 24 inputs, node has {len(sig.inputs)}"
        if len(sig.outputs) != 1:
            return f"LSTM expects 1 output, node has {len(sig.outputs)}"
        # Sigmoid is TfLite-only (kTfLiteActSigmoid); a flatbuffer can only say TANH here.
        return None if activation == schema.ActivationFunctionType.TANH else "LSTM activation must be tanh"
    return _first(
        lambda: _io_consts(sig, 3, 2, 4),
        lambda: None if activation == schema.ActivationFunctionType.TANH else "LSTM activation must be tanh",
        lambda: "LSTM cell_clip is not supported" if sig.option("cellClip", 0.0) else None,
        lambda: "LSTM proj_clip is not supported" if sig.option("projClip", 0.0) else None,
    )


def _mean(sig: OpSignature) -> str | None:
    return _io_consts(sig, 1, 1, 1) or _axes_int32_const(sig, 1)


def _reduce(sig: OpSignature) -> str | None:
    return _io(sig, 1, 1) or _axes_int32_const(sig, 1)


def _one_hot(sig: OpSignature) -> str | None:
    problem = "ONE_HOT needs int32 indices, constant scalar float on/off values and the last axis"
    if len(sig.inputs) != 4:
        return "ONE_HOT expects 4 inputs"
    indices, _, on, off = sig.inputs
    if indices.type != "int32":
        return problem
    rank = len(indices.dims)
    axis = sig.option("axis", -1)
    if axis != -1 and (rank == 0 or axis != indices.dims[rank - 1]):
        return problem
    for i in range(rank - 1):
        if not (rank > 3 and i == 0) and indices.dims[i] != 1:
            return f"ONE_HOT indices with a non-singleton dimension {i}"
    for value in (on, off):
        if value.type != "float32" or not value.is_const or len(value.dims) > 1:
            return problem
        if value.dims and value.dims[0] > 1:
            return problem
    return None


def _select(sig: OpSignature) -> str | None:
    if len(sig.inputs) != 3 or len(sig.outputs) != 1:
        return "SELECT expects 3 inputs and 1 output"
    problem = "SELECT condition must be bool or float; if/else the output's shape or a constant scalar"
    cond, then, other = sig.inputs
    if cond.type not in ("bool", *FLOAT):
        return problem
    out = sig.outputs[0].dims
    for what, value in (("if", then), ("else", other)):
        if value.dims and value.dims != out and (len(value.dims) > 1 or value.dims[0] > 1):
            return problem
        # Ported as written: the source rejects a constant 2-D if/else despite its message.
        if value.is_const and len(value.dims) == 2:
            return f"2-D {what} tensor only supported if constant"
    return None


def _slice(sig: OpSignature) -> str | None:
    if len(sig.inputs) < 3:
        return "SLICE requires 3 inputs"
    rank = len(sig.inputs[0].dims)
    return None if rank in (3, 4) else f"SLICE takes 3-D or 4-D tensors only, this one is {rank}-D"


def _softmax(sig: OpSignature) -> str | None:
    return None if sig.option("beta") == 1 else "SOFTMAX with beta != 1 is not supported"


def _strided_slice(sig: OpSignature) -> str | None:
    for key, mask in (
        ("ellipsisMask", "ellipsis"),
        ("newAxisMask", "new_axis"),
        ("shrinkAxisMask", "shrink_axis"),
    ):
        if sig.option(key):
            return f"STRIDED_SLICE does not support {mask}_mask"
    if len(sig.inputs) < 4:
        return "STRIDED_SLICE requires 4 inputs"
    rank = len(sig.inputs[0].dims)
    return None if rank in (3, 4) else f"STRIDED_SLICE takes 3-D or 4-D tensors only, this one is {rank}-D"


def _transpose_conv(sig: OpSignature) -> str | None:
    return _conv_io(sig) or _positive("stride", sig.option("strideH"), sig.option("strideW"))


def _resize_bilinear(sig: OpSignature) -> str | None:
    problem = _io(sig, 1, 1)
    if problem:
        return problem
    if sig.option("alignCorners", False) and sig.option("halfPixelCenters", False):
        return "RESIZE_BILINEAR with both align_corners and half_pixel_centers"
    return None


def _pad(sig: OpSignature) -> str | None:
    if sig.op == "MIRROR_PAD" and sig.option("mode") != schema.MirrorPadMode.REFLECT:
        return "only REFLECT mirror padding is supported"
    problem = _io(sig, 1, 1)
    if problem:
        return problem
    if len(sig.inputs) < 2:
        return "the paddings input is missing"
    dims = sig.inputs[1].dims
    if len(dims) != 2 or dims[0] not in (3, 4) or dims[1] != 2:
        return f"paddings of shape {list(dims)}, expected 4x2 or 3x2"
    return None


def _elementwise_one(sig: OpSignature) -> str | None:
    return _io_consts(sig, 1, 0, 1)


def _elementwise_two(sig: OpSignature) -> str | None:
    return _one_or_two_operands(sig) or _activation(sig.option("fusedActivationFunction"))


def _custom(runtime: int, outputs: int) -> Check:
    return lambda sig: _io(sig, runtime, outputs)


def _weights_present(sig: OpSignature) -> str | None:
    return None if len(sig.inputs) >= 2 else "the weights input is missing"


def _always(sig: OpSignature) -> str | None:
    return None


def _batch_matmul(sig: OpSignature) -> str | None:
    if len(sig.inputs) == 2 and len(sig.outputs) == 1:
        return None
    return f"BATCH_MATMUL expects 2 inputs and 1 output, node has {len(sig.inputs)} and {len(sig.outputs)}"


class Parser(NamedTuple):
    """A GPU parser of model_builder.cc: the highest op version it takes (None: any) and its rule."""

    max_version: int | None
    check: Check


_ONE = ("ABS", "COS", "ELU", "EXP", "FLOOR", "GELU", "LOG", "LOGISTIC", "NEG", "RSQRT", "SIGN", "SIN")
_ONE += ("SQRT", "SQUARE", "TANH")
_TWO = ("DIV", "FLOOR_DIV", "FLOOR_MOD", "LOGICAL_AND", "MAXIMUM", "MINIMUM", "POW", "SQUARED_DIFFERENCE")
_TWO += ("SUB", *LOGICAL)

# NewOperationParser's switch: every op the GPU delegate has a parser for. Anything else falls back.
PARSERS: dict[str, Parser] = {
    **{op: Parser(2, _elementwise_one) for op in _ONE},
    **{op: Parser(2, _elementwise_two) for op in _TWO},
    "ADD": Parser(2, _add),
    "ADD_N": Parser(2, _add_n),
    "MUL": Parser(3, _mul),
    "AVERAGE_POOL_2D": Parser(2, _pooling),
    "MAX_POOL_2D": Parser(2, _pooling),
    "BATCH_MATMUL": Parser(None, _batch_matmul),
    "CAST": Parser(None, _cast),
    "CONCATENATION": Parser(2, _always),
    "CONV_2D": Parser(6, _conv),
    "CUMSUM": Parser(1, _cumsum),
    "DENSIFY": Parser(1, lambda s: _io(s, 0, 1)),
    "DEPTHWISE_CONV_2D": Parser(6, _depthwise),
    "DEPTH_TO_SPACE": Parser(None, _block_size),
    "DEQUANTIZE": Parser(3, _dequantize),
    "FULLY_CONNECTED": Parser(9, _fully_connected),
    "GATHER": Parser(1, _gather),
    "HARD_SWISH": Parser(None, lambda s: _io(s, 1, 1)),
    "LSTM": Parser(4, _lstm),
    "MEAN": Parser(None, _mean),
    "MIRROR_PAD": Parser(2, _pad),
    "PAD": Parser(2, _pad),
    "PADV2": Parser(2, _pad),
    "ONE_HOT": Parser(1, _one_hot),
    "PACK": Parser(None, _always),
    "QUANTIZE": Parser(2, lambda s: _io(s, 1, 1)),
    "REDUCE_MAX": Parser(None, _reduce),
    "REDUCE_MIN": Parser(None, _reduce),
    "REDUCE_PROD": Parser(None, _reduce),
    "SUM": Parser(None, _reduce),
    "RELU": Parser(2, _always),
    "RELU6": Parser(2, _always),
    "RELU_N1_TO_1": Parser(2, _always),
    "LEAKY_RELU": Parser(2, _always),
    "PRELU": Parser(1, _always),
    "RESHAPE": Parser(1, lambda s: _io(s, 1, 1)),
    "RESIZE_BILINEAR": Parser(3, _resize_bilinear),
    "RESIZE_NEAREST_NEIGHBOR": Parser(3, lambda s: _io(s, 1, 1)),
    "SELECT": Parser(1, _select),
    "SELECT_V2": Parser(1, _select),
    "SLICE": Parser(2, _slice),
    "SOFTMAX": Parser(2, _softmax),
    "SPACE_TO_DEPTH": Parser(2, _block_size),
    "SPLIT": Parser(None, _always),
    "SPLIT_V": Parser(None, _always),
    "STRIDED_SLICE": Parser(4, _strided_slice),
    "TILE": Parser(None, lambda s: _io(s, 1, 1)),
    "TRANSPOSE": Parser(4, lambda s: _io(s, 1, 1)),
    "TRANSPOSE_CONV": Parser(3, _transpose_conv),
    "UNPACK": Parser(None, _always),
    "CUSTOM:Convolution2DTransposeBias": Parser(None, _weights_present),
    "CUSTOM:MaxPoolingWithArgmax2D": Parser(None, _custom(1, 2)),
    "CUSTOM:MaxUnpooling2D": Parser(None, _custom(2, 1)),
    "CUSTOM:Resampler": Parser(None, _custom(2, 1)),
}

# GetOpsToReplace: types a non-constant tensor may have beyond float and quantized (inputs, outputs).
_EXTRA_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    **{op: ((), ("bool",)) for op in LOGICAL},
    "CAST": (("bool", "float32", "int32"), ("float32", "int32", "bool")),
    "ONE_HOT": (("int32",), ()),
    "SELECT": (("bool",), ()),
    "SELECT_V2": (("bool",), ()),
    "LOGICAL_AND": (("bool",), ("bool",)),
    "GATHER": (("int32",), ()),
}


def parser_rule(sig: OpSignature) -> str | None:
    """Whether the GPU delegate has a parser for this op at this version (None: it has)."""
    parser = PARSERS.get(sig.op)
    if parser is None:
        kind = "custom op" if sig.op.startswith("CUSTOM:") else "op"
        return f"no GPU kernel for {kind} {sig.op.removeprefix('CUSTOM:')}"
    if parser.max_version is not None and sig.version > parser.max_version:
        return f"{sig.op} version {sig.version}; the GPU delegate takes up to version {parser.max_version}"
    return None


def op_rule(sig: OpSignature) -> str | None:
    """Why the GPU delegate's parser for this node refuses it (None: it takes it), graph aside."""
    problem = parser_rule(sig)
    if problem:
        return problem
    try:
        return PARSERS[sig.op].check(sig)
    except IndexError:  # a node without a tensor its rule reads: refused, not a crash of the report
        return f"{sig.op} lacks an input or output the GPU rules read"


def tensor_rule(sig: OpSignature) -> str | None:
    """IsAllAllowedTensors: no tensor of rank > 4; non-constant tensors of a type the GPU takes."""
    extra_in, extra_out = _EXTRA_TYPES.get(sig.op, ((), ()))
    for side, specs, extra in (("input", sig.inputs, extra_in), ("output", sig.outputs, extra_out)):
        allowed = (*FLOAT, *QUANT, *extra)
        for index, spec in enumerate(specs):
            if spec.type == "none":
                continue
            tensor = f"{side} {index}" + (f" ({spec.name})" if spec.name else "")
            if len(spec.dims) > MAX_RANK:
                return f"{tensor} has rank {len(spec.dims)}; the GPU delegate takes rank <= {MAX_RANK}"
            if not spec.is_const and spec.type not in allowed:
                return f"{tensor} is {spec.type}; the GPU delegate takes {'/'.join(allowed)} here"
    return None


def logical_rule(consumers: Sequence[tuple[str, str]], producers: int) -> str | None:
    """The comparison parser: its bool output must have one producer and one consumer, a CAST or
    SELECT whose output is float. `consumers`: (op, output type) of each node reading the output."""
    if producers != 1 or len(consumers) != 1:
        return "a comparison is only taken when its output feeds exactly one CAST or SELECT"
    op, out_type = consumers[0]
    if op in ("CAST", "SELECT", "SELECT_V2") and out_type in FLOAT:
        return None
    return "a comparison is only taken when it feeds a CAST or SELECT to float"


def bool_cast_rule(input_producers: int, input_consumers: int, output_consumers: int) -> str | None:
    """The CAST parser for bool -> float: its input must come from one node and feed only it, and its
    output must feed exactly one node (a model output is cast on the CPU)."""
    if input_producers != 1 or input_consumers != 1:
        return "CAST from bool is only taken right after the comparison that makes the bool"
    if output_consumers != 1:
        return "CAST from bool is not taken for a model output"
    return None


# --- the model: signatures, partitioning, the report ----------------------------------------------


@dataclass(frozen=True)
class Fallback:
    node: int
    op: str
    rule: str


@dataclass(frozen=True)
class GpuAnalysis:
    nodes: int
    supported: tuple[int, ...]  # nodes that pass every rule
    partitions: tuple[tuple[int, ...], ...]  # GPU partitions of a greedy partitioner, in order
    taken: tuple[int, ...]  # what the delegate takes with its default options
    fallbacks: tuple[Fallback, ...]  # every node left to the CPU by a rule, with that rule
    build_problem: str | None = None  # why building the GPU graph would fail (then `taken` is empty)


def _is_const(model: schema.ModelT, tensor: schema.TensorT) -> bool:
    if tensor.isVariable or not model.buffers or tensor.buffer <= 0 or tensor.buffer >= len(model.buffers):
        return False
    buffer = model.buffers[tensor.buffer]
    return bool(buffer.offset) or (buffer.data is not None and len(buffer.data) > 0)


def _spec(model: schema.ModelT, graph: schema.SubGraphT, index: int) -> TensorSpec:
    if index < 0:
        return TensorSpec("none")
    tensor = graph.tensors[index]
    dims = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else []))
    return TensorSpec(type_name(tensor.type), dims, _is_const(model, tensor), tensor_name(tensor))


def op_signatures(model: schema.ModelT, remap: Mapping[int, int] | None = None) -> list[OpSignature]:
    """The main subgraph's nodes as the delegate sees them; `remap` replaces input tensor ids (the
    constant float16 weights behind a DEQUANTIZE)."""
    graph = model.subgraphs[0]
    remap = remap or {}
    signatures = []
    for op in graph.operators or []:
        inputs = [remap.get(int(i), int(i)) for i in (op.inputs if op.inputs is not None else [])]
        outputs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
        code = model.operatorCodes[op.opcodeIndex]
        signatures.append(
            OpSignature(
                op=op_name(code),
                inputs=tuple(_spec(model, graph, i) for i in inputs),
                outputs=tuple(_spec(model, graph, i) for i in outputs),
                version=int(code.version),
                options=dict(vars(op.builtinOptions)) if op.builtinOptions is not None else {},
            )
        )
    return signatures


def partition(
    inputs: Sequence[Sequence[int]],
    outputs: Sequence[Sequence[int]],
    supported: set[int],
    side_effects: Sequence[bool] = (),
) -> list[tuple[bool, list[int]]]:
    """PartitionGraphIntoIndependentNodeSubsets, greedily: (supported?, nodes) subsets in order.

    Each epoch's kind is set by the first ready node; every ready node of that kind joins it, again
    and again, until none is left; then the next epoch starts. Nodes with side effects stay in their
    original order (a chain of control edges)."""
    count = len(inputs)
    produced = {t for outs in outputs for t in outs if t >= 0}
    tensor_epoch: dict[int, int] = {}
    node_epoch: list[int | None] = [None] * count
    effects = [i for i in range(count) if i < len(side_effects) and side_effects[i]]
    waiting = [0] * count
    after: dict[int, int] = {}
    for before, nxt in zip(effects, effects[1:], strict=False):
        after[before] = nxt
        waiting[nxt] += 1
    subsets: list[tuple[bool, list[int]]] = []
    while True:
        kind: bool | None = None
        nodes: list[int] = []
        epoch = len(subsets)
        progress = True
        while progress:
            progress = False
            for i in range(count):
                if node_epoch[i] is not None or waiting[i]:
                    continue
                if any(t >= 0 and t in produced and t not in tensor_epoch for t in inputs[i]):
                    continue
                if kind is None:
                    kind = i in supported
                if (i in supported) != kind:
                    continue
                node_epoch[i] = epoch
                nodes.append(i)
                tensor_epoch.update((t, epoch) for t in outputs[i] if t >= 0)
                if i in after:
                    waiting[after[i]] -= 1
                progress = True
        if not nodes:
            return subsets
        subsets.append((bool(kind), nodes))


def _side_effects(signatures: Sequence[OpSignature]) -> list[bool]:
    """OpMightHaveSideEffect: a resource tensor in or out, or a control-flow op."""
    return [
        sig.op in SIDE_EFFECT_OPS or any(t.type == "resource" for t in (*sig.inputs, *sig.outputs))
        for sig in signatures
    ]


def analyse(model: schema.ModelT) -> GpuAnalysis:
    """What the GPU delegate, with its default options, would do with the model's main subgraph."""
    graph = model.subgraphs[0]
    ops = graph.operators or []
    plain = op_signatures(model)
    node_in = [[int(t) for t in (op.inputs if op.inputs is not None else [])] for op in ops]
    node_out = [[int(t) for t in (op.outputs if op.outputs is not None else [])] for op in ops]
    # FP16GraphPartitionHelper: DEQUANTIZE of a constant float16 tensor (float16 weights).
    fp16_weights = {
        i
        for i, sig in enumerate(plain)
        if sig.op == "DEQUANTIZE"
        and sig.inputs
        and sig.inputs[0].type == "float16"
        and sig.inputs[0].is_const
    }
    remap = {node_out[i][0]: node_in[i][0] for i in fp16_weights}
    signatures = op_signatures(model, remap) if remap else plain
    producers: dict[int, list[int]] = {}
    consumers: dict[int, list[int]] = {}
    for i in range(len(ops)):
        for t in node_out[i]:
            producers.setdefault(t, []).append(i)
        for t in node_in[i]:
            consumers.setdefault(t, []).append(i)

    def count(table: dict[int, list[int]], tensor: int) -> int:
        return len(table.get(tensor, []))

    def graph_rule(i: int) -> str | None:
        """The parsers' checks that look at neighbouring nodes, then the node's own rules."""
        sig = plain[i]
        if sig.op in LOGICAL and sig.outputs:
            out = node_out[i][0]
            after = [
                (plain[c].op, plain[c].outputs[0].type) for c in consumers.get(out, []) if plain[c].outputs
            ]
            return parser_rule(sig) or logical_rule(after, count(producers, out))
        if (
            sig.op == "CAST"
            and sig.inputs
            and sig.outputs
            and sig.inputs[0].type == "bool"
            and sig.outputs[0].type in FLOAT
        ):
            src, dst = node_in[i][0], node_out[i][0]
            problem = bool_cast_rule(count(producers, src), count(consumers, src), count(consumers, dst))
            if problem:
                return problem
        return op_rule(signatures[i])

    reasons: dict[int, str] = {}
    for i, sig in enumerate(signatures):
        if i in fp16_weights:
            continue
        problem = graph_rule(i) or tensor_rule(sig)
        if problem:
            reasons[i] = problem
    supported = {i for i in range(len(ops)) if i not in reasons and i not in fp16_weights}
    subsets = partition(node_in, node_out, supported, _side_effects(plain))
    partitions = tuple(tuple(nodes) for kind, nodes in subsets if kind)
    if not reasons:
        # Full delegation: one kernel for the whole graph, the float16 DEQUANTIZEs included.
        taken: tuple[int, ...] = tuple(range(len(ops)))
        partitions = (taken,) if taken else ()
    else:
        # GetFirstNLargestPartitions(1): the largest; the float16 DEQUANTIZEs stay on the CPU.
        taken = tuple(sorted(max(partitions, key=len))) if partitions else ()
        for i in fp16_weights:
            reasons[i] = "float16 weights DEQUANTIZE: stays on the CPU when the graph is split"
    fallbacks = tuple(Fallback(i, plain[i].op, reasons[i]) for i in sorted(reasons))
    problem = build_problem([(i, signatures[i]) for i in taken])
    return GpuAnalysis(
        len(ops), tuple(sorted(supported)), partitions, () if problem else taken, fallbacks, problem
    )


def build_problem(nodes: Sequence[tuple[int, OpSignature]]) -> str | None:
    """Why the delegate would fail to build its GPU graph from these nodes: constant int4 weights."""
    for index, sig in nodes:
        for k, spec in enumerate(sig.inputs):
            if spec.is_const and spec.type == "int4":
                return (
                    f"node {index} {sig.op} has constant int4 input {k}, which the GPU delegate cannot read "
                    "(CreateVectorCopyData): building the GPU graph fails and nothing runs on the GPU"
                )
    return None

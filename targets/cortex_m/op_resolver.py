"""What TFLite Micro can run, and the `model_ops.h` resolver that registers exactly a model's ops.

The tables mirror the `Add...()` methods of `tflite::MicroMutableOpResolver`
(tensorflow/lite/micro/micro_mutable_op_resolver.h in TFLite Micro); a builtin op missing here has
no TFLM kernel. TFLM ignores an operator code's version number: what a version adds (a new type,
a new option) is checked by the kernel's Prepare, which `arena.measure` runs on the real model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from edgeport.errors import EdgeportError
from edgeport.tflite_file import TfliteModel, op_name, schema

# BuiltinOperator name -> MicroMutableOpResolver method.
TFLM_BUILTINS: dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "ELU": "AddElu",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MIRROR_PAD": "AddMirrorPad",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll",
    "REDUCE_MAX": "AddReduceMax",
    "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQUEEZE": "AddSqueeze",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "TRANSPOSE": "AddTranspose",
    "UNPACK": "AddUnpack",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile",
    "ZEROS_LIKE": "AddZerosLike",
}

# Custom ops TFLM ships kernels for: custom_code -> MicroMutableOpResolver method.
TFLM_CUSTOM_OPS: dict[str, str] = {
    "CIRCULAR_BUFFER": "AddCircularBuffer",
    "TFLM_DECODE": "AddDecode",
    "SignalDelay": "AddDelay",
    "TFLite_Detection_PostProcess": "AddDetectionPostprocess",
    "SignalEnergy": "AddEnergy",
    "ethos-u": "AddEthosU",
    "SignalFftAutoScale": "AddFftAutoScale",
    "SignalFilterBank": "AddFilterBank",
    "SignalFilterBankLog": "AddFilterBankLog",
    "SignalFilterBankSquareRoot": "AddFilterBankSquareRoot",
    "SignalFilterBankSpectralSubtraction": "AddFilterBankSpectralSubtraction",
    "SignalFramer": "AddFramer",
    "SignalIrfft": "AddIrfft",
    "SignalOverlapAdd": "AddOverlapAdd",
    "SignalPCAN": "AddPCAN",
    "SignalRfft": "AddRfft",
    "SignalStacker": "AddStacker",
    "SignalWindow": "AddWindow",
}

# int8-only kernels (CMSIS-NN builds get the smaller, faster variant; reference builds fall back to the
# generic kernel, so the call always compiles). Value: registration function and the inputs that are
# not int8 by design: index -> required type name, or None for "any type" (shape/permutation inputs).
INT8_KERNELS: dict[str, tuple[str, dict[int, str | None]]] = {
    "ADD": ("Register_ADD_INT8", {}),
    "AVERAGE_POOL_2D": ("Register_AVERAGE_POOL_2D_INT8", {}),
    "BATCH_MATMUL": ("Register_BATCH_MATMUL_INT8", {}),
    "CONV_2D": ("Register_CONV_2D_INT8", {2: "INT32"}),
    "DEPTHWISE_CONV_2D": ("Register_DEPTHWISE_CONV_2D_INT8", {2: "INT32"}),
    "FULLY_CONNECTED": ("Register_FULLY_CONNECTED_INT8", {2: "INT32"}),
    "MAXIMUM": ("Register_MAXIMUM_INT8", {}),
    "MAX_POOL_2D": ("Register_MAX_POOL_2D_INT8", {}),
    "MINIMUM": ("Register_MINIMUM_INT8", {}),
    "MUL": ("Register_MUL_INT8", {}),
    "PAD": ("Register_PAD_INT8", {1: None}),
    "SOFTMAX": ("Register_SOFTMAX_INT8", {}),
    "TRANSPOSE": ("Register_TRANSPOSE_INT8", {1: None}),
    "TRANSPOSE_CONV": ("Register_TRANSPOSE_CONV_INT8", {0: None, 3: "INT32"}),
}

# The TFLM header that declares each int8 registration. micro_mutable_op_resolver.h includes most of
# them, but not pad.h or transpose.h: model_ops.h includes the ones it uses itself.
INT8_KERNEL_HEADERS: dict[str, str] = {
    "ADD": "add.h",
    "AVERAGE_POOL_2D": "pooling.h",
    "BATCH_MATMUL": "batch_matmul.h",
    "CONV_2D": "conv.h",
    "DEPTHWISE_CONV_2D": "depthwise_conv.h",
    "FULLY_CONNECTED": "fully_connected.h",
    "MAXIMUM": "maximum_minimum.h",
    "MAX_POOL_2D": "pooling.h",
    "MINIMUM": "maximum_minimum.h",
    "MUL": "mul.h",
    "PAD": "pad.h",
    "SOFTMAX": "softmax.h",
    "TRANSPOSE": "transpose.h",
    "TRANSPOSE_CONV": "transpose_conv.h",
}

# What to tell the user when an op has no TFLM kernel.
SUGGESTIONS: dict[str, str] = {
    "TOPK_V2": "take the top-k on the host from the full output, or use ARG_MAX for top-1",
    "NON_MAX_SUPPRESSION_V4": "use the TFLite_Detection_PostProcess custom op, which TFLM ships",
    "NON_MAX_SUPPRESSION_V5": "use the TFLite_Detection_PostProcess custom op, which TFLM ships",
    "GELU": "use the tanh approximation built from MUL/ADD/TANH, or HARD_SWISH",
    "RANGE": "precompute the range as a constant before conversion",
    "WHERE": "replace data-dependent shapes with fixed shapes and SELECT_V2",
    "UNIQUE": "move the data-dependent step to the host",
    "ONE_HOT": "precompute the encoding on the host or use GATHER on a constant identity matrix",
}

_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


@dataclass(frozen=True)
class Registration:
    op: str  # builtin name, or the custom code for custom ops
    method: str  # MicroMutableOpResolver method
    kernel: str = ""  # explicit registration passed to the method, e.g. Register_CONV_2D_INT8
    custom: bool = False

    def call(self) -> str:
        arg = f"tflite::{self.kernel}()" if self.kernel else ""
        return f"resolver.{self.method}({arg})"


def supported_ops() -> dict[str, list[str]]:
    """The builtin and custom ops TFLite Micro has kernels for (the target plugin's `supported_ops()`)."""
    return {"builtin": sorted(TFLM_BUILTINS), "custom": sorted(TFLM_CUSTOM_OPS)}


def _suggestion(op: str) -> str:
    if op.startswith("CUSTOM:Flex"):
        return "re-convert with TFLite builtin ops only (no SELECT_TF_OPS); TFLM cannot run TensorFlow ops"
    if op.startswith("CUSTOM:"):
        return (
            f"implement a TFLM kernel for custom op {op.removeprefix('CUSTOM:')!r} and register it with "
            "AddCustom(), or rewrite the model without it"
        )
    return SUGGESTIONS.get(op, "rewrite that part of the model with TFLM-supported ops before conversion")


def check_ops(model: TfliteModel) -> None:
    """Fail, naming op, node and a fix, on the first operator TFLite Micro has no kernel for."""
    for g_index, graph in enumerate(model.raw.subgraphs):
        for node, op in enumerate(graph.operators or []):
            name = op_name(model.raw.operatorCodes[op.opcodeIndex])
            custom = name.removeprefix("CUSTOM:") if name.startswith("CUSTOM:") else None
            if (custom is None and name in TFLM_BUILTINS) or (
                custom is not None and custom in TFLM_CUSTOM_OPS
            ):
                continue
            where = f"node {node}" + (f" of subgraph {g_index}" if g_index else "")
            kind = f"custom op {custom!r}" if custom is not None else f"op {name}"
            version = model.raw.operatorCodes[op.opcodeIndex].version
            raise EdgeportError(
                f"{model.path.name}: {kind} (version {version}, {where}) is not supported by TFLite Micro",
                _suggestion(name),
            )


def _all_int8(model: TfliteModel, name: str, exceptions: dict[int, str | None]) -> bool:
    """True when every instance of builtin `name` has int8 tensors except the listed inputs."""
    seen = False
    for graph in model.raw.subgraphs:
        tensors = graph.tensors or []
        for op in graph.operators or []:
            if op_name(model.raw.operatorCodes[op.opcodeIndex]) != name:
                continue
            seen = True
            for position, t in enumerate(list(op.inputs if op.inputs is not None else [])):
                if t < 0:
                    continue
                want = exceptions.get(position, "INT8")
                if position in exceptions and want is None:
                    continue
                if _TYPE_NAMES.get(tensors[t].type) != want:
                    return False
            for t in op.outputs if op.outputs is not None else []:
                if _TYPE_NAMES.get(tensors[t].type) != "INT8":
                    return False
    return seen


def registrations(model: TfliteModel) -> list[Registration]:
    """One registration per distinct op the model uses, builtins first, in name order (deterministic)."""
    used = Counter(model.ops)
    result: list[Registration] = []
    for name in sorted(n for n in used if not n.startswith("CUSTOM:")):
        kernel = ""
        if name in INT8_KERNELS and _all_int8(model, name, INT8_KERNELS[name][1]):
            kernel = INT8_KERNELS[name][0]
        result.append(Registration(op=name, method=TFLM_BUILTINS[name], kernel=kernel))
    for name in sorted(n.removeprefix("CUSTOM:") for n in used if n.startswith("CUSTOM:")):
        result.append(Registration(op=name, method=TFLM_CUSTOM_OPS[name], custom=True))
    return result


def kernel_includes(regs: list[Registration]) -> list[str]:
    """#include lines for the kernel headers that declare the int8 registrations in `regs`."""
    headers = sorted({INT8_KERNEL_HEADERS[r.op] for r in regs if r.kernel})
    return [f'#include "tensorflow/lite/micro/kernels/{h}"' for h in headers]


def render_model_ops_h(model: TfliteModel, regs: list[Registration], banner: str) -> str:
    """The text of model_ops.h: kModelOpCount, ModelOpResolver and RegisterModelOps()."""
    counts = Counter(model.ops)
    n_builtin = sum(1 for r in regs if not r.custom)
    lines = [
        f"// {banner}",
        f"// Registers exactly the {len(regs)} distinct ops the model uses ({n_builtin} builtin,",
        f"// {len(regs) - n_builtin} custom), so the linker keeps only those kernels.",
        "#ifndef EDGEPORT_MODEL_OPS_H_",
        "#define EDGEPORT_MODEL_OPS_H_",
        "",
        *kernel_includes(regs),
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
        "",
        f"constexpr unsigned int kModelOpCount = {len(regs)};",
        "using ModelOpResolver = tflite::MicroMutableOpResolver<kModelOpCount>;",
        "",
    ]
    customs = [r for r in regs if r.custom]
    if customs:
        lines += [
            "// Custom ops: these are not TFLite builtins. TFLM ships their kernels, but some need extra",
            "// sources in the build (the signal library for Signal*, an Ethos-U NPU build for ethos-u):",
        ]
        lines += [f"//   {r.op} -> {r.method}()" for r in customs]
        if any(r.op == "TFLM_DECODE" for r in customs):
            lines += [
                "// TFLM_DECODE decodes lookup-table-compressed weights into the arena just before the",
                "// op that reads them (kTensorArenaSize includes those buffers). Its kernel is in TFLM's",
                "// default build since October 2025; no USE_TFLM_COMPRESSION define is needed.",
            ]
        lines.append("")
    lines += [
        "// Registers the model's ops. A larger resolver (kCapacity > kModelOpCount) leaves room for",
        "// ops you add yourself.",
        "template <unsigned int kCapacity>",
        "inline TfLiteStatus RegisterModelOps(tflite::MicroMutableOpResolver<kCapacity>& resolver) {",
        '  static_assert(kCapacity >= kModelOpCount, "resolver too small for the model\'s ops");',
    ]
    for reg in regs:
        uses = counts[reg.op if not reg.custom else f"CUSTOM:{reg.op}"]
        note = f"{uses} node{'s' if uses != 1 else ''}"
        if reg.kernel:
            note += ", all int8: int8-only kernel"
        lines.append(f"  if ({reg.call()} != kTfLiteOk) return kTfLiteError;  // {note}")
    lines += ["  return kTfLiteOk;", "}", "", "#endif  // EDGEPORT_MODEL_OPS_H_", ""]
    return "\n".join(lines)

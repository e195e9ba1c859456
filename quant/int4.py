"""w4a8: 4-bit weights, packed two per byte, in a full-integer int8 model.

TFLite Micro's CONV_2D and FULLY_CONNECTED kernels (reference and CMSIS-NN) and LiteRT's take a
filter tensor of type INT4: symmetric per-channel values in [-7, 7], two per byte,
the first element in the low nibble, unpacked into a scratch buffer at run time. The activations
and their calibrated int8 ranges stay as the int8 model has them, so w4a8 is built by rewriting
the weight tensors of the int8 model the TFLite converter made: flash drops by nearly half of the
weight bytes, and everything else (ops, activation parameters, the kernels' int8 arithmetic) is
what the int8 model already proved in LiteRT and TFLite Micro.

Rounding is data-free. Round-to-nearest leaves a per-output-channel sum of rounding errors that
grows with the fan-in and shifts every output of the channel; SQuant (Guo et al., ICLR 2022)
flips individual roundings up or down so that the error summed over every kernel (one output
channel x one input channel) and over every output channel is at most half a step, using the
weights alone. Measured on CIFAR-10 (ResNet-20, 4-bit weights everywhere, float activations):
nearest 78.6 %, SQuant 81.4 %, float 81.4 % (bench/quant_accuracy.py has the full-integer rows).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.tflite_file import edit_tflite, op_name, parse_tflite, schema, serialize_tflite, tensor_name

INT4_MAX = 7  # symmetric [-7, 7], like int8's [-127, 127]: the -8 code is never used
ROUNDINGS = ("squant", "nearest")
# op name -> (filter input index, output-channel axis of the filter); kernel = the remaining spatial
# axes for one output and one input channel.
WEIGHT_OPS = {"CONV_2D": (1, 0), "DEPTHWISE_CONV_2D": (1, 3), "FULLY_CONNECTED": (1, 0)}
# The ops whose filters w4a8 stores as int4. DEPTHWISE_CONV_2D keeps int8 filters: TFLite Micro's
# int4 depthwise kernel matches the reference on the host and on Cortex-M4 (CMSIS-NN, QEMU), but
# CMSIS-NN's Helium (Cortex-M55) int4 depthwise path failed the firmware self-test in QEMU
# mps3-an547 (each layer made int4 alone: only the depthwise one failed), and a depthwise kernel
# has only 9 weights per channel to balance 4-bit rounding over, for a small share of a network's
# weights (counted: 5.4 % of the VWW MobileNet's, 10.5 % of MLPerf KWS DS-CNN's).
FOUR_BIT_OPS = ("CONV_2D", "FULLY_CONNECTED")
# TFLite Micro's FULLY_CONNECTED takes an int4 filter only with one scale for the whole tensor (its
# per-channel path refuses INT4), so an int4 dense layer is quantized per tensor.
PER_TENSOR_INT4_OPS = ("FULLY_CONNECTED",)


@dataclass
class WeightLayer:
    """One op whose filter can be stored as int4."""

    op_index: int
    op: str
    name: str  # the filter tensor's name
    tensor: int
    bias: int | None
    input: int  # the activation the filter multiplies
    shape: tuple[int, ...]
    int8_bytes: int

    @property
    def int4_bytes(self) -> int:
        return (int(np.prod(self.shape)) + 1) // 2


def _op_name(model: schema.ModelT, op: schema.OperatorT) -> str:
    return op_name(model.operatorCodes[op.opcodeIndex])


def weight_layers(model: schema.ModelT, dtype: int = schema.TensorType.INT8) -> list[WeightLayer]:
    """The constant filters of type `dtype` (int8 by default) of the main subgraph's ops that w4a8
    stores as int4, in op order."""
    graph = model.subgraphs[0]
    layers = []
    for index, op in enumerate(graph.operators):
        kind = _op_name(model, op)
        if kind not in FOUR_BIT_OPS:
            continue
        filter_index = int(op.inputs[WEIGHT_OPS[kind][0]])
        tensor = graph.tensors[filter_index]
        data = model.buffers[tensor.buffer].data
        if tensor.type != dtype or data is None or len(data) == 0:
            continue
        bias = int(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        layers.append(
            WeightLayer(
                op_index=index,
                op=kind,
                name=tensor_name(tensor),
                tensor=filter_index,
                bias=bias,
                input=int(op.inputs[0]),
                shape=tuple(int(d) for d in tensor.shape),
                int8_bytes=len(data),
            )
        )
    return layers


# ---- rounding ---------------------------------------------------------------------------------


def _as_kernels(w: np.ndarray, op: str) -> np.ndarray:
    """Filter -> [output channel, input channel, kernel elements] (the axes SQuant balances over)."""
    if op == "CONV_2D":  # [O, H, W, I]
        return w.transpose(0, 3, 1, 2).reshape(w.shape[0], w.shape[3], -1)
    if op == "DEPTHWISE_CONV_2D":  # [1, H, W, C]: one kernel per channel
        return w.reshape(-1, w.shape[3]).T.reshape(w.shape[3], 1, -1)
    return w.reshape(w.shape[0], 1, -1)  # FULLY_CONNECTED [O, I]: one kernel spanning the inputs


def _from_kernels(k: np.ndarray, op: str, shape: tuple[int, ...]) -> np.ndarray:
    if op == "CONV_2D":
        o, h, w, i = shape
        return k.reshape(o, i, h, w).transpose(0, 2, 3, 1)
    if op == "DEPTHWISE_CONV_2D":
        return k.reshape(shape[3], -1).T.reshape(shape)
    return k.reshape(shape)


def _flip_elements(x: np.ndarray, q: np.ndarray, movable: np.ndarray, qmax: int) -> np.ndarray:
    """Per row of [..., n]: flip round(sum(x - q)) roundings, those nearest the other way, so the
    row's summed error is at most half a step. Returns which elements were flipped."""
    err = x - q
    need = np.rint(err.sum(-1, keepdims=True))
    up_score = np.where(movable & (q < qmax), err, -np.inf)
    down_score = np.where(movable & (q > -qmax), -err, -np.inf)
    up_rank = np.argsort(np.argsort(-up_score, axis=-1, kind="stable"), axis=-1, kind="stable")
    down_rank = np.argsort(np.argsort(-down_score, axis=-1, kind="stable"), axis=-1, kind="stable")
    up = (up_rank < need) & np.isfinite(up_score)
    down = (down_rank < -need) & np.isfinite(down_score)
    q += up.astype(q.dtype) - down.astype(q.dtype)
    return up | down


def squant_round(x: np.ndarray, qmax: int = INT4_MAX) -> np.ndarray:
    """SQuant rounding of scaled weights `x` [channels, kernels, elements] to integers in [-qmax, qmax].

    E: round to nearest. K: within each kernel, flip roundings until the kernel's summed error is
    within half a step. C: within each output channel, flip one more element (the one nearest the
    other way, never one flipped already) in the kernels whose remaining error points the way the
    channel's total needs, until the channel's summed error is within half a step.
    """
    q = np.clip(np.rint(x), -qmax, qmax)
    flipped = _flip_elements(x, q, np.ones(q.shape, bool), qmax)
    # C: candidates are one element per kernel; the kernel's residual decides which kernels flip.
    err = x - q
    movable = ~flipped
    kernel_err = err.sum(-1)  # [C, K]
    need = np.rint(kernel_err.sum(-1, keepdims=True))  # [C, 1]
    for direction in (1, -1):
        room = (q < qmax) if direction > 0 else (q > -qmax)
        score = np.where(movable & room, direction * err, -np.inf)
        best = np.argmax(score, axis=-1)  # the element to flip in each kernel
        has = np.isfinite(np.take_along_axis(score, best[..., None], -1)[..., 0])
        kscore = np.where(has, direction * kernel_err, -np.inf)
        rank = np.argsort(np.argsort(-kscore, axis=-1, kind="stable"), axis=-1, kind="stable")
        chosen = (rank < direction * need) & np.isfinite(kscore)
        c, k = np.nonzero(chosen)
        q[c, k, best[c, k]] += direction
    return q


def quantize_int4(
    w: np.ndarray, op: str, rounding: str = "squant", per_tensor: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Float filter -> (int4 values as int8 in the filter's layout, scales: one per output channel,
    or a single one with `per_tensor`)."""
    kernels = _as_kernels(np.asarray(w, np.float64), op)
    scale = np.abs(kernels).reshape(kernels.shape[0], -1).max(1)
    if per_tensor:
        scale = np.full_like(scale, scale.max())
    scale = np.where(scale > 0, scale / INT4_MAX, 1.0)
    x = kernels / scale[:, None, None]
    if rounding == "squant":
        q = squant_round(x)
    elif rounding == "nearest":
        q = np.clip(np.rint(x), -INT4_MAX, INT4_MAX)
    else:
        raise ValueError(f"unknown rounding {rounding!r}")
    values = _from_kernels(q, op, tuple(w.shape)).astype(np.int8)
    return values, (scale[:1] if per_tensor else scale).astype(np.float32)


def pack_int4(values: np.ndarray) -> bytes:
    """Two 4-bit two's-complement values per byte, element 2i in the low nibble (TFLite's order)."""
    flat = np.asarray(values, np.int8).reshape(-1)
    if flat.size % 2:
        flat = np.append(flat, np.int8(0))
    low = flat[0::2].astype(np.uint8) & 0x0F
    high = (flat[1::2].astype(np.uint8) & 0x0F) << 4
    return (low | high).astype(np.uint8).tobytes()


def unpack_int4(data: bytes, count: int) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    low = (raw << 4).astype(np.int8) >> 4
    high = raw.astype(np.int8) >> 4
    return np.stack([low, high], -1).reshape(-1)[:count]


# ---- the model rewrite ------------------------------------------------------------------------


def _float_filters(float_model: schema.ModelT, layers: list[WeightLayer]) -> list[np.ndarray]:
    """The float filter of each int8 layer, from the float .tflite built from the same Keras model.

    Matched by op order among the weight ops with the same filter shape (the int8 and float models
    come from one Keras model, so the ops appear in the same order).
    """
    found = weight_layers(float_model, schema.TensorType.FLOAT32)
    if [(f.op, f.shape) for f in found] != [(layer.op, layer.shape) for layer in layers]:
        raise EdgeportError(
            "the float and int8 models do not have the same weight layers",
            "report this model: w4a8 needs the float filters of the int8 model's layers",
        )
    buffers = float_model.buffers
    graph = float_model.subgraphs[0]
    return [
        np.frombuffer(bytes(buffers[graph.tensors[f.tensor].buffer].data), np.float32).reshape(f.shape)
        for f in found
    ]


@dataclass
class Int4Layer:
    name: str
    op: str
    int8_bytes: int
    int4_bytes: int
    weight_sqnr_db: float


def to_w4a8(
    int8_model: bytes,
    float_model: bytes,
    four_bit: Iterable[str] | None = None,
    rounding: str = "squant",
) -> tuple[bytes, list[Int4Layer]]:
    """Store the filters named in `four_bit` (all weight layers when None) as packed int4.

    The float filters come from `float_model`; each layer's int32 bias is requantized to the new
    weight scale (bias scale = input scale x weight scale), so the bias itself is unchanged.
    """
    model = edit_tflite(int8_model)
    layers = weight_layers(model)
    floats = _float_filters(parse_tflite(float_model).raw, layers)
    wanted = None if four_bit is None else set(four_bit)
    if wanted is not None and (unknown := wanted - {layer.name for layer in layers}):
        raise ValueError(f"no int8 weight layer named {sorted(unknown)}")
    graph = model.subgraphs[0]
    done = []
    for layer, w in zip(layers, floats, strict=True):
        if wanted is not None and layer.name not in wanted:
            continue
        q, scale = quantize_int4(w, layer.op, rounding, per_tensor=layer.op in PER_TENSOR_INT4_OPS)
        tensor = graph.tensors[layer.tensor]
        axis = WEIGHT_OPS[layer.op][1]
        tensor.type = schema.TensorType.INT4
        tensor.quantization.scale = [float(s) for s in scale]
        tensor.quantization.zeroPoint = [0] * len(scale)
        tensor.quantization.quantizedDimension = axis
        _own_buffer(model, tensor).data = np.frombuffer(pack_int4(q), np.uint8)
        if layer.bias is not None:
            input_scale = float(np.atleast_1d(graph.tensors[layer.input].quantization.scale)[0])
            _rescale_bias(model, layer.bias, scale, input_scale)
        shape = [1] * w.ndim
        shape[axis] = -1
        error = w - q.astype(np.float64) * (scale if scale.size == 1 else scale.reshape(shape))
        done.append(
            Int4Layer(
                name=layer.name,
                op=layer.op,
                int8_bytes=layer.int8_bytes,
                int4_bytes=layer.int4_bytes,
                weight_sqnr_db=round(float(10 * np.log10(np.sum(w**2) / max(np.sum(error**2), 1e-30))), 2),
            )
        )
    return serialize_tflite(model), done


def _own_buffer(model: schema.ModelT, tensor: schema.TensorT) -> schema.BufferT:
    """The tensor's buffer, copied first if another tensor reads it too: the TFLite converter
    shares identical constant buffers, and rewriting one layer's filter or bias must not change
    another layer that keeps its int8 filter (mixed 4/8-bit) or its old bias scale."""
    readers = sum(t.buffer == tensor.buffer for graph in model.subgraphs for t in graph.tensors)
    if readers > 1:
        copy = schema.BufferT()
        copy.data = model.buffers[tensor.buffer].data
        model.buffers.append(copy)
        tensor.buffer = len(model.buffers) - 1
    return model.buffers[tensor.buffer]


def _rescale_bias(model: schema.ModelT, index: int, new: np.ndarray, input_scale: float) -> None:
    """int32 bias quantized with input scale x old weight scale -> same value at the new scale.

    The new bias scale is the float32 product input scale x weight scale, as the TFLite converter
    writes it: kernels check it against that product, and LiteRT and TFLite Micro round their
    requantization multipliers identically only when it is exactly that.
    """
    tensor = model.subgraphs[0].tensors[index]
    data = model.buffers[tensor.buffer].data
    if tensor.type != schema.TensorType.INT32 or data is None or len(data) == 0:
        return
    buffer = _own_buffer(model, tensor)
    values = np.frombuffer(bytes(buffer.data), np.int32).astype(np.float64)
    bias_scale = np.asarray(tensor.quantization.scale, np.float64)
    # one value when the filter became per-tensor
    new_scale = (np.float32(input_scale) * np.asarray(new, np.float32)).astype(np.float64)
    requantized = np.clip(np.rint(values * bias_scale / new_scale), -(2**31), 2**31 - 1).astype(np.int32)
    buffer.data = np.frombuffer(requantized.tobytes(), np.uint8)
    tensor.quantization.scale = [float(s) for s in new_scale]
    tensor.quantization.zeroPoint = [0] * len(new_scale)

"""The calibrate-only TFLite model (float, each activation's recorded min/max), as the rewrites that run on
it before the quantizer reads it see it: its recorded ranges, and new tensors and operators.

One set of helpers for every such rewrite (quant/tflm_gelu.py, quant/a16w8.py's `int16_ready`), on the
object tree of edgeport.tflite_file's schema (`edit_tflite`, then `serialize_tflite`). Imports nothing
from quant/, so every quant module can import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeport.tflite_file import builtin_code, parse_tflite, schema, set_builtin_code

Range = tuple[float, float]


def recorded_range(tensor: schema.TensorT) -> Range | None:
    """The (min, max) the calibrator recorded for `tensor`; None if it has none (a constant) or one per
    channel."""
    q = tensor.quantization
    if q is None or q.min is None or q.max is None or len(q.min) != 1 or len(q.max) != 1:
        return None
    return float(q.min[0]), float(q.max[0])


def recorded_ranges(calibrated: bytes) -> dict[int, Range]:
    """Tensor index -> (min, max) the calibrator recorded, main subgraph."""
    graph = parse_tflite(calibrated).raw.subgraphs[0]
    return {i: r for i, tensor in enumerate(graph.tensors) if (r := recorded_range(tensor)) is not None}


def set_recorded_range(tensor: schema.TensorT, value_range: Range) -> None:
    """Give `tensor` the recorded (min, max) the quantizer reads (a QuantizationParameters if it has none)."""
    if tensor.quantization is None:
        tensor.quantization = schema.QuantizationParametersT()
    tensor.quantization.min = np.array([value_range[0]], np.float32)
    tensor.quantization.max = np.array([value_range[1]], np.float32)


def _add_buffer(model: schema.ModelT, data: bytes = b"") -> int:
    entry = schema.BufferT()
    if data:
        entry.data = np.frombuffer(data, np.uint8).copy()
    model.buffers.append(entry)
    return len(model.buffers) - 1


def add_activation(
    model: schema.ModelT, graph: schema.SubGraphT, name: str, like: int, recorded: Range | None
) -> int:
    """A new float32 activation of tensor `like`'s shape, with `recorded` as its recorded range; its index."""
    source = graph.tensors[like]
    tensor = schema.TensorT()
    tensor.name, tensor.type = name.encode(), schema.TensorType.FLOAT32
    tensor.shape = np.array(source.shape, np.int32)
    if source.shapeSignature is not None:
        tensor.shapeSignature = np.array(source.shapeSignature, np.int32)
    tensor.buffer = _add_buffer(model)
    if recorded is not None:
        set_recorded_range(tensor, recorded)
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def add_scalar(
    model: schema.ModelT, graph: schema.SubGraphT, name: str, value: float, recorded: Range | None = None
) -> int:
    """A new float32 scalar constant (shape []), with `recorded` as its recorded range; its index."""
    tensor = schema.TensorT()
    tensor.name, tensor.type = name.encode(), schema.TensorType.FLOAT32
    tensor.shape = np.array([], np.int32)
    tensor.buffer = _add_buffer(model, np.float32(value).tobytes())
    if recorded is not None:
        set_recorded_range(tensor, recorded)
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def opcode_index(model: schema.ModelT, builtin: int) -> int:
    """The index of `builtin`'s operator code in `model`, added (version 1) when the model has none."""
    for i, code in enumerate(model.operatorCodes):
        if builtin_code(code) == builtin:
            return i
    code = schema.OperatorCodeT()
    set_builtin_code(code, builtin)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def new_operator(
    model: schema.ModelT,
    builtin: int,
    inputs: Sequence[int],
    output: int,
    options: tuple[int, Any] | None = None,
) -> schema.OperatorT:
    """A new operator (not yet in any graph): `options` = (BuiltinOptions type, options object)."""
    op = schema.OperatorT()
    op.opcodeIndex = opcode_index(model, builtin)
    op.inputs = np.array(inputs, np.int32)
    op.outputs = np.array([output], np.int32)
    if options is not None:
        op.builtinOptionsType, op.builtinOptions = options
    return op


def drop_unused_codes(model: schema.ModelT) -> None:
    """Remove the operator codes no operator uses, renumbering the operators' indices: a rewrite that
    replaced every op of a kind leaves its code behind, and TensorFlow's calibration wrapper (a16w8's
    quantizer) refuses a code its resolver lacks (HARD_SWISH, GELU) even when no op reads it."""
    used = sorted({int(op.opcodeIndex) for graph in model.subgraphs for op in graph.operators})
    renumber = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for graph in model.subgraphs:
        for op in graph.operators:
            op.opcodeIndex = renumber[int(op.opcodeIndex)]

"""Store clustered int8 weights in TensorFlow Lite Micro's lookup-table (LUT) format, and read them back.

TFLite Micro's compressor (`tflite_micro.tensorflow.lite.micro.compression`, the one shipped in the
tflite-micro package) rewrites each listed constant as packed k-bit indices (big-endian bit order,
padded to a byte) plus an ancillary tensor: a 16-byte header (byte 0 decode type 0 = LUT, byte 1
version 1, byte 4 LUT version 1, byte 5 bits 2-0 index width, bits 7-4 table axis in newer versions,
byte 6 entries per table) followed by the value tables, one per channel. It inserts a custom
TFLM_DECODE operator before every consumer, which decodes the weights into an arena buffer that lives
only for the next operator. No compile-time flag is involved (USE_TFLM_COMPRESSION is for the older
COMPRESSION_METADATA scheme, which this module never emits); the DECODE kernel is in TFLite Micro's
default sources and the tflite-micro Python interpreter runs it.

Which weights: those of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED whose tables (per channel along
the quantized dimension, or one for a per-tensor-quantized weight, quant/cluster.py says why) hold
at most 2**MAX_INDEX_BITS values, and only where the stored bytes shrink by more than the decode
operator and its tensors cost in the flatbuffer.

Three repairs around the tool (tflite-micro 0.dev20261023), each measured:
- Operator codes that keep the op only in the deprecated field (older converters, e.g. MLPerf Tiny's
  models) are read by the tool as ADD; it then merged every op into one code and the model failed in
  TFLM ("Node SOFTMAX failed to prepare"). The input's codes are normalized first (TFLite's rule:
  the larger field names the op).
- The rewritten index tensor keeps the weight's per-channel quantization (the tool's `quantization =
  None` leaves the flatbuffer's copy in place): 12 bytes per channel of dead data per tensor, which
  on the MLPerf keyword-spotting model made the compressed file larger than the original. The DECODE
  kernel reads the quantization of its output only, so it is dropped from index and table tensors.
- The DECODE operator code gets deprecated_builtin_code 32 (CUSTOM), as TFLite writes it, not 0 (ADD).
The model is then re-aligned with the package's own flatbuffer aligner, as the tool itself does.

Every compressed model is read back with `read_lut_weights` (an independent reader of the format
above, following the TFLM kernel's rules for channels) and compared bit for bit with the input's
weights before it is returned.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.quant.cluster import weight_tables
from edgeport.tempdirs import tempdir
from edgeport.tflite_file import (
    builtin_code,
    edit_tflite,
    op_name,
    parse_tflite,
    schema,
    serialize_tflite,
    set_builtin_code,
    tensor_name,
)

DECODE_OP = "TFLM_DECODE"
MAX_INDEX_BITS = 7  # the header's 3-bit width field; tables of up to 128 entries
HEADER_BYTES = 16  # DECODE common metadata
LUT_DECODE_TYPE = 0
# What one DECODE costs in the flatbuffer beyond indices and tables, measured on ResNet-20 and MLPerf
# Tiny keyword spotting (163-170 bytes per compressed tensor): the operator, the decoded and the table
# tensors and their vtables, plus the two new names (the weight's name + "_decoded" / "_ancillary").
# The quantization moves from the weight to the decoded tensor, so it costs nothing extra.
DECODE_OVERHEAD_BYTES = 112
NAME_SUFFIX_BYTES = len("_decoded") + len("_ancillary")


@dataclass(frozen=True)
class LutTensor:
    """One weight tensor as TFLite Micro's LUT compression stores it."""

    index: int  # tensor index in subgraph 0 of the uncompressed model
    name: str
    axis: int | None  # axis of the per-channel tables, None for one table
    channels: int
    values: int  # entries per table (the most distinct values in any channel)
    index_bits: int
    raw_bytes: int  # int8 weights as stored uncompressed
    index_bytes: int  # packed indices
    table_bytes: int  # header + value tables
    overhead_bytes: int  # estimate: decode operator and tensors in the flatbuffer

    @property
    def saved_bytes(self) -> int:
        """Expected file size reduction: raw weights minus what replaces them (estimate, see overhead)."""
        return self.raw_bytes - self.index_bytes - self.table_bytes - self.overhead_bytes

    def to_dict(self) -> dict:
        return {
            "tensor": self.name,
            "axis": self.axis,
            "channels": self.channels,
            "values": self.values,
            "index_bits": self.index_bits,
            "raw_bytes": self.raw_bytes,
            "index_bytes": self.index_bytes,
            "table_bytes": self.table_bytes,
        }


def lut_plan(model: bytes, max_index_bits: int = MAX_INDEX_BITS, name: str = "model") -> list[LutTensor]:
    """The weight tensors compress_lut compresses, with their sizes: clustered weights (at most
    2**max_index_bits values per table) whose compressed form is smaller, overhead included."""
    if not 1 <= max_index_bits <= MAX_INDEX_BITS:
        raise ValueError(f"max_index_bits must be 1..{MAX_INDEX_BITS}")
    data = bytes(model)
    plan: list[LutTensor] = []
    for weight in weight_tables(data, parse_tflite(data, name).raw):
        # A buffer several tensors read (the converter merges identical constants) is left alone: the
        # tool compresses it only if every alias is listed, and it saves the bytes once.
        if len(weight.tensors) > 1:
            continue
        values = max(len(np.unique(r)) for r in weight.rows)
        bits = max(1, math.ceil(math.log2(values)))
        if bits > max_index_bits:
            continue
        text = tensor_name(weight.tensor)
        channels, length = weight.rows.shape[0], weight.span[1]
        entry = LutTensor(
            index=weight.tensors[0],
            name=text,
            axis=weight.axis,
            channels=channels,
            values=values,
            index_bits=bits,
            raw_bytes=length,
            index_bytes=(length * bits + 7) // 8,
            table_bytes=HEADER_BYTES + channels * values,
            overhead_bytes=DECODE_OVERHEAD_BYTES + 2 * len(text) + NAME_SUFFIX_BYTES,
        )
        if entry.saved_bytes > 0:
            plan.append(entry)
    return plan


def _normalized_codes(data: bytes) -> bytes:
    """The model with every operator code's op in both fields (see the module doc, first repair)."""
    model = edit_tflite(data)
    changed = False
    for code in model.operatorCodes or []:
        written = (code.builtinCode, code.deprecatedBuiltinCode)
        set_builtin_code(code, builtin_code(code))
        changed |= (code.builtinCode, code.deprecatedBuiltinCode) != written
    return serialize_tflite(model) if changed else data


def _aligned(data: bytes) -> bytes:
    """Buffers 16-byte aligned: Python's flatbuffers ignores the schema's force_align, the C++ aligner
    in the tflite-micro package does not (the compressor uses the same one)."""
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    with tempdir("lut") as tmp:
        src, dst = Path(tmp) / "in.tflite", Path(tmp) / "out.tflite"
        src.write_bytes(data)
        tflite_flatbuffer_align_wrapper.align_tflite_model(os.fspath(src), os.fspath(dst))
        return dst.read_bytes()


def _tidy(data: bytes) -> bytes:
    """The second and third repairs of the module doc."""
    model = edit_tflite(data)
    for code in model.operatorCodes or []:
        set_builtin_code(code, builtin_code(code))
    for graph in model.subgraphs:
        for op in graph.operators or []:
            if op_name(model.operatorCodes[op.opcodeIndex]) == f"CUSTOM:{DECODE_OP}":
                for t in op.inputs:
                    graph.tensors[t].quantization = None
    return _aligned(serialize_tflite(model))


def compress_lut(model: bytes, max_index_bits: int = MAX_INDEX_BITS, name: str = "model") -> bytes:
    """A clustered int8 model with its weights stored as TFLite Micro LUT indices and DECODE operators.

    Compresses what `lut_plan` lists; raises EdgeportError when nothing qualifies (the weights are not
    clustered: run quant.cluster.cluster_weights first). The result is verified by reading every
    compressed tensor back and comparing it bit for bit with the input's weights.
    """
    from tflite_micro.tensorflow.lite.micro.compression import compress, spec

    plan = lut_plan(model, max_index_bits, name)
    if not plan:
        raise EdgeportError(
            f"{name} has no weights with at most {2**max_index_bits} values per channel whose lookup-table "
            "form is smaller",
            "cluster the weights first (edgeport.quant.cluster.cluster_weights)",
        )
    specs = [
        spec.Tensor(
            subgraph=0,
            tensor=entry.index,
            compression=[
                spec.LookUpTableCompression(
                    index_bitwidth=entry.index_bits,
                    mode=spec.PerTensor() if entry.axis is None else spec.PerChannel(axis=entry.axis),
                )
            ],
        )
        for entry in plan
    ]
    # The tool warns (Python warnings and plain prints) about sizes and widths this plan already chose.
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        packed = bytes(compress(_normalized_codes(bytes(model)), specs))
    result = _tidy(packed)
    _check_round_trip(bytes(model), result, plan, name)
    return result


def _unpack_indices(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """`count` big-endian `bits`-wide unsigned indices from packed bytes."""
    stream = np.unpackbits(data.astype(np.uint8))[: count * bits].reshape(count, bits)
    return stream.astype(np.int64) @ (1 << np.arange(bits - 1, -1, -1))


def read_lut_weights(model: bytes) -> dict[int, np.ndarray]:
    """Decode every LUT-compressed tensor of a model: output tensor index of its DECODE -> values.

    Written from the format (module doc) and TFLite Micro's decode_state_lut.cc, not from the
    compressor: the channel count comes from the decoded tensor's quantization (one table if it has
    one scale), channels run along axis 0, or along the last axis when that is the quantized dimension.
    """
    raw = parse_tflite(bytes(model)).raw
    graph = raw.subgraphs[0]
    decoded: dict[int, np.ndarray] = {}
    for op in graph.operators or []:
        if op_name(raw.operatorCodes[op.opcodeIndex]) != f"CUSTOM:{DECODE_OP}":
            continue
        for k, out_index in enumerate(op.outputs):
            encoded, ancillary = (graph.tensors[op.inputs[2 * k + j]] for j in (0, 1))
            out = graph.tensors[out_index]
            indices = np.asarray(raw.buffers[encoded.buffer].data, dtype=np.uint8)
            header = np.asarray(raw.buffers[ancillary.buffer].data, dtype=np.uint8)
            if header[0] != LUT_DECODE_TYPE or header[1] != 1 or header[4] != 1:
                raise ValueError(f"DECODE output {out_index}: not a version-1 LUT header")
            bits, stride = int(header[5]) & 0x07, int(header[6])
            if out.type != schema.TensorType.INT8:
                raise ValueError(f"DECODE output {out_index}: only int8 tables are read here")
            tables = header[HEADER_BYTES:].view(np.int8)
            shape = [int(d) for d in out.shape]
            count = int(np.prod(shape, dtype=np.int64))
            index = _unpack_indices(indices, bits, count)
            q = out.quantization
            channels = len(np.atleast_1d(q.scale)) if q is not None and q.scale is not None else 1
            axis = int(q.quantizedDimension) if channels > 1 else 0
            if channels > 1 and axis == len(shape) - 1:
                channel = np.arange(count) % channels
            elif channels > 1 and axis == 0:
                channel = np.arange(count) // (count // channels)
            elif channels > 1:
                raise ValueError(f"DECODE output {out_index}: tables along axis {axis} are not supported")
            else:
                channel = np.zeros(count, dtype=np.int64)
            decoded[int(out_index)] = tables[channel * stride + index].reshape(shape)
    return decoded


def _weights_by_op(model: bytes) -> list[list[np.ndarray | None]]:
    """Per non-DECODE operator (in order), the int8 data of each input, or None where it has none."""
    raw = parse_tflite(model).raw
    graph = raw.subgraphs[0]
    result = []
    for op in graph.operators or []:
        if op_name(raw.operatorCodes[op.opcodeIndex]) == f"CUSTOM:{DECODE_OP}":
            continue
        row: list[np.ndarray | None] = []
        for t in op.inputs if op.inputs is not None else []:
            data = raw.buffers[graph.tensors[t].buffer].data if t >= 0 else None
            row.append(None if data is None or len(data) == 0 else np.asarray(data, np.uint8).view(np.int8))
        result.append(row)
    return result


def _check_round_trip(original: bytes, compressed: bytes, plan: list[LutTensor], name: str) -> None:
    """Every operator input of `compressed` equals `original`'s bit for bit, decoding the LUT tensors."""
    decoded = read_lut_weights(compressed)
    raw = parse_tflite(compressed).raw
    graph = raw.subgraphs[0]
    before = _weights_by_op(original)
    ops = [
        op for op in graph.operators if op_name(raw.operatorCodes[op.opcodeIndex]) != f"CUSTOM:{DECODE_OP}"
    ]
    if len(ops) != len(before) or len(decoded) < len(plan):
        raise RuntimeError(f"{name}: LUT compression changed the operator list")
    for op_index, (op, inputs) in enumerate(zip(ops, before, strict=True)):
        for position, t in enumerate(op.inputs if op.inputs is not None else []):
            if t in decoded:
                got = decoded[t].ravel()
            else:
                data = raw.buffers[graph.tensors[t].buffer].data if t >= 0 else None
                got = None if data is None or len(data) == 0 else np.asarray(data, np.uint8).view(np.int8)
            want = inputs[position]
            if (got is None) != (want is None) or (got is not None and not np.array_equal(got, want)):
                raise RuntimeError(
                    f"{name}: LUT compression did not round-trip input {position} of operator {op_index}"
                )

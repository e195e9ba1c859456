"""Read a .tflite flatbuffer through the generated schema bindings (the single source of truth).

Used by every stage that reports on a .tflite: op counts for the converter and the benchmark,
I/O tensors for the manifest, the op set for the Cortex-M resolver.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from edgeport.errors import EdgeportError
from edgeport.manifest import Quantization, TensorInfo

_BUILTIN_NAMES = {
    value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")
}
_TYPE_NAMES = {
    value: name.lower() for name, value in vars(schema.TensorType).items() if not name.startswith("_")
}


def type_name(code: int) -> str:
    """The lower-case name of a TFLite tensor type code ("int8"), or the code itself if unknown."""
    return _TYPE_NAMES.get(code, str(code))


@dataclass
class TfliteModel:
    path: Path
    size_bytes: int
    ops: list[str]  # builtin op name per operator, in execution order (subgraph 0 first)
    op_versions: dict[str, int]
    custom_ops: list[str]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    subgraphs: int
    raw: schema.ModelT = field(repr=False)  # shared between parses of the same bytes: read only

    @property
    def op_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.ops).items()))


# deprecated_builtin_code is a byte: TFLite writes codes above it in builtin_code only, with this value
# (PLACEHOLDER_FOR_GREATER_OP_CODES) in the old field; files from older converters fill the old field only.
PLACEHOLDER_FOR_GREATER_OP_CODES = 127


def builtin_code(op_code: schema.OperatorCodeT) -> int:
    """The operator code's BuiltinOperator value, from whichever field holds it (TFLite's own rule)."""
    return max(op_code.builtinCode, op_code.deprecatedBuiltinCode)


def set_builtin_code(op_code: schema.OperatorCodeT, builtin: int) -> None:
    """Write `builtin` into the operator code as TFLite writes it: in both fields, the placeholder in the
    old one above 127."""
    op_code.builtinCode = builtin
    op_code.deprecatedBuiltinCode = min(builtin, PLACEHOLDER_FOR_GREATER_OP_CODES)


def op_name(op_code: schema.OperatorCodeT) -> str:
    code = builtin_code(op_code)
    name = _BUILTIN_NAMES.get(code, f"BUILTIN_{code}")
    if name == "CUSTOM":
        return f"CUSTOM:{flatbuffer_text(op_code.customCode)}"
    return name


def flatbuffer_text(value: bytes | str | None) -> str:
    """A string field of the object tree as text: the parser gives bytes, a tree built in Python may hold
    str, and an absent field is None ("")."""
    return value.decode() if isinstance(value, bytes) else str(value or "")


def tensor_name(tensor: schema.TensorT) -> str:
    return flatbuffer_text(tensor.name)


def _tensor_info(tensor: schema.TensorT) -> TensorInfo:
    name = tensor_name(tensor)
    shape = [int(d) for d in (tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape)]
    quant = None
    q = tensor.quantization
    if q is not None and q.scale is not None and len(q.scale) > 0:
        quant = Quantization(
            scale=[float(s) for s in np.atleast_1d(q.scale)],
            zero_point=[int(z) for z in np.atleast_1d(q.zeroPoint)],
            axis=int(q.quantizedDimension),
        )
    layout = "NHWC" if len(shape) == 4 else "other"
    return TensorInfo(
        name=name,
        shape=shape,
        dtype=type_name(tensor.type),
        layout=layout,
        quantization=quant,
    )


def serialize_tflite(model: schema.ModelT) -> bytes:
    """A (possibly edited) flatbuffer object tree back to .tflite bytes, with TFLite's file identifier."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_tflite(path: Path | str) -> TfliteModel:
    """Parse a .tflite file; a file that is not a TFLite flatbuffer raises EdgeportError."""
    path = Path(path)
    if not path.is_file():
        raise EdgeportError(f"model file {path} does not exist", "check the path")
    data = path.read_bytes()
    return parse_tflite(data, path)


# One int8 conversion asks about the same few models (float32, the probe, int8) about twenty times, from
# stages that share nothing but the bytes: parses are kept per content, the newest few, within a size.
# Keyed by the bytes themselves: Python keeps a bytes object's hash, so asking again with the same object
# costs nothing, and another object with the same content costs one hash and one comparison.
_CACHE_ENTRIES = 8
_CACHE_BYTES = 256 << 20
_cache: OrderedDict[bytes, TfliteModel] = OrderedDict()
_cache_lock = threading.Lock()


def parse_tflite(data: bytes, path: Path | str = "<bytes>") -> TfliteModel:
    """Parse .tflite bytes for reading. The `raw` tree is shared by every caller that parses the same
    bytes, so it must not be changed: edit_tflite gives a tree to change."""
    data = data if isinstance(data, bytes) else bytes(data)  # the tree's arrays are views of these bytes
    with _cache_lock:
        found = _cache.get(data)
        if found is not None:
            _cache.move_to_end(data)
    if found is None:
        found = _parse(data, path)
        with _cache_lock:
            _cache[data] = found
            while len(_cache) > 1 and (
                len(_cache) > _CACHE_ENTRIES or sum(m.size_bytes for m in _cache.values()) > _CACHE_BYTES
            ):
                _cache.popitem(last=False)
    # Its own copy of everything but the tree: the lists are small, and a manifest may keep and edit them.
    return dataclasses.replace(
        found,
        path=Path(path),
        ops=list(found.ops),
        op_versions=dict(found.op_versions),
        custom_ops=list(found.custom_ops),
        inputs=[info.model_copy(deep=True) for info in found.inputs],
        outputs=[info.model_copy(deep=True) for info in found.outputs],
    )


def edit_tflite(data: bytes, path: Path | str = "<bytes>") -> schema.ModelT:
    """A flatbuffer object tree of its own, for a caller that changes it (then serialize_tflite)."""
    return _parse(bytes(data), path).raw


def _parse(data: bytes, path: Path | str) -> TfliteModel:
    path = Path(path)
    if len(data) == 0:
        raise EdgeportError(f"{path} is empty (0 bytes)", "give a .tflite model file")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise EdgeportError(
            f"{path} is not a TFLite flatbuffer (no 'TFL3' identifier)",
            "give a .tflite file produced by the TFLite converter or `edgeport convert`",
        )
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        ops, versions, custom = [], {}, []
        for graph in model.subgraphs or []:
            for op in graph.operators or []:
                name = op_name(model.operatorCodes[op.opcodeIndex])
                ops.append(name)
                if name.startswith("CUSTOM:"):
                    custom.append(name.removeprefix("CUSTOM:"))
        for code in model.operatorCodes or []:
            name = op_name(code)
            versions[name] = max(versions.get(name, 1), int(code.version))
        main = model.subgraphs[0]
        inputs = [_tensor_info(main.tensors[i]) for i in main.inputs]
        outputs = [_tensor_info(main.tensors[i]) for i in main.outputs]
    except EdgeportError:
        raise
    except Exception as exc:  # any parse failure means a truncated or corrupt flatbuffer
        raise EdgeportError(
            f"{path} is a corrupt or truncated TFLite flatbuffer ({type(exc).__name__})",
            "re-export the model; the file may have been cut short when copied",
        ) from exc
    return TfliteModel(
        path=path,
        size_bytes=len(data),
        ops=ops,
        op_versions=versions,
        custom_ops=sorted(set(custom)),
        inputs=inputs,
        outputs=outputs,
        subgraphs=len(model.subgraphs),
        raw=model,
    )


# Bytes per element of the tensor types whose constant data size can be checked against the shape.
_ELEMENT_BYTES = {
    schema.TensorType.FLOAT32: 4,
    schema.TensorType.FLOAT16: 2,
    schema.TensorType.INT32: 4,
    schema.TensorType.UINT8: 1,
    schema.TensorType.INT64: 8,
    schema.TensorType.BOOL: 1,
    schema.TensorType.INT16: 2,
    schema.TensorType.INT8: 1,
    schema.TensorType.FLOAT64: 8,
    schema.TensorType.UINT64: 8,
    schema.TensorType.UINT32: 4,
    schema.TensorType.UINT16: 2,
}


def _corrupt(path: Path, what: str) -> EdgeportError:
    return EdgeportError(
        f"{path} fails TFLite verification: {what}",
        "re-export the model; the file is corrupt or was not written by a TFLite converter",
    )


def _check_structure(model: TfliteModel, data: bytes) -> None:
    """Index and size checks the object API does not make: every reference must point inside the file."""
    raw, path = model.raw, model.path
    buffers = raw.buffers or []
    n_codes = len(raw.operatorCodes or [])
    if not raw.subgraphs:
        raise _corrupt(path, "the model has no subgraphs")
    for b_index, buf in enumerate(buffers):
        # Models over 2 GB keep buffers after the flatbuffer, addressed by offset/size.
        if buf.offset and (buf.offset + buf.size > len(data) or buf.offset < 0):
            raise _corrupt(path, f"buffer {b_index} points past the end of the file")
    for g_index, graph in enumerate(raw.subgraphs):
        tensors = graph.tensors or []
        n_tensors = len(tensors)
        for t_index, tensor in enumerate(tensors):
            if tensor.buffer < 0 or tensor.buffer >= max(len(buffers), 1):
                raise _corrupt(
                    path, f"tensor {t_index} of subgraph {g_index} uses missing buffer {tensor.buffer}"
                )
            shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
            if any(d < 0 for d in shape):
                raise _corrupt(path, f"tensor {t_index} of subgraph {g_index} has a negative dimension")
            buf = buffers[tensor.buffer] if buffers else None
            stored = (
                0
                if buf is None
                else (buf.size if buf.offset else len(buf.data if buf.data is not None else []))
            )
            width = _ELEMENT_BYTES.get(tensor.type)
            if stored and width and tensor.sparsity is None:
                expected = int(np.prod(shape, dtype=np.int64)) * width
                if stored != expected:
                    raise _corrupt(
                        path,
                        f"tensor {t_index} of subgraph {g_index} holds {stored} bytes, "
                        f"its shape needs {expected}",
                    )
        for io_name, ids in (("input", graph.inputs), ("output", graph.outputs)):
            for t in ids if ids is not None else []:
                if not 0 <= int(t) < n_tensors:
                    raise _corrupt(path, f"subgraph {g_index} {io_name} refers to missing tensor {t}")
        for o_index, op in enumerate(graph.operators or []):
            if not 0 <= op.opcodeIndex < n_codes:
                raise _corrupt(path, f"operator {o_index} of subgraph {g_index} has no operator code")
            for t in list(op.inputs if op.inputs is not None else []) + list(
                op.outputs if op.outputs is not None else []
            ):
                if not -1 <= int(t) < n_tensors:  # -1 marks an omitted optional input
                    raise _corrupt(path, f"operator {o_index} of subgraph {g_index} uses missing tensor {t}")


def verify_tflite(data: bytes, path: Path | str = "<bytes>") -> TfliteModel:
    """Parse and verify a .tflite before any native interpreter sees it.

    Three layers: the schema parse (parse_tflite), index/size checks over the parsed model, then the
    flatbuffers Verifier compiled into LiteRT (run when its Interpreter is built from a buffer; it is
    written for untrusted input and bounds-checks every offset). Raises EdgeportError on any failure.
    """
    from edgeport.runtimes import litert  # imported here: edgeport.runtimes.tflm imports this module

    model = parse_tflite(data, path)
    _check_structure(model, data)
    try:
        litert.interpreter(bytes(data), threads=None)
    except ValueError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # Models LiteRT cannot *run* (custom ops, ops newer than this LiteRT) still passed the verifier.
        if "not a valid Flatbuffer" in message or "schema version" in message or "identifier" in message:
            raise _corrupt(model.path, message) from exc
    except RuntimeError:
        pass  # an op resolution failure, after verification succeeded
    return model

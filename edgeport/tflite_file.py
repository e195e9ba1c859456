"""Read a .tflite flatbuffer through the generated schema bindings (the single source of truth).

Used by every stage that reports on a .tflite: op counts for the converter and the benchmark,
I/O tensors for the manifest, the op set for the Cortex-M resolver.
"""

from __future__ import annotations

from collections import Counter
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
    raw: schema.ModelT = field(repr=False)

    @property
    def op_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.ops).items()))


def op_name(op_code: schema.OperatorCodeT) -> str:
    # TFLite's own rule: codes above 127 live only in builtin_code, older files only in the deprecated field.
    code = max(op_code.builtinCode, op_code.deprecatedBuiltinCode)
    name = _BUILTIN_NAMES.get(code, f"BUILTIN_{code}")
    if name == "CUSTOM":
        custom = op_code.customCode.decode() if isinstance(op_code.customCode, bytes) else op_code.customCode
        return f"CUSTOM:{custom}"
    return name


def _tensor_info(tensor: schema.TensorT) -> TensorInfo:
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
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
        dtype=_TYPE_NAMES.get(tensor.type, str(tensor.type)),
        layout=layout,
        quantization=quant,
    )


def read_tflite(path: Path | str) -> TfliteModel:
    """Parse a .tflite file; a file that is not a TFLite flatbuffer raises EdgeportError."""
    path = Path(path)
    if not path.is_file():
        raise EdgeportError(f"model file {path} does not exist", "check the path")
    data = path.read_bytes()
    return parse_tflite(data, path)


def parse_tflite(data: bytes, path: Path | str = "<bytes>") -> TfliteModel:
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

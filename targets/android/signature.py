"""The `serving_default` signature every variant carries: an app's signature runner addresses inputs and
outputs by its keys.

`edgeport convert` writes one named after the source's tensors (onnx2tf keeps the ONNX names and the
TFLite converter keys the signature with them), and the quantizers keep it. A .tflite from elsewhere may
have none (older converters, a graph converted without a SavedModel); it gets one keyed by its tensor
names before any variant is made, so every variant inherits it.
"""

from __future__ import annotations

from edgeport.tensors import signature_name
from edgeport.tflite_file import edit_tflite, flatbuffer_text, schema, serialize_tflite

SIGNATURE_KEY = "serving_default"


def _key(name: bytes | str | None) -> str:
    """A tensor's name as a signature key: the converter's `serving_default_` prefix and `:0` dropped."""
    return signature_name(flatbuffer_text(name).removeprefix(f"{SIGNATURE_KEY}_").split(":")[0])


def _unique(keys: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
        out.append(key if seen[key] == 1 else f"{key}_{seen[key] - 1}")
    return out


def with_signature(model: bytes) -> bytes:
    """`model` unchanged when it has a signature, else with a serving_default one over subgraph 0's
    inputs and outputs, keyed by their tensor names."""
    raw = edit_tflite(model)
    if raw.signatureDefs:
        return model
    graph = raw.subgraphs[0]

    def maps(indices: list[int]) -> list[schema.TensorMapT]:
        found = []
        for key, index in zip(_unique([_key(graph.tensors[i].name) for i in indices]), indices, strict=True):
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = key, int(index)
            found.append(entry)
        return found

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE_KEY, 0
    signature.inputs, signature.outputs = maps(list(graph.inputs)), maps(list(graph.outputs))
    raw.signatureDefs = [signature]
    return serialize_tflite(raw)

"""Compressed weights on Cortex-M: TFLite Micro's DECODE operator yes, the older COMPRESSION_METADATA no.

A model from edgeport.quant.lut_compression (or TFLM's own compression tool) stores weights as
lookup-table indices and decodes them with TFLM_DECODE custom operators. op_resolver registers those
with AddDecode(); the kernel is in TFLM's default sources (kernels/decode*.cc, since commit d96fe663,
October 2025), so the library needs no extra define or source. Each DECODE writes one weight tensor
into the arena, alive for the one operator that reads it: arena.measure runs the compressed model
itself in the tflite-micro interpreter, which runs the same kernel, so the measured arena includes
those buffers (ResNet-20 at 16 clusters: 82,080 -> 86,240 bytes; the planner overlays them with
activations that are dead at that point).

The older scheme keeps the tables in a COMPRESSION_METADATA entry and decodes inside the kernels. It
needs TFLM built with USE_TFLM_COMPRESSION, which TFLM's Makefile honours only for TARGET=linux and
xtensa, not cortex_m_generic, and the CMSIS-NN kernels do not implement it: on a Cortex-M build the
kernels would read the packed indices as weights. Such a model is refused with that reason (before,
the byte-size check of tflite_file rejected it as a corrupt file).
"""

from __future__ import annotations

from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.tflite_file import TfliteModel, op_name, schema

DECODE_OP = "TFLM_DECODE"
LEGACY_METADATA = "COMPRESSION_METADATA"

_ELEMENT_BYTES = {schema.TensorType.INT8: 1, schema.TensorType.INT16: 2, schema.TensorType.FLOAT32: 4}


def refuse_legacy_compression(data: bytes, path: Path) -> None:
    """EdgeportError if the model uses COMPRESSION_METADATA (read from the flatbuffer's metadata table
    only, so it runs before the full verification, which would call such a model corrupt)."""
    try:
        model = schema.Model.GetRootAs(data, 0)
        names = [model.Metadata(i).Name() for i in range(model.MetadataLength())]
    except Exception:  # noqa: BLE001 - a broken file is verify_tflite's to report, with its own message
        return
    if any(n is not None and n.decode(errors="replace") == LEGACY_METADATA for n in names):
        raise EdgeportError(
            f"{path.name} uses TFLite Micro's legacy {LEGACY_METADATA} weight compression, which needs "
            "USE_TFLM_COMPRESSION, a define TFLM's Makefile applies only to linux and xtensa targets",
            "re-compress with DECODE operators (edgeport.quant.lut_compression.compress_lut, or TFLM's "
            "current compress tool), or package the uncompressed model",
        )


def decode_summary(model: TfliteModel) -> dict | None:
    """What the model's DECODE operators do, for the manifest; None for an uncompressed model."""
    raw = model.raw
    decoded: list[int] = []
    ops = 0
    for graph in raw.subgraphs:
        tensors = graph.tensors or []
        for op in graph.operators or []:
            if op_name(raw.operatorCodes[op.opcodeIndex]) != f"CUSTOM:{DECODE_OP}":
                continue
            ops += 1
            for t in op.outputs:
                count = 1
                for d in tensors[t].shape if tensors[t].shape is not None else []:
                    count *= int(d)
                decoded.append(count * _ELEMENT_BYTES.get(tensors[t].type, 1))
    if not ops:
        return None
    return {
        "decode_ops": ops,
        "decoded_tensors": len(decoded),
        "decoded_bytes": sum(decoded),
        "largest_decoded_bytes": max(decoded),
        "note": "weights are decoded into the arena right before the op that reads them; "
        "kTensorArenaSize includes those buffers (measured on the compressed model)",
    }

"""int8 SPACE_TO_BATCH_ND that pads: TFLite Micro writes raw 0 into the padding, not the zero point.

TFLite Micro's SPACE_TO_BATCH_ND (kernels/space_to_batch_nd.cc) allocates the SpaceToBatchParams it
passes to the shared reference kernel and never sets their output_offset, which the kernel writes
into every padded element; TFLite's own kernels set it to the output's zero point. Padded with raw 0,
an int8 tensor holds -zero_point * scale where the model has 0. TensorFlow writes a dilated
convolution as SpaceToBatchND -> conv -> BatchToSpaceND and the converter folds that back into one
dilated CONV_2D, except where it cannot (edgeport's dilated_sibling_convs_merged rewrite removes the
common case); a disagreement between TFLite Micro and the reference kernels on a model with such an
op is explained by this, not by the model.
"""

from __future__ import annotations

import numpy as np

from edgeport.tflite_file import op_name, parse_tflite, tensor_name

_INT8 = 9  # TensorType.INT8


def padding_space_to_batch(model: bytes) -> list[tuple[str, int]]:
    """(output tensor name, input zero point) of each int8 SPACE_TO_BATCH_ND with constant, non-zero
    paddings whose input zero point is not 0."""
    raw = parse_tflite(model).raw
    found = []
    for graph in raw.subgraphs or []:
        for op in graph.operators or []:
            if op_name(raw.operatorCodes[op.opcodeIndex]) != "SPACE_TO_BATCH_ND" or op.inputs is None:
                continue
            tensor, paddings = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[2]]
            quant = tensor.quantization
            zero = quant.zeroPoint if quant is not None else None
            if tensor.type != _INT8 or zero is None or len(zero) == 0 or int(zero[0]) == 0:
                continue
            data = raw.buffers[paddings.buffer].data if paddings.buffer else None
            if data is not None and len(data) and not np.frombuffer(bytes(data), np.int32).any():
                continue  # constant zero paddings: nothing padded
            found.append((tensor_name(graph.tensors[op.outputs[0]]), int(zero[0])))
    return found


def pad_value_problem(model: bytes, name: str, steps: int) -> tuple[str, str] | None:
    """(problem, fix) when TFLite Micro's disagreement of `steps` with the reference kernels can come
    from such a SPACE_TO_BATCH_ND, else None."""
    found = padding_space_to_batch(model)
    if not found:
        return None
    tensor, zero = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    problem = (
        f"{name}: TFLite Micro and TFLite's reference kernels differ by {steps} quantization steps: "
        f"TFLite Micro's int8 SPACE_TO_BATCH_ND {tensor!r}{more} (a dilated convolution's padding) pads "
        f"with 0 instead of its zero point {zero}, a kernel defect of TFLite Micro"
    )
    fix = (
        "keep the float model for the microcontroller (or give that dilated convolution an input no other "
        "layer reads, which the converter folds into one CONV_2D); for Android (no TFLite Micro) use "
        "--quantize dynamic or float16"
    )
    return problem, fix

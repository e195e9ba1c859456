"""Grouped convolutions (1 < groups < channels) need onnx2tf's `disable_group_convolution`.

Left to itself onnx2tf builds a grouped Conv as a tf_keras Conv2D / Conv1D layer whose kernel is a
variable the Keras model does not track. Saving that model as a SavedModel then fails inside the TFLite
converter, which silently falls back to its frozen-graph path and writes a .tflite without any
SignatureDef: LiteRT refuses it ("model has 0 Signatures") and the int8 converter cannot use it. With
`disable_group_convolution` onnx2tf writes the same conv as SPLIT, one CONV_2D per group and
CONCATENATION on the NHWC channel axis, all constant filters (builtin ops TFLite Micro has too).

This is an option rather than an ONNX rewrite into Split / Conv / Concat on purpose: onnx2tf holds the
output of a 4-D Add in NCHW, and an ONNX Split after a residual Add then costs a TRANSPOSE per group
(ShuffleNet v1, 3 groups: 5 TRANSPOSEs), while onnx2tf's own split sits after its NHWC conv input and
the converter cancels the transposes around the Add (1 left, at the global pool). Depthwise convs
(groups == channels) are unaffected: onnx2tf maps them to DEPTHWISE_CONV_2D either way.
"""

from __future__ import annotations

from typing import Any

import onnx

from edgeport.onnx_graph import OnnxGraph, attr


def grouped_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes with 1 < groups < input channels (groups == channels is depthwise)."""
    view = OnnxGraph(model)
    found = []
    for node in model.graph.node:
        groups = int(attr(node, "group", 1))
        if node.op_type != "Conv" or groups == 1:
            continue
        weight_shape = view.shape(node.input[1])
        channels = weight_shape[1] * groups if weight_shape and weight_shape[1] else None
        if channels != groups:
            found.append(node.name or node.output[0])
    return found


def onnx2tf_options(model: onnx.ModelProto) -> dict[str, Any]:
    return {"disable_group_convolution": True} if grouped_convs(model) else {}

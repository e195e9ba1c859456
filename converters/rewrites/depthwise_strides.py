"""Depthwise Conv with unequal strides (e.g. (2, 1)) -> the same conv at stride 1, then a strided Slice.

onnx2tf maps a conv to DEPTHWISE_CONV_2D only when all its strides are equal; otherwise it builds a
tf_keras grouped Conv2D whose kernel the Keras model does not track, the SavedModel export fails and
the TFLite converter writes a model without SignatureDefs ("model has 0 Signatures" in LiteRT).
Paddle OCR models use such (2, 1) depthwise convs to halve only the height, and a strided depthwise
Conv1d becomes one with strides (1, s) in depthwise_conv1d_to_2d. A conv at stride s is the
stride-1 conv sampled every s-th position from 0, so the replacement is exact; onnxruntime checks each
one before it is kept.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeport.converters.rewrites._region_check import replacement_agrees
from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite, opset_version, text_attr

NAME = "depthwise_unequal_strides"

log = logging.getLogger(__name__)

# The replacement computes the same sums in the same order; only a broken one differs by more.
_CHECK_TOLERANCE = 1e-5


def is_depthwise_with_unequal_strides(
    input_shape: list[int] | None, weight_shape: tuple[int, ...], group: int, strides: list[int]
) -> bool:
    """A 2-D conv whose every group reads one input channel (C_out a multiple of C_in) and whose
    strides differ between height and width."""
    if input_shape is None or len(input_shape) != 4 or len(weight_shape) != 4 or len(strides) != 2:
        return False
    channels = input_shape[1]
    return (
        group > 1
        and group == channels
        and weight_shape[1] == 1
        and weight_shape[0] % channels == 0
        and len(set(strides)) > 1
    )


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Conv" or int(attr(node, "group", 1)) == 1:
        return False
    weight = view.input_const(node, 1)
    strides = [int(s) for s in attr(node, "strides", [1, 1])]
    if weight is None or not is_depthwise_with_unequal_strides(
        view.static_shape(node.input[0]), weight.shape, int(attr(node, "group")), strides
    ):
        return False
    opset = opset_version(view.model)
    if opset < 10:  # Slice takes steps from opset 10 on
        return False
    if text_attr(node, "auto_pad", "NOTSET") != "NOTSET":
        log.info("%s: %s left alone: auto_pad SAME pads depend on the stride", NAME, node.name)
        return False
    hint = node.name or "depthwise"
    height, width = view.static_shape(node.input[0])[2:]
    pads, dilations = list(attr(node, "pads", [0, 0, 0, 0])), list(attr(node, "dilations", [1, 1]))
    # The stride-1 output's extent: a finite end (not INT64_MAX) keeps onnx2tf's STRIDED_SLICE plain.
    ends = [
        size + pads[i] + pads[i + 2] - dilations[i] * (weight.shape[2 + i] - 1)
        for i, size in enumerate((height, width))
    ]
    dense = view.fresh(f"{hint}_stride1")
    conv = helper.make_node(
        "Conv",
        list(node.input),
        [dense],
        name=view.fresh(f"{hint}_stride1"),
        group=int(attr(node, "group")),
        kernel_shape=list(weight.shape[2:]),
        strides=[1, 1],
        dilations=dilations,
        pads=pads,
    )
    inits = [
        numpy_helper.from_array(np.array(values, np.int64), view.fresh(f"{hint}_{what}"))
        for what, values in (("starts", [0, 0]), ("ends", ends), ("axes", [2, 3]), ("steps", strides))
    ]
    sample = helper.make_node(
        "Slice", [dense, *(t.name for t in inits)], [node.output[0]], name=view.fresh(f"{hint}_strides")
    )
    if not replacement_agrees(view, [node], [conv, sample], inits, [node.output[0]], _CHECK_TOLERANCE):
        log.warning("%s: %s left alone: the stride-1 conv and Slice did not reproduce it", NAME, node.name)
        return False
    view.graph.initializer.extend(inits)
    view.replace([node], [conv, sample])
    return True


rewrite = node_rewrite(_match)

"""Depthwise (and channel-multiplier) Conv1d -> the same conv in 2-D over a height-1 image.

onnx2tf builds a 1-D conv with groups > 1 as a tf_keras Conv1D layer whose kernel the Keras model does
not track; the TFLite converter then writes a model without SignatureDefs, which LiteRT refuses ("model
has 0 Signatures"). Its `disable_group_convolution` fallback splits the conv into one CONV_2D per
channel (161 ops for a 3-block 1-D DS-CNN). In 2-D, onnx2tf maps a depthwise conv to one
DEPTHWISE_CONV_2D, so the 1-D conv is run as [N, C, 1, L] with a [1, k] kernel between an Unsqueeze and
a Squeeze of that height axis (reshapes in channels-last too).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite, opset_version, text_attr

NAME = "depthwise_conv1d_to_2d"


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Conv" or int(attr(node, "group", 1)) == 1:
        return False
    shape = view.static_shape(node.input[0])
    weight = view.input_const(node, 1)
    opset = opset_version(view.model)
    if shape is None or len(shape) != 3 or weight is None or opset < 13:
        return False
    groups = int(attr(node, "group"))
    if groups != shape[1] or text_attr(node, "auto_pad", "NOTSET") != "NOTSET":
        return False  # grouped (not depthwise) convs are grouped_conv's; SAME pads conv_same_pads'
    hint = node.name or "conv1d"
    axis = view.add_initializer(np.array([2], np.int64), f"{hint}_height_axis")
    tall, tall_out = view.fresh(f"{hint}_2d_in"), view.fresh(f"{hint}_2d_out")
    kernel = view.add_initializer(weight.reshape(weight.shape[0], weight.shape[1], 1, weight.shape[2]), hint)
    pads = list(attr(node, "pads", [0, 0]))
    conv = helper.make_node(
        "Conv",
        [tall, kernel, *node.input[2:]],
        [tall_out],
        name=view.fresh(f"{hint}_2d"),
        group=groups,
        kernel_shape=[1, weight.shape[2]],
        strides=[1, *attr(node, "strides", [1])],
        dilations=[1, *attr(node, "dilations", [1])],
        pads=[0, pads[0], 0, pads[1]],
    )
    nodes = [
        helper.make_node("Unsqueeze", [node.input[0], axis], [tall], name=view.fresh(f"{hint}_unsqueeze")),
        conv,
        helper.make_node("Squeeze", [tall_out, axis], [node.output[0]], name=view.fresh(f"{hint}_squeeze")),
    ]
    view.replace([node], nodes)
    return True


rewrite = node_rewrite(_match)

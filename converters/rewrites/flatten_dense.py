"""Flatten of a feature map into a Linear layer -> one Conv whose kernel covers the whole map.

`Linear(Flatten(x))` with x of shape [N, C, H, W] reads x in channel-major order. onnx2tf holds the map
channels-last, so it has to TRANSPOSE it back to NCHW before the flatten (LeNet-style heads, conv
autoencoders' bottlenecks). A conv with an H x W kernel, no padding, over an H x W map computes the same
dot products and has no layout to restore: its filter is the Linear weight reshaped to [out, C, H, W],
and the [N, out, 1, 1] result flattens to [N, out] in any layout. Maps of one pixel (after global
pooling) are left to the FULLY_CONNECTED they already become.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite

NAME = "flatten_dense_to_conv"


def _is_flatten(view: OnnxGraph, node: onnx.NodeProto, shape: list[int]) -> bool:
    """Flatten(axis=1), or Reshape to [N, C*H*W...]."""
    if node.op_type == "Flatten":
        return int(attr(node, "axis", 1)) == 1
    if node.op_type == "Reshape":
        return view.static_shape(node.output[0]) == [shape[0], int(np.prod(shape[1:]))]
    return False


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type not in ("Flatten", "Reshape"):
        return False
    shape = view.static_shape(node.input[0])
    if (
        shape is None
        or len(shape) != 4
        or not view.is_float32(node.input[0])
        or not _is_flatten(view, node, shape)
    ):
        return False
    if int(np.prod(shape[2:])) == 1:
        return False  # a globally pooled [N, C, 1, 1]: flattening it needs no reordering in any layout
    gemm = view.only_consumer(node.output[0], "Gemm")
    if gemm is None or gemm.input[0] != node.output[0] or attr(gemm, "transA", 0):
        return False
    if float(attr(gemm, "alpha", 1.0)) != 1.0 or float(attr(gemm, "beta", 1.0)) != 1.0:
        return False
    weight = view.input_const(gemm, 1)
    bias = view.input_const(gemm, 2) if len(gemm.input) > 2 and gemm.input[2] else None
    if weight is None or (len(gemm.input) > 2 and gemm.input[2] and bias is None):
        return False
    weight = weight if attr(gemm, "transB", 0) else weight.T
    out = weight.shape[0]
    if bias is not None and bias.size not in (1, out):
        return False
    hint = gemm.name or "dense"
    kernel = view.add_initializer(weight.reshape(out, *shape[1:]).astype(np.float32), f"{hint}_kernel")
    inputs = [node.input[0], kernel]
    if bias is not None:
        inputs.append(view.add_initializer(np.broadcast_to(bias, [out]).astype(np.float32), f"{hint}_bias"))
    conv_out = view.fresh(f"{hint}_conv_out")
    nodes = [
        helper.make_node("Conv", inputs, [conv_out], name=view.fresh(f"{hint}_conv"), kernel_shape=shape[2:]),
        helper.make_node("Flatten", [conv_out], [gemm.output[0]], name=view.fresh(f"{hint}_flatten"), axis=1),
    ]
    view.replace([node, gemm], nodes)
    return True


rewrite = node_rewrite(_match)

"""One-element constants of elementwise Add/Sub/Mul/Div ([1]-shaped) -> rank-0 scalars.

onnx2tf 1.29 gives the output of an Add whose constant operand has shape [1] the ONNX (NCHW) layout
instead of NHWC (Paddle exports write every learnable scalar that way: PP-OCRv4's
`x * w_0 + w_1` after each hardswish). A depthwise Conv reading it is then not recognised as
depthwise (onnx2tf compares the group with the last dimension before it fixes the layout), becomes
an untracked Keras grouped Conv2D, and the .tflite has no SignatureDefs. A rank-0 constant broadcasts
to the same result when the other operand has at least the constant's rank, so the rewrite is exact.
"""

from __future__ import annotations

import onnx

from edgeport.onnx_graph import OnnxGraph, node_rewrite

NAME = "scalar_operands"

_ELEMENTWISE = {"Add", "Sub", "Mul", "Div"}


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type not in _ELEMENTWISE or len(node.input) != 2:
        return False
    for index, other in ((0, 1), (1, 0)):
        value = view.input_const(node, index)
        other_rank = view.rank(node.input[other])
        if (
            value is not None
            and value.ndim >= 1
            and value.size == 1
            and view.input_const(node, other) is None
            and other_rank is not None
            and other_rank >= value.ndim
        ):
            view.set_input_const(node, index, value.reshape(()), f"{node.name or node.op_type}_scalar")
            return True
    return False


rewrite = node_rewrite(_match)

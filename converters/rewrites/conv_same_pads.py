"""Conv with `auto_pad=SAME_UPPER/SAME_LOWER` -> the same padding written out in `pads`.

PyTorch exports `padding="same"` that way. onnxruntime's optimized kernels refuse it together with a
dilation ("Dilation not supported for AutoPadType::SAME_UPPER"), so the ONNX stage of the verification
cannot run such a model; with explicit pads every runtime and onnx2tf read the same geometry.
"""

from __future__ import annotations

import math

import onnx

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite, set_attr, text_attr

NAME = "conv_same_to_explicit_pads"


def same_pads(
    spatial: list[int], kernel: list[int], strides: list[int], dilations: list[int], upper: bool
) -> list[int]:
    """ONNX pads [begin..., end...] of auto_pad SAME_UPPER (extra element at the end) or SAME_LOWER."""
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if upper else large)
        end.append(large if upper else small)
    return begin + end


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    mode = text_attr(node, "auto_pad", "NOTSET")
    if node.op_type != "Conv" or mode not in ("SAME_UPPER", "SAME_LOWER"):
        return False
    shape = view.static_shape(node.input[0])
    weight = view.static_shape(node.input[1])
    if shape is None or weight is None:
        return False  # the padding depends on the input size: leave it as the model says
    n = len(shape) - 2
    kernel = list(attr(node, "kernel_shape", weight[2:]))
    strides = list(attr(node, "strides", [1] * n))
    dilations = list(attr(node, "dilations", [1] * n))
    set_attr(node, "auto_pad", "NOTSET")
    set_attr(node, "pads", same_pads(shape[2:], kernel, strides, dilations, mode == "SAME_UPPER"))
    view.changed += 1
    return True


rewrite = node_rewrite(_match)

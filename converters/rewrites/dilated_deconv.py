"""ConvTranspose with dilation > 1 -> ConvTranspose with the dilation written into the kernel.

TFLite's TRANSPOSE_CONV has no dilation, so onnx2tf falls back to TensorFlow's Conv2DBackpropInput,
which only the Flex delegate runs. A kernel dilated by d is the kernel of size d*(k-1)+1 with d-1 zeros
between its taps: the same output size (ONNX's formula depends on the kernel only through
d*(k-1)+1) and the same sums, at the cost of multiplying by those zeros.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite, set_attr

NAME = "dilated_deconv_to_dense_kernel"


def dilate_kernel(weight: np.ndarray, dilations: list[int]) -> np.ndarray:
    """[Cin, Cout/groups, k...] -> [Cin, Cout/groups, d*(k-1)+1 ...] with zeros between the taps."""
    spatial = weight.shape[2:]
    dense = np.zeros(
        (*weight.shape[:2], *((k - 1) * d + 1 for k, d in zip(spatial, dilations, strict=True))), weight.dtype
    )
    dense[(slice(None), slice(None), *(slice(None, None, d) for d in dilations))] = weight
    return dense


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "ConvTranspose":
        return False
    dilations = list(attr(node, "dilations", []))
    weight = view.input_const(node, 1)
    if not dilations or all(d == 1 for d in dilations) or weight is None:
        return False
    dense = dilate_kernel(weight, dilations)
    view.set_input_const(node, 1, dense, f"{node.name or 'deconv'}_dense_kernel")
    set_attr(node, "dilations", [1] * len(dilations))
    if attr(node, "kernel_shape") is not None:
        set_attr(node, "kernel_shape", list(dense.shape[2:]))
    return True


rewrite = node_rewrite(_match)

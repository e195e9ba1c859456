"""Feature map -> token sequence (`x.flatten(2).transpose(1, 2)`) -> channels-last first, then reshape.

A vision transformer's patch embedding turns the conv output [N, C, H, W] into tokens [N, H*W, C]
with Reshape [N, C, H*W] + Transpose(0, 2, 1). onnx2tf holds the conv output as NHWC, so it transposes
back to NCHW for the Reshape and again for the Transpose (2 TRANSPOSEs). The same tokens are
Transpose(x, [0, 2, 3, 1]) + Reshape [N, H*W, C]: the Transpose is NCHW -> NHWC, which is the layout
onnx2tf already holds, so it costs nothing and the Reshape reads NHWC memory in order. Only elements
move, so the result is exact.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite

NAME = "patch_tokens_channels_last"


def _match(view: OnnxGraph, reshape: onnx.NodeProto) -> bool:
    if reshape.op_type != "Reshape":
        return False
    shape = view.static_shape(reshape.input[0])
    flat = view.static_shape(reshape.output[0])
    if shape is None or flat is None or len(shape) not in (4, 5):
        return False
    n, c, spatial = shape[0], shape[1], int(np.prod(shape[2:]))
    if flat != [n, c, spatial]:
        return False
    transpose = view.only_consumer(reshape.output[0], "Transpose")
    if transpose is None or list(attr(transpose, "perm", [])) != [0, 2, 1]:
        return False
    rank = len(shape)
    channels_last = view.fresh(f"{reshape.name or 'patch'}_channels_last")
    nodes = [
        helper.make_node(
            "Transpose",
            [reshape.input[0]],
            [channels_last],
            name=view.fresh("patch_nhwc"),
            perm=[0, *range(2, rank), 1],
        ),
        helper.make_node(
            "Reshape",
            [channels_last, view.add_initializer(np.array([n, spatial, c], np.int64), "tokens_shape")],
            [transpose.output[0]],
            name=view.fresh("patch_tokens"),
        ),
    ]
    view.replace([reshape, transpose], nodes)
    return True


rewrite = node_rewrite(_match)

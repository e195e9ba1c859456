"""ShuffleNet channel shuffle: Reshape(split C into g x C/g) -> Transpose(swap them) -> Reshape -> Gather.

`x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)` is a fixed permutation of the channel
axis, but onnx2tf sees a 5-D reshape and transpose of a tensor it holds as NHWC, so it brackets them
with TRANSPOSEs back to NCHW (6 transposes in a two-unit ShuffleNet). A Gather with constant indices on
the channel axis is the same permutation, which onnx2tf maps to one GATHER on the NHWC channel axis.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr

NAME = "channel_shuffle_to_gather"


def _match(view: OnnxGraph, first: onnx.NodeProto) -> bool:
    if first.op_type != "Reshape":
        return False
    shape = view.static_shape(first.input[0])
    split = view.static_shape(first.output[0])  # the target with any 0 / -1 resolved
    if shape is None or split is None or len(shape) < 3 or len(split) != len(shape) + 1:
        return False
    n, c, rest = shape[0], shape[1], shape[2:]
    groups, per_group = split[1], split[2]
    if split[0] != n or split[3:] != rest or groups * per_group != c or groups < 2 or per_group < 2:
        return False
    transpose = view.only_consumer(first.output[0], "Transpose")
    if transpose is None:
        return False
    perm = list(attr(transpose, "perm", []))
    if perm != [0, 2, 1, *range(3, len(split))]:
        return False
    last = view.only_consumer(transpose.output[0], "Reshape")
    if last is None or view.static_shape(last.output[0]) != shape:
        return False
    # Output channel a*groups + b reads input channel b*per_group + a.
    indices = np.arange(c, dtype=np.int64).reshape(groups, per_group).T.reshape(-1)
    gather = helper.make_node(
        "Gather",
        [first.input[0], view.add_initializer(indices, "shuffle_indices")],
        [last.output[0]],
        name=view.fresh(last.name or "channel_shuffle"),
        axis=1,
    )
    view.replace([first, transpose, last], [gather])
    return True


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    view = OnnxGraph(model)
    view.rewrite_each(_match)
    return view.finish()

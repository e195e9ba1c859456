"""`torch.stack` of tensors whose leading axes have size 1 -> a Concat along an axis onnx2tf cannot
mistake, then a Reshape.

PyTorch exports `torch.stack(xs, d)` as Unsqueeze(d) of each tensor and a Concat along d. When every
axis up to d and the one after it have size 1 (the states of a hand-written `nn.LSTMCell` loop:
`torch.stack([h1, h2])` of [1, 16] states is [2, 1, 16]), concatenating along the later axis gives
the same data in a permuted shape ([1, 2, 16]), and onnx2tf, which picks a Concat's axis by checking
the candidates last to first against onnxruntime ignoring dimension order, takes that one: the
converted model's output has the wrong shape. Concatenating along the first later axis of size > 1
leaves no such twin; the Reshape gives the stacked shape back.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.converters.rewrites._grids import unambiguous_axis
from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite

NAME = "stack_axis"


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Concat" or len(node.input) < 2:
        return False
    out_shape = view.static_shape(node.output[0])
    shapes = [view.static_shape(i) for i in node.input]
    if out_shape is None or any(s is None or s != shapes[0] for s in shapes):
        return False
    axis = int(attr(node, "axis")) % len(out_shape)
    if any((p := view.producer(i)) is None or p.op_type != "Unsqueeze" for i in node.input):
        return False
    better = unambiguous_axis(shapes[0], axis)
    if better == axis:
        return False
    joined = view.fresh(f"{node.output[0]}_joined")
    shape = view.add_initializer(np.array(out_shape, np.int64), f"{node.output[0]}_shape")
    concat = helper.make_node("Concat", list(node.input), [joined], name=node.name, axis=better)
    reshape = helper.make_node(
        "Reshape", [joined, shape], [node.output[0]], name=view.fresh(f"{node.name}_shape")
    )
    view.replace([node], [concat, reshape])
    return True


rewrite = node_rewrite(_match)

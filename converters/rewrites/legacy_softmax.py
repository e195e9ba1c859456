"""Softmax / LogSoftmax / Hardmax of opset < 13 over a non-last axis -> Flatten, the op on the last axis,
Reshape.

Before opset 13 these ops flatten the input to 2-D at `axis` (default 1) and normalise over everything
from that axis on; onnx2tf gives them the opset-13 meaning (one axis) whatever the opset, so an opset-11
export (Paddle's default) of Softmax(axis=1) over [N, C, H, W] converted to a different function
(verification refused it: max rel. error 1.4). Written out with Flatten the meaning is the same in every
opset. Over the last axis both meanings agree and the node is left alone.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr

NAME = "legacy_softmax_axis"
_OPS = {"Softmax", "LogSoftmax", "Hardmax"}
_FLATTENING_BEFORE = 13  # the opset from which these ops normalise over one axis


def _default_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type not in _OPS or len(node.output) != 1:
        return False
    shape = view.static_shape(node.input[0])
    if shape is None:
        return False  # without the rank the axis cannot be read; onnx2tf's own reading stays
    rank = len(shape)
    axis = int(attr(node, "axis", 1))
    axis = axis + rank if axis < 0 else axis
    if rank == 0 or axis >= rank - 1:
        return False  # the last axis (or a scalar): both meanings agree
    base = node.name or node.output[0]
    flat, normalised = view.fresh(f"{node.output[0]}_flat"), view.fresh(f"{node.output[0]}_2d")
    nodes = [
        helper.make_node("Flatten", [node.input[0]], [flat], name=view.fresh(f"{base}_flatten"), axis=axis),
        helper.make_node(node.op_type, [flat], [normalised], name=view.fresh(f"{base}_2d"), axis=1),
        helper.make_node(
            "Reshape",
            [normalised, view.add_initializer(np.array(shape, np.int64), f"{base}_shape")],
            [node.output[0]],
            name=view.fresh(f"{base}_reshape"),
        ),
    ]
    view.replace([node], nodes)
    return True


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    opset = _default_opset(model)
    if opset is None or opset >= _FLATTENING_BEFORE:
        return model
    view = OnnxGraph(model)
    view.rewrite_each(_match)
    return view.finish()

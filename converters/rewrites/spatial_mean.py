"""Mean over all spatial axes of a feature map (`x.mean((2, 3))`) -> GlobalAveragePool (+ Reshape).

onnx2tf keeps the output of a 4-D Add in NCHW (its Add "rescue" transposes both inputs back to the
ONNX shape), so a ReduceMean over axes (2, 3) after a residual Add reads an NCHW tensor and keeps one
TRANSPOSE in front of its MEAN (ShuffleNet v1 units: 1). GlobalAveragePool is a spatial op onnx2tf
translates on its NHWC layout, and the TFLite converter cancels the transposes around the Add. Both
are the mean of the same elements; keepdims=0 becomes a Reshape to [N, C].
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite

NAME = "spatial_mean_to_global_pool"


def _axes(view: OnnxGraph, node: onnx.NodeProto, rank: int) -> list[int] | None:
    """ReduceMean's axes (an attribute before opset 18, an input from 18 on), non-negative, sorted."""
    if len(node.input) > 1 and node.input[1]:
        value = view.const(node.input[1])
        if value is None:
            return None
        axes = value.reshape(-1).tolist()
    else:
        axes = attr(node, "axes", None)
        if axes is None:
            return None
    return sorted(int(a) % rank for a in axes)


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "ReduceMean":
        return False
    shape = view.static_shape(node.input[0])
    if shape is None or len(shape) not in (4, 5) or not view.is_float32(node.input[0]):
        return False
    if _axes(view, node, len(shape)) != list(range(2, len(shape))):
        return False
    keepdims = int(attr(node, "keepdims", 1))
    base = node.name or "spatial_mean"
    pooled = node.output[0] if keepdims else view.fresh(f"{base}_pooled")
    nodes = [helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=view.fresh(base))]
    if not keepdims:
        shape_name = view.add_initializer(np.array(shape[:2], np.int64), f"{base}_shape")
        nodes.append(
            helper.make_node("Reshape", [pooled, shape_name], [node.output[0]], name=view.fresh(base))
        )
    view.replace([node], nodes)
    return True


rewrite = node_rewrite(_match)

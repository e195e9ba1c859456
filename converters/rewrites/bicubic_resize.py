"""Bicubic Resize -> four Gathers and weighted sums per resized axis (TFLite builtins only).

TFLite has no bicubic resize kernel: onnx2tf emits TensorFlow's ResizeBicubic, which only the Flex
delegate runs (and which, with PyTorch's coefficient a = -0.75, does not even compute the same values:
measured 7.8e-2 relative error). Along one axis, each output element of a cubic resize is a fixed
4-tap weighted sum of input elements at clamped indices; the taps and weights depend only on the sizes.
So the resize is written out as a Gather of each tap along that axis, a Mul by its weights and a sum,
axis by axis, with the coordinate rules of ONNX Resize. GATHER, MUL and ADD run everywhere, in
channels-last too (the gathers index a spatial axis).
"""

from __future__ import annotations

import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite, text_attr
from edgeport.onnx_resize import CUBIC_COEFF_A, TRANSFORMS, cubic_taps

NAME = "bicubic_resize_to_gathers"


def _resize_plan(view: OnnxGraph, node: onnx.NodeProto) -> list[tuple[int, int, int, float]] | None:
    """(axis, in size, out size, scale) for each axis the cubic Resize changes, or None if unsupported."""
    if node.op_type != "Resize" or text_attr(node, "mode", "nearest") != "cubic":
        return None
    if text_attr(node, "coordinate_transformation_mode", "half_pixel") not in TRANSFORMS:
        return None
    if attr(node, "axes") is not None or attr(node, "antialias", 0):
        return None
    in_shape = view.static_shape(node.input[0])
    out_shape = view.static_shape(node.output[0])
    if in_shape is None or out_shape is None or len(in_shape) != len(out_shape):
        return None
    if not view.is_float32(node.input[0]):
        return None
    scales = view.input_const(node, 2) if len(node.input) > 2 and node.input[2] else None
    if scales is not None and scales.size == 0:
        scales = None
    plan = []
    for axis, (i, o) in enumerate(zip(in_shape, out_shape, strict=True)):
        scale = float(scales[axis]) if scales is not None else o / i
        if i == o and scale == 1.0:
            continue
        plan.append((axis, i, o, scale))
    return plan


def _rewrite_one(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    plan = _resize_plan(view, node)
    if not plan:
        return False
    mode = text_attr(node, "coordinate_transformation_mode", "half_pixel")
    a = float(attr(node, "cubic_coeff_a", CUBIC_COEFF_A))
    exclude = bool(attr(node, "exclude_outside", 0))
    rank = len(view.static_shape(node.input[0]))
    hint = node.name or "bicubic"
    nodes: list[onnx.NodeProto] = []
    current = node.input[0]
    for step, (axis, in_size, out_size, scale) in enumerate(plan):
        indices, weights = cubic_taps(in_size, out_size, scale, mode, a, exclude)
        shape = [1] * rank
        shape[axis] = out_size
        terms = []
        for tap in range(4):
            idx = view.add_initializer(indices[tap], f"{hint}_axis{axis}_tap{tap}_index")
            w = view.add_initializer(weights[tap].reshape(shape), f"{hint}_axis{axis}_tap{tap}_weight")
            gathered, weighted = view.fresh(f"{hint}_g{axis}_{tap}"), view.fresh(f"{hint}_w{axis}_{tap}")
            nodes.append(helper.make_node("Gather", [current, idx], [gathered], axis=axis))
            nodes.append(helper.make_node("Mul", [gathered, w], [weighted]))
            terms.append(weighted)
        last = step == len(plan) - 1
        total = terms[0]
        for k, term in enumerate(terms[1:]):
            out = node.output[0] if last and k == len(terms) - 2 else view.fresh(f"{hint}_sum{axis}")
            nodes.append(helper.make_node("Add", [total, term], [out]))
            total = out
        current = total
    for i, new in enumerate(nodes):
        new.name = view.fresh(f"{hint}_{new.op_type}_{i}")
    view.replace([node], nodes)
    return True


rewrite = node_rewrite(_rewrite_one)

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

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite, text_attr

NAME = "bicubic_resize_to_gathers"

_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")


def source_coordinates(in_size: int, out_size: int, scale: float, mode: str) -> np.ndarray:
    """ONNX Resize's coordinate_transformation_mode: the input coordinate of each output index."""
    o = np.arange(out_size, dtype=np.float64)
    if mode == "align_corners":
        return o * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return o / scale
    if mode == "pytorch_half_pixel" and out_size == 1:
        return np.zeros(1)
    return (o + 0.5) / scale - 0.5


def cubic_taps(
    in_size: int, out_size: int, scale: float, mode: str, a: float = -0.75
) -> tuple[np.ndarray, np.ndarray]:
    """(indices [4, out] clamped to the input, weights [4, out]) of cubic convolution with coefficient a."""
    x = source_coordinates(in_size, out_size, scale, mode)
    base = np.floor(x)
    t = x - base
    d = np.stack([t + 1, t, 1 - t, 2 - t])  # distance of each tap to the sample point

    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    weights = np.where(d <= 1, near, far)
    indices = np.clip(base[None, :] + np.arange(-1, 3)[:, None], 0, in_size - 1)
    return indices.astype(np.int64), weights.astype(np.float32)


def _resize_plan(view: OnnxGraph, node: onnx.NodeProto) -> list[tuple[int, int, int, float]] | None:
    """(axis, in size, out size, scale) for each axis the cubic Resize changes, or None if unsupported."""
    if node.op_type != "Resize" or text_attr(node, "mode", "nearest") != "cubic":
        return None
    if text_attr(node, "coordinate_transformation_mode", "half_pixel") not in _MODES:
        return None
    if attr(node, "exclude_outside", 0) or attr(node, "axes") is not None:
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
    a = float(attr(node, "cubic_coeff_a", -0.75))
    rank = len(view.static_shape(node.input[0]))
    hint = node.name or "bicubic"
    nodes: list[onnx.NodeProto] = []
    current = node.input[0]
    for step, (axis, in_size, out_size, scale) in enumerate(plan):
        indices, weights = cubic_taps(in_size, out_size, scale, mode, a)
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

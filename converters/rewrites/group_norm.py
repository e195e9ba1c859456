"""GroupNorm as PyTorch exports it -> per-channel statistics averaged over each group by a 1x1 conv.

The export is Reshape [N, C, ...] -> [N, G, -1], InstanceNormalization, Reshape back. onnx2tf keeps
image tensors channels-last, so each of those reshapes of the channel axis costs a TRANSPOSE pair
(measured: 8 TRANSPOSEs for two GroupNorms). The same statistics without touching the layout: the mean
of each channel over space (ReduceMean), averaged over the channels of its group (a constant 1x1 conv,
exact because every channel has the same number of elements), subtracted; the variance likewise.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite, opset_version

NAME = "group_norm_to_channel_stats"


def group_average(channels: int, groups: int, spatial_rank: int) -> np.ndarray:
    """1x1 conv weight [C, C, 1...] whose output channel c is the mean of the channels in c's group."""
    size = channels // groups
    group = np.arange(channels) // size
    weight = (group[:, None] == group[None, :]).astype(np.float32) / size
    return weight.reshape(channels, channels, *([1] * spatial_rank))


def _pattern(view: OnnxGraph, first: onnx.NodeProto) -> tuple[list[onnx.NodeProto], int, float] | None:
    """Reshape [N,C,*S]->[N,G,-1], InstanceNormalization, Reshape back: (nodes, groups, epsilon)."""
    if first.op_type != "Reshape":
        return None
    shape = view.static_shape(first.input[0])
    grouped = view.static_shape(first.output[0])
    norm = view.only_consumer(first.output[0], "InstanceNormalization")
    if shape is None or grouped is None or norm is None or len(shape) < 3 or len(grouped) != 3:
        return None
    n, c = shape[:2]
    groups = grouped[1]
    if grouped[0] != n or c % groups or grouped[2] != int(np.prod(shape[1:])) // groups:
        return None
    last = view.only_consumer(norm.output[0], "Reshape")
    if last is None or view.static_shape(last.output[0]) != shape:
        return None
    scale, bias = view.input_const(norm, 1), view.input_const(norm, 2)
    if scale is None or bias is None or not view.is_float32(first.input[0]):
        return None
    return [first, norm, last], groups, float(attr(norm, "epsilon", 1e-5))


def _reduce_mean(view: OnnxGraph, x: str, axes: list[int], out: str) -> onnx.NodeProto:
    """ReduceMean keeping dims; its axes are an attribute before opset 18 and an input from 18 on."""
    opset = opset_version(view.model, 17)
    if opset < 18:
        return helper.make_node("ReduceMean", [x], [out], axes=axes, keepdims=1)
    name = view.add_initializer(np.array(axes, np.int64), "spatial_axes")
    return helper.make_node("ReduceMean", [x, name], [out], keepdims=1)


def _rewrite_one(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    found = _pattern(view, node)
    if found is None:
        return False
    (first, norm, last), groups, eps = found
    x = first.input[0]
    shape = view.static_shape(x)
    c, spatial = shape[1], list(range(2, len(shape)))
    per_channel = np.repeat(view.input_const(norm, 1), c // groups).reshape(c, *([1] * len(spatial)))
    shift = np.repeat(view.input_const(norm, 2), c // groups).reshape(per_channel.shape)
    hint = norm.name or "group_norm"
    avg = view.add_initializer(group_average(c, groups, len(spatial)), f"{hint}_group_average")
    t = {k: view.fresh(f"{hint}_{k}") for k in ("m", "gm", "d", "d2", "v", "gv", "ve", "sd", "y", "ys")}
    nodes = [
        _reduce_mean(view, x, spatial, t["m"]),
        helper.make_node("Conv", [t["m"], avg], [t["gm"]]),
        helper.make_node("Sub", [x, t["gm"]], [t["d"]]),
        helper.make_node("Mul", [t["d"], t["d"]], [t["d2"]]),
        _reduce_mean(view, t["d2"], spatial, t["v"]),
        helper.make_node("Conv", [t["v"], avg], [t["gv"]]),
        helper.make_node(
            "Add", [t["gv"], view.add_initializer(np.array(eps, np.float32), f"{hint}_eps")], [t["ve"]]
        ),
        helper.make_node("Sqrt", [t["ve"]], [t["sd"]]),
    ]
    trivial = np.all(per_channel == 1) and np.all(shift == 0)
    nodes.append(helper.make_node("Div", [t["d"], t["sd"]], [last.output[0] if trivial else t["y"]]))
    if not trivial:
        scale_name = view.add_initializer(per_channel.astype(np.float32), f"{hint}_scale")
        shift_name = view.add_initializer(shift.astype(np.float32), f"{hint}_shift")
        nodes.append(helper.make_node("Mul", [t["y"], scale_name], [t["ys"]]))
        nodes.append(helper.make_node("Add", [t["ys"], shift_name], [last.output[0]]))
    for i, new in enumerate(nodes):
        new.name = view.fresh(f"{hint}_{new.op_type}_{i}")
    view.replace([first, norm, last], nodes)
    return True


rewrite = node_rewrite(_rewrite_one)

"""Option-A ResNet shortcut: `F.pad(x[:, :, ::s, ::s], channel pad)` -> one strided 1x1 Conv.

PyTorch exports the CIFAR ResNet down-sampling shortcut as Slice(steps on H, W) -> Pad(channels, zeros).
onnx2tf mistranslates that pair in NHWC (the channel pad lands on the wrong axis and transposes are
left behind; ResNet-20 comes out with relative error ~1). A 1x1 convolution with stride s whose weight
is the identity placed between zero rows computes exactly the same thing (each output is one input
times 1.0, or 0.0), converts to a single CONV_2D, and replaces two ops with one.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, node_rewrite, text_attr

NAME = "strided_shortcut_to_conv"


def _slice_strides(view: OnnxGraph, node: onnx.NodeProto, shape: list[int]) -> list[int] | None:
    """(stride_h, stride_w) when the Slice keeps every s-th pixel from 0 on the spatial axes only."""
    if len(node.input) < 3:
        return None
    starts = view.const(node.input[1])
    ends = view.const(node.input[2])
    if starts is None or ends is None:
        return None  # computed bounds (e.g. from Shape ops without onnxsim): not a fixed stride
    axes = view.const(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
    steps = (
        view.const(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones(len(starts), np.int64)
    )
    if axes is None or steps is None:
        return None
    strides = [1, 1]
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = int(axis) % 4
        if start != 0 or step < 1 or end < shape[axis]:
            return None  # an offset or cropping slice is not a plain 1x1 strided conv
        if axis < 2:
            if step != 1:
                return None
            continue
        strides[axis - 2] = int(step)
    return strides


def _channel_pads(view: OnnxGraph, node: onnx.NodeProto) -> tuple[int, int] | None:
    if text_attr(node, "mode", "constant") != "constant":
        return None
    pads = view.const(node.input[1]) if len(node.input) > 1 else None
    if pads is None or pads.size != 8:
        return None
    if len(node.input) > 3 and node.input[3]:
        return None  # opset-18 `axes` input: not produced by the exporters we target
    if len(node.input) > 2 and node.input[2]:
        value = view.const(node.input[2])
        if value is None or value.size != 1 or float(value.reshape(-1)[0]) != 0.0:
            return None
    begin, end = pads[:4].tolist(), pads[4:].tolist()
    if begin[0] or end[0] or begin[2] or end[2] or begin[3] or end[3] or min(begin[1], end[1]) < 0:
        return None
    return int(begin[1]), int(end[1])


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Slice":
        return False
    shape = view.static_shape(node.input[0])
    if shape is None or len(shape) != 4 or not view.is_float32(node.input[0]):
        return False
    strides = _slice_strides(view, node, shape)
    pad = view.only_consumer(node.output[0], "Pad")
    if strides is None or pad is None:
        return False
    pads = _channel_pads(view, pad)
    if pads is None:
        return False
    cin = shape[1]
    cout = pads[0] + cin + pads[1]
    weight = np.zeros((cout, cin, 1, 1), np.float32)
    weight[np.arange(cin) + pads[0], np.arange(cin), 0, 0] = 1.0
    conv = helper.make_node(
        "Conv",
        [node.input[0], view.add_initializer(weight, "shortcut_weight")],
        [pad.output[0]],
        name=view.fresh(pad.name or "shortcut_conv"),
        kernel_shape=[1, 1],
        strides=strides,
        pads=[0, 0, 0, 0],
    )
    view.replace([node, pad], [conv])
    return True


rewrite = node_rewrite(_match)

"""Option-A ResNet shortcut: `F.pad(x[:, :, ::s, ::s], channel pad)` -> one strided 1x1 Conv.

PyTorch exports the CIFAR ResNet down-sampling shortcut as Slice(steps on H, W) -> Pad(channels, zeros).
onnx2tf mistranslates that pair in NHWC (the channel pad lands on the wrong axis and transposes are
left behind; ResNet-20 comes out with relative error ~1). A 1x1 convolution with stride s whose weight
is the identity placed between zero rows computes exactly the same thing (each output is one input
times 1.0, or 0.0), converts to a single CONV_2D, and replaces two ops with one.

A pruned shortcut (quant/prune/channel_pads.py's ChannelGather) also keeps a run of the input's channels
(the Slice crops axis 1 too) or picks channels after the pad (a Gather on axis 1): both are rows of the
same 0/1 weight. onnx2tf failed on the crop where a tensor's C, H and W were equal ([1, 8, 8, 8]: a
ResNet-56 latency-search trial, "Dimensions must be equal, but are 8 and 4" at the block's Add).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, node_rewrite, text_attr

NAME = "strided_shortcut_to_conv"


def _slice_strides(view: OnnxGraph, node: onnx.NodeProto, shape: list[int]) -> tuple[list[int], range] | None:
    """((stride_h, stride_w), channels kept) when the Slice keeps every s-th pixel from 0 on the spatial
    axes and a run of channels (every channel, or a crop with step 1)."""
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
    strides, channels = [1, 1], range(shape[1])
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = int(axis) % 4
        if axis == 1 and step == 1:
            first = int(start) + shape[1] if start < 0 else int(start)
            stop = min(int(end) + shape[1] if end < 0 else int(end), shape[1])
            if not 0 <= first < stop:
                return None
            channels = range(first, stop)
            continue
        if start != 0 or step < 1 or end < shape[axis]:
            return None  # an offset or cropping slice is not a plain 1x1 strided conv
        if axis < 2:
            if step != 1:
                return None
            continue
        strides[axis - 2] = int(step)
    return strides, channels


def _picked(view: OnnxGraph, pad: onnx.NodeProto, width: int) -> tuple[onnx.NodeProto, list[int]] | None:
    """The Gather on axis 1 with constant in-range indices that alone reads the pad's output, and its
    indices (a pruned shortcut's channels chosen after the pad)."""
    gather = view.only_consumer(pad.output[0], "Gather")
    if gather is None or int(next((a.i for a in gather.attribute if a.name == "axis"), 0)) % 4 != 1:
        return None
    index = view.const(gather.input[1])
    if index is None or index.ndim != 1 or not len(index):
        return None
    index = [int(i) + width if i < 0 else int(i) for i in index]
    return (gather, index) if all(0 <= i < width for i in index) else None


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
    sliced = _slice_strides(view, node, shape)
    pad = view.only_consumer(node.output[0], "Pad")
    if sliced is None or pad is None:
        return False
    pads = _channel_pads(view, pad)
    if pads is None:
        return False
    strides, channels = sliced
    # Row r of the padded tensor copies input channel source[r], or is zero (None).
    source = [None] * pads[0] + list(channels) + [None] * pads[1]
    picked = _picked(view, pad, len(source))
    last = pad
    if picked is not None:
        last, index = picked
        source = [source[i] for i in index]
    weight = np.zeros((len(source), shape[1], 1, 1), np.float32)
    for row, channel in enumerate(source):
        if channel is not None:
            weight[row, channel, 0, 0] = 1.0
    conv = helper.make_node(
        "Conv",
        [node.input[0], view.add_initializer(weight, "shortcut_weight")],
        [last.output[0]],
        name=view.fresh(pad.name or "shortcut_conv"),
        kernel_shape=[1, 1],
        strides=strides,
        pads=[0, 0, 0, 0],
    )
    view.replace([node, pad] + ([last] if last is not pad else []), [conv])
    return True


rewrite = node_rewrite(_match)

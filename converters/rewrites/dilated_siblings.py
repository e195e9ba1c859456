"""Dilated Convs reading one tensor with the same geometry -> one Conv over all their channels, then Split.

TensorFlow runs a dilated conv as SpaceToBatchND -> conv -> BatchToSpaceND, and the TFLite converter
folds that back into one dilated CONV_2D only when the SpaceToBatchND has a single reader. Two
dilated convs of one input with the same dilation and padding (a WaveNet gate: tanh(f(h)) *
sigmoid(g(h))) share one SpaceToBatchND after TensorFlow's common-subexpression pass, and stay
SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND. TFLite Micro's int8 SPACE_TO_BATCH_ND never sets the pad value
it gives the shared reference kernel (SpaceToBatchParams.output_offset), so it pads with raw 0
instead of the zero point, a real value of -zero_point * scale where the model has 0: its outputs
differ from TFLite's reference kernels (zoo wavenet_gated: 16 steps). Written as one conv with the
output channels of all of them, split afterwards, each output channel is the same sum, and the
converter emits one dilated CONV_2D.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, opset_version

NAME = "dilated_sibling_convs_merged"

_GEOMETRY = ("kernel_shape", "strides", "dilations", "pads", "auto_pad", "group")


def _key(view: OnnxGraph, node: onnx.NodeProto) -> tuple | None:
    """What must match for two Convs to merge; None for a Conv this rewrite leaves alone."""
    if node.op_type != "Conv" or int(attr(node, "group", 1)) != 1 or not view.is_float32(node.input[0]):
        return None
    weight = view.input_const(node, 1)
    bias = view.input_const(node, 2) if len(node.input) > 2 and node.input[2] else None
    if weight is None or (len(node.input) > 2 and node.input[2] and bias is None):
        return None
    dilations = attr(node, "dilations", None)
    if dilations is None or all(d == 1 for d in dilations):
        return None
    geometry = tuple(str(attr(node, name, None)) for name in _GEOMETRY)
    return node.input[0], weight.shape[1:], geometry


def _merge(view: OnnxGraph, convs: list[onnx.NodeProto]) -> None:
    weights = [np.asarray(view.input_const(c, 1), np.float32) for c in convs]
    biases = [
        np.asarray(view.input_const(c, 2), np.float32)
        if len(c.input) > 2 and c.input[2]
        else np.zeros(w.shape[0], np.float32)
        for c, w in zip(convs, weights, strict=True)
    ]
    hint = convs[0].name or "conv"
    merged = view.fresh(f"{hint}_merged")
    conv = onnx.NodeProto()
    conv.CopyFrom(convs[0])
    conv.name = view.fresh(f"{hint}_merged_conv")
    del conv.input[:]
    conv.input.extend(
        [
            convs[0].input[0],
            view.add_initializer(np.concatenate(weights), f"{hint}_merged_weight"),
            view.add_initializer(np.concatenate(biases), f"{hint}_merged_bias"),
        ]
    )
    del conv.output[:]
    conv.output.append(merged)
    sizes = np.array([w.shape[0] for w in weights], np.int64)
    outputs = [c.output[0] for c in convs]
    if opset_version(view.model) >= 13:
        split = helper.make_node(
            "Split", [merged, view.add_initializer(sizes, f"{hint}_sizes")], outputs, axis=1
        )
    else:
        split = helper.make_node("Split", [merged], outputs, axis=1, split=sizes.tolist())
    split.name = view.fresh(f"{hint}_split")
    view.replace(convs, [conv, split], at="first")


def _siblings(view: OnnxGraph) -> list[onnx.NodeProto] | None:
    """The first set of two or more Convs that merge, or None."""
    groups: dict[tuple, list[onnx.NodeProto]] = defaultdict(list)
    for node in view.graph.node:
        key = _key(view, node)
        if key is not None:
            groups[key].append(node)
    return next((convs for convs in groups.values() if len(convs) > 1), None)


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    view = OnnxGraph(model)
    # One set at a time: replace() makes every node reference taken before it stale.
    while (convs := _siblings(view)) is not None:
        _merge(view, convs)
    return view.finish()

"""Pixel shuffle / unshuffle -> TFLite's DEPTH_TO_SPACE / SPACE_TO_DEPTH plus a channel Gather.

TFLite's depth-to-space (and ONNX's DepthToSpace mode DCR) orders the channels block-major: channel
(bh*b + bw)*C + c of the input moves to pixel (bh, bw) of channel c. PyTorch's pixel_shuffle is the
channel-major order (mode CRD, channel c*b*b + bh*b + bw), which onnx2tf translates with TRANSPOSEs;
pixel_unshuffle is exported as Reshape -> Transpose(0,1,3,5,2,4) -> Reshape, which onnx2tf translates
wrongly in channels-last (measured: max rel. error 1.2). Both are a DCR op and a fixed permutation of
the channels, and a Gather on the channel axis is what onnx2tf translates without a TRANSPOSE.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, text_attr

NAME = "pixel_shuffle_to_depth_to_space"


def crd_to_dcr(channels: int, block: int) -> np.ndarray:
    """`order[dcr] = crd`: the CRD channel index that lands at each DCR position (C = channels / b²).

    For depth-to-space, gathering the CRD input with `order` gives the DCR input; for space-to-depth,
    gathering the DCR output with `argsort(order)` gives the CRD output.
    """
    c = channels // (block * block)
    bh, bw, ch = np.meshgrid(np.arange(block), np.arange(block), np.arange(c), indexing="ij")
    return (ch * block * block + bh * block + bw).reshape(-1).astype(np.int64)


def _gather(view: OnnxGraph, source: str, indices: np.ndarray, out: str, hint: str) -> onnx.NodeProto:
    idx = view.add_initializer(indices, f"{hint}_channel_order")
    return helper.make_node("Gather", [source, idx], [out], name=view.fresh(f"{hint}_gather"), axis=1)


def _depth_to_space(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "DepthToSpace" or text_attr(node, "mode", "DCR") != "CRD":
        return False
    shape = view.static_shape(node.input[0])
    if shape is None or len(shape) != 4:
        return False
    block = int(attr(node, "blocksize"))
    hint = node.name or "depth_to_space"
    dcr = view.fresh(f"{hint}_dcr_input")
    gather = _gather(view, node.input[0], crd_to_dcr(shape[1], block), dcr, hint)
    d2s = helper.make_node(
        "DepthToSpace", [dcr], list(node.output), name=view.fresh(hint), blocksize=block, mode="DCR"
    )
    view.replace([node], [gather, d2s])
    return True


def _unshuffle_block(view: OnnxGraph, first: onnx.NodeProto) -> tuple[list[onnx.NodeProto], int] | None:
    """Reshape [N,C,H/b,b,W/b,b] -> Transpose(0,1,3,5,2,4) -> Reshape [N,C*b*b,H/b,W/b]: nodes, b."""
    if first.op_type != "Reshape":
        return None
    shape = view.static_shape(first.input[0])
    mid = view.static_shape(first.output[0])
    transpose = view.only_consumer(first.output[0], "Transpose")
    if shape is None or mid is None or len(shape) != 4 or len(mid) != 6 or transpose is None:
        return None
    if list(attr(transpose, "perm", [])) != [0, 1, 3, 5, 2, 4]:
        return None
    last = view.only_consumer(transpose.output[0], "Reshape")
    if last is None:
        return None
    n, c, h, w = shape
    block = mid[3]
    if block < 2 or mid != [n, c, h // block, block, w // block, block] or mid[5] != block:
        return None
    if view.static_shape(last.output[0]) != [n, c * block * block, h // block, w // block]:
        return None
    return [first, transpose, last], block


def _space_to_depth(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    found = _unshuffle_block(view, node)
    if found is None:
        return False
    nodes, block = found
    c = view.static_shape(node.input[0])[1]
    hint = node.name or "pixel_unshuffle"
    dcr = view.fresh(f"{hint}_dcr")
    s2d = helper.make_node("SpaceToDepth", [node.input[0]], [dcr], name=view.fresh(hint), blocksize=block)
    order = np.argsort(crd_to_dcr(c * block * block, block)).astype(np.int64)
    gather = _gather(view, dcr, order, nodes[-1].output[0], hint)
    view.replace(nodes, [s2d, gather])
    return True


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    view = OnnxGraph(model)
    view.rewrite_each(_depth_to_space)
    view.rewrite_each(_space_to_depth)
    return view.finish()

"""Sibling Slices that cut one axis into equal parts -> one Split without sizes (one TFLite SPLIT).

`torch.chunk(x, 2, dim=1)` exports as two Slices of the same tensor; onnx2tf makes a STRIDED_SLICE
of each. When the slices tile the whole axis in equal, contiguous pieces they are exactly a Split
into that many outputs, which onnx2tf maps to a single builtin SPLIT.
"""

from __future__ import annotations

from collections import defaultdict

import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, opset_version

NAME = "chunk_slices_to_split"


def _range(view: OnnxGraph, node: onnx.NodeProto, rank_shape: list[int]) -> tuple[int, int, int] | None:
    """(axis, start, end) of a single-axis, step-1 Slice with constant bounds."""
    if len(node.input) < 3:
        return None
    starts, ends = view.const(node.input[1]), view.const(node.input[2])
    axes = view.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    steps = view.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if starts is None or ends is None or starts.size != 1 or ends.size != 1:
        return None
    if len(node.input) > 3 and node.input[3] and axes is None:
        return None
    if len(node.input) > 4 and node.input[4] and (steps is None or steps.reshape(-1).tolist() != [1]):
        return None
    axis = int(axes.reshape(-1)[0]) if axes is not None else 0
    axis %= len(rank_shape)
    dim = rank_shape[axis]
    start, end = int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])
    start, end = (start + dim if start < 0 else start), (end + dim if end < 0 else end)
    return axis, max(0, min(start, dim)), max(0, min(end, dim))


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Slice":
        return False
    shape = view.static_shape(node.input[0])
    if shape is None or not shape:
        return False
    groups: dict[int, list[tuple[int, int, onnx.NodeProto]]] = defaultdict(list)
    for user in view.consumers(node.input[0]):
        if user.op_type == "Slice" and user.input[0] == node.input[0]:
            bounds = _range(view, user, shape)
            if bounds is not None:
                groups[bounds[0]].append((bounds[1], bounds[2], user))
    for axis, pieces in groups.items():
        pieces.sort(key=lambda p: p[0])
        sizes = [end - start for start, end, _ in pieces]
        contiguous = all(pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1))
        if (
            len(pieces) < 2
            or not contiguous
            or pieces[0][0] != 0
            or pieces[-1][1] != shape[axis]
            or len(set(sizes)) != 1
            or not any(p[2] is node for p in pieces)
        ):
            continue
        kwargs = {"axis": axis}
        if opset_version(view.model) >= 18:  # from opset 18 the part count is an attribute
            kwargs["num_outputs"] = len(pieces)
        split = helper.make_node(
            "Split",
            [node.input[0]],
            [p[2].output[0] for p in pieces],
            name=view.fresh(f"{pieces[0][2].name or 'chunk'}_split"),
            **kwargs,
        )
        view.replace([p[2] for p in pieces], [split], at="first")
        return True
    return False


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    view = OnnxGraph(model)
    if opset_version(view.model) < 13:  # Split took sizes as an attribute before opset 13
        return view.finish()
    view.rewrite_each(_match)
    return view.finish()

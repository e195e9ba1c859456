"""Slice over axes it keeps whole -> a Slice of only the axes it cuts, its bounds clamped to the shape.

onnxsim fuses consecutive Slices into one over every axis, with 0..INT64_MAX on the axes it keeps
whole. onnx2tf maps such a Slice wrongly onto a tensor it holds channels-last: silero-vad's STFT
halves (a Conv1d output cut at channel 129) came out 258 and 0 channels wide, and the model then
failed far downstream. Sliced along the one axis that is cut, onnx2tf gets it right, and sibling
halves become one Split (chunk_slices_to_split runs after this). A Slice that cuts nothing at all
becomes an Identity: onnx2tf cut magika's (a JAX export: a Conv output of width 1, sliced 0:1 on that
axis and 0..INT_MAX on the others) to one channel. Slices whose bounds are not constants, whose input
shape is not static, or that step other than 1 are left alone.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, node_rewrite

NAME = "slice_whole_axes"


def _clamp(value: int, dim: int) -> int:
    return max(0, min(value + dim if value < 0 else value, dim))


def cut_axes(
    shape: list[int], starts: list[int], ends: list[int], axes: list[int], steps: list[int]
) -> list[tuple[int, int, int, int]] | None:
    """(axis, start, end, step) of each axis the Slice really cuts, bounds clamped (steps of 1 only):
    [] when it cuts nothing (an identity); None when it does not simplify (a negative or non-unit
    step, or nothing to drop or clamp)."""
    if any(step != 1 for step in steps) or len({a % len(shape) for a in axes}) != len(axes):
        return None
    cut, simpler = [], False
    for start, end, axis in zip(starts, ends, axes, strict=True):
        axis %= len(shape)
        lo, hi = _clamp(start, shape[axis]), _clamp(end, shape[axis])
        if lo == 0 and hi == shape[axis]:
            simpler = True
            continue
        simpler = simpler or (lo, hi) != (start, end)
        cut.append((axis, lo, hi, 1))
    return cut if simpler else None


def _ints(view: OnnxGraph, node: onnx.NodeProto, index: int) -> list[int] | None:
    value = view.input_const(node, index)
    return None if value is None else [int(v) for v in value.reshape(-1)]


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Slice" or node.domain not in ("", "ai.onnx") or len(node.input) < 3:
        return False
    shape = view.static_shape(node.input[0])
    starts, ends = _ints(view, node, 1), _ints(view, node, 2)
    if shape is None or not shape or starts is None or ends is None or len(starts) != len(ends):
        return False
    axes = _ints(view, node, 3) if len(node.input) > 3 and node.input[3] else list(range(len(starts)))
    steps = _ints(view, node, 4) if len(node.input) > 4 and node.input[4] else [1] * len(starts)
    if axes is None or steps is None or not len(axes) == len(steps) == len(starts):
        return False
    cut = cut_axes(shape, starts, ends, axes, steps)
    if cut is None:
        return False
    hint = node.name or "slice"
    if not cut:
        name = node.name or view.fresh(hint)  # the node it replaces keeps its name: errors name it
        view.replace([node], [helper.make_node("Identity", [node.input[0]], list(node.output), name=name)])
        return True
    bounds = [
        view.add_initializer(np.array([c[i] for c in cut], dtype=np.int64), f"{hint}_{what}")
        for i, what in ((1, "starts"), (2, "ends"), (0, "axes"), (3, "steps"))
    ]
    new = helper.make_node("Slice", [node.input[0], *bounds], list(node.output), name=view.fresh(hint))
    view.replace([node], [new])
    return True


rewrite = node_rewrite(_match)

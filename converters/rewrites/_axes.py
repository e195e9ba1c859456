"""Squeeze / Unsqueeze in place of a Reshape that only drops or adds axes of size 1.

onnx2tf converts a Reshape of a tensor of rank 3 or more (and a MatMul) only after building and running
a Keras model of the whole graph up to it, an accuracy check; Squeeze and Unsqueeze it converts as they
come. In a graph with hundreds of such nodes (a recurrence written out step by step, its sequence
assembled for the next layer) that check makes the conversion time quadratic in the graph's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, opset_version


def unit_axes(shape: Sequence[int], target: Sequence[int]) -> list[int] | None:
    """The axes of `shape`, all of size 1, whose removal leaves `target`; None when `target` is not
    `shape` with some axes of size 1 removed (or is `shape` itself)."""
    dropped, j = [], 0
    for i, size in enumerate(shape):
        if j < len(target) and size == target[j]:
            j += 1
        elif size == 1:
            dropped.append(i)
        else:
            return None
    return dropped if j == len(target) and dropped else None


def axes_node(view: OnnxGraph, op_type: str, x: str, axes: list[int], out: str, name: str) -> onnx.NodeProto:
    """A Squeeze or Unsqueeze of `axes`, spelled for the model's opset (an input from 13 on)."""
    if opset_version(view.model) < 13:
        return helper.make_node(op_type, [x], [out], name=name, axes=axes)
    const = view.add_initializer(np.array(axes, np.int64), f"{name}_axes")
    return helper.make_node(op_type, [x, const], [out], name=name)


def reshape_node(
    view: OnnxGraph, x: str, shape: Sequence[int], target: Sequence[int], out: str, name: str
) -> onnx.NodeProto:
    """`x` of static `shape` as `target`: a Squeeze or Unsqueeze when only axes of size 1 differ,
    else a Reshape (the same shape included: a node stays, e.g. between two Concats the TFLite
    converter would otherwise fold into one)."""
    shape, target = list(shape), list(target)
    dropped = unit_axes(shape, target)
    if dropped is not None:
        return axes_node(view, "Squeeze", x, dropped, out, name)
    added = unit_axes(target, shape)
    if added is not None:
        return axes_node(view, "Unsqueeze", x, added, out, name)
    const = view.add_initializer(np.array(target, np.int64), f"{name}_shape")
    return helper.make_node("Reshape", [x, const], [out], name=name)

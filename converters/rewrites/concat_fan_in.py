"""A Concat of more than 10 tensors -> Concats of at most 10, each group flattened before the next.

TFLite Micro's CONCATENATION kernel takes at most 10 inputs (kMaxInputNum in concatenation.cc) and
refuses to prepare a model with more; LiteRT has no such limit, so the converted model runs there and
fails only on the microcontroller. Sequences are where such Concats come from: a recurrent layer
written out step by step (rnn_unroll) or a `torch.stack` / `torch.cat` over the steps of a hand-written
cell loop.

A plain tree of Concats does not survive: the TFLite converter folds nested Concats along one axis back
into one (a bidirectional layer's per-step [forward, backward] Concats and the Concat of the steps
became one CONCATENATION of 12). So the inputs are counted as the converter will see them, through
nested Concats along the same axis, and each group's result is reshaped to [P, n] (P the product of
the dimensions before the axis; concatenating along the axis is concatenating these rows), the groups
are concatenated along the last axis, one rank higher at each further level, and a last Reshape gives
the Concat's shape. Where shapes are static, a regrouping that only drops or adds axes of size 1 is a
Squeeze / Unsqueeze: onnx2tf checks each Reshape of a 3-D tensor by running the whole graph up to it
(_axes.py).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from edgeport.converters.rewrites._axes import reshape_node
from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite

NAME = "concat_fan_in"

MAX_INPUTS = 10


def _leaves(view: OnnxGraph, node: onnx.NodeProto, axis: int, nest: list[onnx.NodeProto]) -> list[str]:
    """The inputs of `node` with each input made by a Concat along the same axis, and read only here,
    replaced by that Concat's own inputs (recursively); `nest` collects those Concats."""
    leaves = []
    for name in node.input:
        inner = view.producer(name)
        shape = view.static_shape(name)
        if (
            inner is not None
            and inner.op_type == "Concat"
            and shape is not None
            and int(attr(inner, "axis")) % len(shape) == axis
            and len(view.consumers(name)) == 1
            and not view.is_graph_output(name)
        ):
            nest.append(inner)
            leaves += _leaves(view, inner, axis, nest)
        else:
            leaves.append(name)
    return leaves


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Concat":
        return False
    out_shape = view.static_shape(node.output[0])
    if out_shape is None:
        return False
    axis = int(attr(node, "axis")) % len(out_shape)
    nest: list[onnx.NodeProto] = []
    leaves = _leaves(view, node, axis, nest)
    if len(leaves) <= MAX_INPUTS:
        return False
    rows = math.prod(out_shape[:axis])
    new: list[onnx.NodeProto] = []

    def add(op: str, inputs: list[str], hint: str, out: str | None = None, **kw) -> str:
        name = out or view.fresh(f"{node.output[0]}_{hint}")
        new.append(helper.make_node(op, inputs, [name], name=view.fresh(f"{node.name}_{hint}"), **kw))
        return name

    # Static shapes where known: a regrouping that only drops or adds axes of size 1 is then a
    # Squeeze / Unsqueeze (_axes.reshape_node). Every group keeps a node after its Concat.
    shapes: dict[str, list[int] | None] = {leaf: view.static_shape(leaf) for leaf in leaves}

    def joined_shape(group: list[str], along: int) -> list[int] | None:
        known = [shapes[g] for g in group]
        if not all(known):
            return None
        joined = list(known[0] or [])
        joined[along] = sum((k or [])[along] for k in known)
        return joined

    def regroup(x: str, shape: list[int] | None, target: list[int], hint: str, out: str | None = None) -> str:
        name = out or view.fresh(f"{node.output[0]}_{hint}")
        node_name = view.fresh(f"{node.name}_{hint}")
        if shape is None:
            const = view.add_initializer(np.array(target, np.int64), f"{node.output[0]}_{hint}")
            new.append(helper.make_node("Reshape", [x, const], [name], name=node_name))
        else:
            new.append(reshape_node(view, x, shape, target, name, node_name))
        shapes[name] = None if -1 in target else list(target)
        return name

    pieces, level = leaves, 0
    while len(pieces) > MAX_INPUTS:
        groups = [pieces[i : i + MAX_INPUTS] for i in range(0, len(pieces), MAX_INPUTS)]
        along = axis if level == 0 else -1
        next_pieces = []
        for g in groups:
            joined = add("Concat", g, "part", axis=along) if len(g) > 1 else g[0]
            shape = joined_shape(g, along)
            shapes[joined] = shape
            size = math.prod(shape) // rows if shape is not None else -1
            next_pieces.append(regroup(joined, shape, [rows, *[1] * level, size], "rows"))
        pieces = next_pieces
        level += 1
    last = add("Concat", pieces, "joined", axis=-1)
    regroup(last, joined_shape(pieces, -1), list(out_shape), "shape", out=node.output[0])
    view.replace([*nest, node], new)
    return True


rewrite = node_rewrite(_match)

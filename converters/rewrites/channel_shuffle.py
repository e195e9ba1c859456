"""Channel shuffle, in any spelling -> one Gather with constant indices on the permuted axis.

ShuffleNet's shuffle is a fixed permutation of the channel axis, written as `view / transpose / view`,
`reshape / permute / reshape`, einops-style unflatten / swap / flatten, `torch.stack(x.chunk(g), 2)
.flatten(1, 2)`, or strided channel slices concatenated. onnx2tf sees 5-D reshapes and transposes (or
a stack of splits) of a tensor it holds as NHWC and brackets them with TRANSPOSEs back to NCHW (6 in a
two-unit ShuffleNet). A Gather with constant indices on the channel axis is the same permutation,
which onnx2tf maps to one GATHER on the NHWC channel axis.

The matcher does not parse the spelling: for a tensor y computed from one tensor x of the same shape
by element-moving ops only (Reshape, Transpose, Split, Concat, Slice, Unsqueeze, ...), it runs those
ops on element indices and rewrites when the result moves elements along one axis only.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper

from edgeport.converters.rewrites._index_trace import MOVE_OPS, data_inputs, element_sources, params_constant
from edgeport.onnx_graph import OnnxGraph, node_rewrite

NAME = "channel_shuffle_to_gather"
log = logging.getLogger(__name__)
_MAX_REGION = 64  # nodes; a shuffle is a handful, this only bounds the search


def _region(
    view: OnnxGraph, last: onnx.NodeProto, stop: str | None = None
) -> tuple[list[onnx.NodeProto], set[str], list[str]]:
    """The element-moving nodes that compute `last` back to `stop` (or as far as they go), the
    non-constant tensors they start from, and every tensor they read, nearest first."""
    region: dict[int, onnx.NodeProto] = {}
    leaves: set[str] = set()
    seen: list[str] = []
    pending = [last]
    while pending:
        node = pending.pop(0)
        if id(node) in region:
            continue
        region[id(node)] = node
        for name in data_inputs(node):
            if view.const(name) is not None:
                continue
            seen.append(name)
            producer = view.producer(name)
            if (
                name != stop
                and producer is not None
                and producer.op_type in MOVE_OPS
                and params_constant(view, producer)
                and len(region) + len(pending) < _MAX_REGION
            ):
                pending.append(producer)
            else:
                leaves.add(name)
    order = {id(n): i for i, n in enumerate(view.graph.node)}
    return sorted(region.values(), key=lambda n: order[id(n)]), leaves, seen


def _single_axis_permutation(index: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(axis, indices) when y[..., i, ...] = x[..., indices[i], ...] along one axis, y and x same shape."""
    coords = np.unravel_index(index, index.shape)
    grid = np.indices(index.shape)
    moved = [a for a in range(index.ndim) if not (coords[a] == grid[a]).all()]
    if len(moved) != 1:
        return None
    (axis,) = moved
    along = np.moveaxis(coords[axis], axis, 0).reshape(index.shape[axis], -1)
    if not (along == along[:, :1]).all():
        return None
    return axis, along[:, 0].astype(np.int64)


def _escapes(view: OnnxGraph, nodes: list[onnx.NodeProto], y: str) -> bool:
    """True when a tensor computed inside the region other than y is read outside it."""
    members = {id(n) for n in nodes}
    return any(
        name != y and (view.is_graph_output(name) or any(id(c) not in members for c in view.consumers(name)))
        for node in nodes
        for name in node.output
    )


def _match(view: OnnxGraph, last: onnx.NodeProto) -> bool:
    if last.op_type not in MOVE_OPS or len(last.output) != 1:
        return False
    y = last.output[0]
    shape = view.static_shape(y)
    if shape is None or len(shape) < 2:
        return False
    if last.op_type == "Gather" and view.const(last.input[1]) is not None:
        return False  # already one Gather
    if not params_constant(view, last):
        return False
    found = _region(view, last)
    # The region may start at any tensor of y's shape on the way back (a shuffle after a Concat of
    # two branches starts at the Concat, not at the branches): the farthest one that works wins.
    starts = [t for t in dict.fromkeys(reversed(found[2])) if view.static_shape(t) == shape]
    for x in starts:
        region = _region(view, last, stop=x)
        if region[1] != {x}:
            continue
        nodes = region[0]
        if _escapes(view, nodes, y):
            continue
        try:
            index = element_sources(view, nodes, x, y)
        except ValueError as why:
            log.info("%s: %s left as it is: %s", NAME, y, why)
            continue
        perm = _single_axis_permutation(index)
        if perm is not None and not (perm[1] == np.arange(shape[perm[0]])).all():
            break
    else:
        return False
    axis, indices = perm
    gather = helper.make_node(
        "Gather",
        [x, view.add_initializer(indices, "shuffle_indices")],
        [y],
        name=view.fresh(last.name or "channel_shuffle"),
        axis=axis,
    )
    view.replace(nodes, [gather])
    return True


rewrite = node_rewrite(_match)

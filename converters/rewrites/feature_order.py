"""Conv features turned into a sequence, (channel, frequency) order -> (frequency, channel) order, with
the weights that read them reordered to match.

A convolutional front end before a recurrent layer (keyword spotting, CRNN) turns its [N, C, T, F] map
into a sequence with `x.permute(0, 2, 1, 3).reshape(N, T, C * F)`. onnx2tf holds the map channels-last
([N, T, F, C]), so the permute is a real TRANSPOSE. Reading the features in (F, C) order instead,
Transpose(0, 2, 3, 1), is the layout onnx2tf already has (no op), and the sequence's only readers are
weights along its last axis: the input weights of GRU / LSTM / RNN nodes, or a MatMul's constant
matrix, whose columns (rows) are permuted the same way. Transposes that keep the last axis in place
(the exporter's batch-first swap) may come between.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgeport.onnx_graph import OnnxGraph, attr, set_attr

NAME = "feature_order"

_RECURRENT = {"GRU", "LSTM", "RNN"}


def _weight_readers(view: OnnxGraph, tensor: str, width: int) -> list[tuple[onnx.NodeProto, int, int]] | None:
    """(node, input index, axis) of every weight reading the last axis of `tensor`, through Transposes
    that keep that axis last; None if anything else reads it."""
    if view.is_graph_output(tensor) or not view.consumers(tensor):
        return None
    found = []
    for reader in view.consumers(tensor):
        if reader.op_type == "Transpose":
            perm = list(attr(reader, "perm") or [])
            rest = (
                _weight_readers(view, reader.output[0], width) if perm and perm[-1] == len(perm) - 1 else None
            )
            if rest is None:
                return None
            found += rest
        elif reader.op_type in _RECURRENT and list(reader.input).index(tensor) == 0:
            w = view.const(reader.input[1])
            if w is None or w.shape[-1] != width or attr(reader, "layout", 0):
                return None
            found.append((reader, 1, 2))
        elif reader.op_type == "MatMul" and reader.input[0] == tensor and reader.input[1] != tensor:
            b = view.const(reader.input[1])
            if b is None or b.ndim != 2 or b.shape[0] != width:
                return None
            found.append((reader, 1, 0))
        else:
            return None
    return found


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Transpose" or list(attr(node, "perm") or []) != [0, 2, 1, 3]:
        return False
    shape = view.static_shape(node.input[0])
    reshape = view.only_consumer(node.output[0], "Reshape")
    source = view.producer(node.input[0])
    # A recurrent node's 4-D Y [steps, directions, batch, hidden] has the same spelling for joining the
    # directions; rnn_unroll writes that out with no transpose at all.
    if (
        shape is None
        or len(shape) != 4
        or reshape is None
        or (source is not None and source.op_type in _RECURRENT)
    ):
        return False
    n, c, t, f = shape
    if c == 1 or f == 1 or view.static_shape(reshape.output[0]) != [n, t, c * f]:
        return False
    readers = _weight_readers(view, reshape.output[0], c * f)
    if not readers:
        return False
    # New feature position p = fi * c + ci holds old feature ci * f + fi.
    order = np.arange(c * f).reshape(c, f).T.reshape(-1)
    for reader, index, axis in readers:
        weight = view.const(reader.input[index])
        view.set_input_const(reader, index, np.take(weight, order, axis=axis), f"{reader.name}_feature_order")
    set_attr(node, "perm", [0, 2, 3, 1])
    stale = [v for v in view.graph.value_info if v.name == node.output[0]]
    for v in stale:
        view.graph.value_info.remove(v)
    view.changed += 1
    view.reindex()
    return True


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    view = OnnxGraph(model)
    for node in list(view.graph.node):
        _match(view, node)
    return view.finish()

"""q, k, v taken from a rank-5 [3, batch, heads, seq, dim] tensor -> each sliced from the projection.

Vision-transformer attention (timm's, PaddleOCR's SVTR) reshapes the qkv projection [B, N, 3*H*D] to
[B, N, 3, H, D], transposes it to [3, B, H, N, D] and takes q, k, v as its index 0, 1, 2 (Gather, or
Slice + Squeeze). onnx2tf writes each as a rank-5 STRIDED_SLICE, which TFLite Micro refuses ("input
dim should not exceed 4", int8 and float: PP-OCRv4 recognition). Index i of that tensor is the
projection's columns [i*H*D, (i+1)*H*D) reshaped to [B, N, H, D] and transposed to [B, H, N, D]: a
rank-3 Slice, a Reshape and a rank-4 Transpose, the same elements in the same order. The attention
rewrite (attention_to_batched_heads) does more for opset >= 13 graphs; this one is what older
exports (Paddle's opset 11) and attention the batched-heads matcher leaves alone still get.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite, opset_version

NAME = "head_unpack_rank4"

MIN_RANK = 5  # TFLite Micro's STRIDED_SLICE, GATHER and TRANSPOSE kernels stop at 4 or 5 dims


def _squeezed_axes(view: OnnxGraph, node: onnx.NodeProto) -> list[int] | None:
    if len(node.input) > 1:
        axes = view.input_const(node, 1)
        return None if axes is None else [int(a) for a in np.ravel(axes)]
    axes = attr(node, "axes")
    return None if axes is None else [int(a) for a in axes]


def _taken_index(view: OnnxGraph, node: onnx.NodeProto, size: int) -> tuple[int, str, list] | None:
    """(index along axis 0, the tensor holding that slice without axis 0, nodes to replace) for a
    reader of the transposed tensor that takes one index of its first axis, else None."""
    if node.op_type == "Gather" and int(attr(node, "axis", 0)) == 0:
        index = view.input_const(node, 1)
        if index is None or index.ndim != 0:
            return None
        return int(index) % size, node.output[0], [node]
    if node.op_type != "Slice" or len(node.input) < 4:
        return None
    starts, ends, axes = (view.input_const(node, i) for i in (1, 2, 3))
    steps = view.input_const(node, 4) if len(node.input) > 4 and node.input[4] else np.ones(1, np.int64)
    if any(v is None or np.size(v) != 1 for v in (starts, ends, axes, steps)):
        return None
    start = int(np.ravel(starts)[0]) % size
    if (
        int(np.ravel(axes)[0]) != 0
        or int(np.ravel(steps)[0]) != 1
        or min(int(np.ravel(ends)[0]), size) != start + 1
    ):
        return None
    squeeze = view.only_consumer(node.output[0], "Squeeze")
    if squeeze is None or _squeezed_axes(view, squeeze) != [0]:
        return None
    return start, squeeze.output[0], [node, squeeze]


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    # Slice takes its bounds as inputs from opset 10
    if node.op_type != "Transpose" or opset_version(view.model) < 10:
        return False
    reshape = view.producer(node.input[0])
    if reshape is None or reshape.op_type != "Reshape" or view.is_graph_output(node.output[0]):
        return False
    source = reshape.input[0]
    shape, split = view.static_shape(source), view.static_shape(reshape.output[0])
    perm = [int(p) for p in attr(node, "perm", [])]
    if shape is None or split is None or len(split) < MIN_RANK or len(perm) != len(split):
        return False
    axis = perm[0]
    # The Reshape must only split the projection's last axis, and axis 0 after the transpose must be
    # the first of the split axes: then index i is one contiguous block of columns.
    if axis != len(shape) - 1 or split[:axis] != shape[:-1] or math.prod(split[axis:]) != shape[-1]:
        return False
    takes = [_taken_index(view, reader, split[axis]) for reader in view.consumers(node.output[0])]
    if not takes or any(t is None for t in takes):
        return False
    block = math.prod(split[axis + 1 :])
    rest_perm = [p - (p > axis) for p in perm[1:]]
    hint = node.name or "heads"
    new, old = [], [node]
    for index, out, replaced in takes:
        old += replaced
        bounds = [
            view.add_initializer(np.array(values, np.int64), f"{hint}_{what}")
            for what, values in (
                ("starts", [index * block]),
                ("ends", [(index + 1) * block]),
                ("axes", [len(shape) - 1]),
            )
        ]
        target = view.add_initializer(np.array(split[:axis] + split[axis + 1 :], np.int64), f"{hint}_shape")
        sliced, heads = view.fresh(f"{hint}_{index}_cols"), view.fresh(f"{hint}_{index}_split")
        new += [
            helper.make_node("Slice", [source, *bounds], [sliced], name=view.fresh(f"{hint}_{index}_slice")),
            helper.make_node(
                "Reshape", [sliced, target], [heads], name=view.fresh(f"{hint}_{index}_reshape")
            ),
            helper.make_node(
                "Transpose", [heads], [out], name=view.fresh(f"{hint}_{index}_perm"), perm=rest_perm
            ),
        ]
    # Where the Transpose was: the new nodes read only the projection, which comes before it.
    view.replace(old, new, at="first")
    return True


rewrite = node_rewrite(_match)

"""Ceil-mode pooling -> explicit end padding (and TF-style SAME padding where the geometry allows).

Two problems with `MaxPool/AvgPool(ceil_mode=True)` as PyTorch exports them:

* onnxruntime disagrees with PyTorch on AveragePool(ceil_mode=1, count_include_pad=1) whenever the last
  window runs past the input: PyTorch divides by the part of the window inside input + padding, ORT
  counts the overhang as padding (measured: 0.2 absolute error on a 3x3/2 pool of an 8x8 map). The
  ONNX stage of the verification would then fail for a model that converts correctly.
* onnx2tf emulates the overhang with an extra PAD plus STRIDED_SLICE/CONCATENATION/MUL corrections.

The overhang is the same as padding the end of each spatial axis by `extra` elements that no window
counts. So: explicit zero padding becomes a Pad node (those zeros *are* counted, as in PyTorch), the
pool gets `count_include_pad=0` and the overhang as end padding with ceil_mode=0. When the resulting
padding is exactly TensorFlow's SAME padding the node says `auto_pad=SAME_UPPER` instead, which onnx2tf
maps to a single TFLite pool with SAME padding (TFLite pools never count padding, like
count_include_pad=0 and like max pooling).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite, set_attr, text_attr

NAME = "ceil_pool_to_explicit_pads"


def _out_size(size: int, k: int, s: int, d: int, pb: int, pe: int) -> int:
    """Ceil-mode output size with the rule PyTorch and ONNX share: the last window must start
    inside the input or the begin padding."""
    eff = (k - 1) * d + 1
    out = math.ceil((size + pb + pe - eff) / s) + 1
    if (out - 1) * s >= size + pb:
        out -= 1
    return out


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type not in ("MaxPool", "AveragePool") or not attr(node, "ceil_mode", 0):
        return False
    if text_attr(node, "auto_pad", "NOTSET") != "NOTSET" or len(node.output) != 1:
        return False
    shape = view.static_shape(node.input[0])
    out_shape = view.static_shape(node.output[0])
    if shape is None or out_shape is None or not view.is_float32(node.input[0]):
        return False
    spatial = shape[2:]
    n = len(spatial)
    kernel = list(attr(node, "kernel_shape"))
    strides = list(attr(node, "strides", [1] * n))
    dilations = list(attr(node, "dilations", [1] * n))
    pads = list(attr(node, "pads", [0] * 2 * n))
    begin, end = pads[:n], pads[n:]
    outs = [_out_size(*args) for args in zip(spatial, kernel, strides, dilations, begin, end, strict=True)]
    if outs != out_shape[2:]:
        return False  # a geometry this formula does not describe: leave it to onnx2tf
    extra = [
        (o - 1) * s + (k - 1) * d + 1 - (size + pb + pe)
        for o, s, k, d, size, pb, pe in zip(
            outs, strides, kernel, dilations, spatial, begin, end, strict=True
        )
    ]
    if any(e < 0 for e in extra) or not any(extra):
        return False  # no window hangs over the end: ceil_mode changes nothing here
    new_nodes = []
    pool = onnx.NodeProto()
    pool.CopyFrom(node)
    pool_input = node.input[0]
    if node.op_type == "AveragePool" and attr(node, "count_include_pad", 0):
        if any(pads):
            # The explicit zeros count in the average (as in PyTorch): make them real zeros.
            padded = view.fresh(f"{node.output[0]}_padded")
            new_nodes.append(
                helper.make_node(
                    "Pad",
                    [
                        pool_input,
                        view.add_initializer(np.array([0, 0, *begin, 0, 0, *end], np.int64), "pool_pads"),
                    ],
                    [padded],
                    name=view.fresh(f"{node.name or 'pool'}_pad"),
                    mode="constant",
                )
            )
            pool_input = padded
            spatial = [size + pb + pe for size, pb, pe in zip(spatial, begin, end, strict=True)]
            begin, end = [0] * n, [0] * n
        set_attr(pool, "count_include_pad", 0)
    pool.input[0] = pool_input
    end = [pe + e for pe, e in zip(end, extra, strict=True)]
    set_attr(pool, "ceil_mode", 0)
    same = []
    for size, s, k, d in zip(spatial, strides, kernel, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        same.extend([total // 2, total - total // 2])
    if [p for pair in zip(begin, end, strict=True) for p in pair] == same:
        for i, a in enumerate(pool.attribute):
            if a.name == "pads":
                del pool.attribute[i]
                break
        set_attr(pool, "auto_pad", "SAME_UPPER")
    else:
        set_attr(pool, "pads", [*begin, *end])
    new_nodes.append(pool)
    view.replace([node], new_nodes)
    return True


rewrite = node_rewrite(_match)

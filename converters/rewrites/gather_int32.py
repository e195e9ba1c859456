"""Gather with constant int64 indices -> the same indices as int32 (ONNX allows both).

PyTorch exports index constants as int64 (index_select, a channel shuffle's permutation), onnx2tf keeps
that type, and the .tflite's GATHER then reads int64 positions, which TFLite Micro's GATHER refuses
("Positions of type 'INT64' are not supported by gather", in int8 and float): the model converted but
could not run on a microcontroller. Constant indices that fit in int32 lose nothing.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgeport.onnx_graph import OnnxGraph, node_rewrite

NAME = "gather_int32_indices"
_INT32 = np.iinfo(np.int32)


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Gather" or len(node.input) < 2:
        return False
    indices = view.const(node.input[1])
    if indices is None or indices.dtype != np.int64 or indices.size == 0:
        return False
    if indices.min() < _INT32.min or indices.max() > _INT32.max:
        return False
    view.set_input_const(node, 1, indices.astype(np.int32), hint=f"{node.input[1]}_int32")
    return True


rewrite = node_rewrite(_match)

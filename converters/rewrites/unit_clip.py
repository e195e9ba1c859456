"""Clip to [0, 1] or [-1, 1] -> ops TFLite Micro has kernels for.

The TFLite converter fuses a clamp to [0, 1] into RELU_0_TO_1 and one to [-1, 1] (nn.Hardtanh,
F.hardtanh, torch.clamp(x, -1, 1)) into RELU_N1_TO_1, in every order of MINIMUM and MAXIMUM; TFLite
Micro has neither kernel, int8 or float, so such a model could not be quantized for a
microcontroller. [0, 1] is written as Min(x, 1) then Max(0), which the converter emits as MINIMUM and
RELU (exact; the form hard_sigmoid_to_min_max uses). [-1, 1] is written as Min(Relu(x + 1) - 1, 1),
which stays ADD (with a fused RELU), SUB and MINIMUM: values outside [-1, 1] come out as exactly -1
or 1, those inside within half an ulp of 1 (6e-8) of x, from the rounding of x + 1.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite

NAME = "unit_clip_to_min_relu"


def _bounds(view: OnnxGraph, node: onnx.NodeProto) -> tuple[float, float] | None:
    """The constant (min, max), from inputs (opset 11 on) or attributes; None if either is absent."""
    if len(node.input) > 1:
        values = [
            view.input_const(node, i) if len(node.input) > i and node.input[i] else None for i in (1, 2)
        ]
    else:
        values = [attr(node, "min"), attr(node, "max")]
    if any(v is None or np.size(v) != 1 for v in values):
        return None
    low, high = (float(np.ravel(v)[0]) for v in values)
    return low, high


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Clip" or not view.is_float32(node.input[0]):
        return False
    bounds = _bounds(view, node)
    if bounds not in ((0.0, 1.0), (-1.0, 1.0)):
        return False
    x, out, hint = node.input[0], node.output[0], node.name or "clip"

    def const(value: float, what: str) -> str:
        return view.add_initializer(np.array(value, np.float32), f"{hint}_{what}")

    if bounds == (0.0, 1.0):
        capped = view.fresh(f"{hint}_capped")
        nodes = [
            helper.make_node("Min", [x, const(1.0, "one")], [capped], name=view.fresh(f"{hint}_min")),
            helper.make_node("Max", [capped, const(0.0, "zero")], [out], name=view.fresh(f"{hint}_max")),
        ]
    else:
        one = const(1.0, "one")
        shifted, lifted, back = (view.fresh(f"{hint}_{s}") for s in ("shifted", "relu", "back"))
        nodes = [
            helper.make_node("Add", [x, one], [shifted], name=view.fresh(f"{hint}_add")),
            helper.make_node("Relu", [shifted], [lifted], name=view.fresh(f"{hint}_relu")),
            helper.make_node("Sub", [lifted, one], [back], name=view.fresh(f"{hint}_sub")),
            helper.make_node("Min", [back, one], [out], name=view.fresh(f"{hint}_min")),
        ]
    view.replace([node], nodes)
    return True


rewrite = node_rewrite(_match)

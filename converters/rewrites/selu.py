"""Selu(x) -> gamma * (Relu(x) + alpha * (Exp(Min(x, 0)) - 1)): no SELECT for TFLite Micro.

TensorFlow's selu, which onnx2tf emits, becomes ELU, MUL, GREATER and SELECT in TFLite, and TFLite
Micro has no SELECT kernel (int8 or float): a model with nn.SELU could not be quantized for a
microcontroller. The written-out form is the same function: above 0 it is gamma * (x + alpha * 0),
exactly gamma * x; at or below 0 gamma * alpha * (exp(x) - 1), within an ulp or two of TensorFlow's
expm1 form for outputs of any size that matters (near 0 exp(x) - 1 loses low bits of a tiny value).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite

NAME = "selu_to_relu_exp"

# ONNX's defaults (the constants of Klambauer et al.; PyTorch writes them out).
ALPHA, GAMMA = 1.67326319217681884765625, 1.05070102214813232421875


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Selu" or not view.is_float32(node.input[0]):
        return False
    alpha, gamma = float(attr(node, "alpha", ALPHA)), float(attr(node, "gamma", GAMMA))
    x, out, hint = node.input[0], node.output[0], node.name or "selu"

    def const(value: float, what: str) -> str:
        return view.add_initializer(np.array(value, np.float32), f"{hint}_{what}")

    pos, neg, e, em1, scaled, total = (
        view.fresh(f"{hint}_{s}") for s in ("pos", "neg", "exp", "expm1", "scaled", "sum")
    )
    one = const(1.0, "one")
    nodes = [
        helper.make_node("Relu", [x], [pos], name=view.fresh(f"{hint}_relu")),
        helper.make_node("Min", [x, const(0.0, "zero")], [neg], name=view.fresh(f"{hint}_min")),
        helper.make_node("Exp", [neg], [e], name=view.fresh(f"{hint}_exp")),
        helper.make_node("Sub", [e, one], [em1], name=view.fresh(f"{hint}_sub")),
        helper.make_node("Mul", [em1, const(alpha, "alpha")], [scaled], name=view.fresh(f"{hint}_alpha")),
        helper.make_node("Add", [pos, scaled], [total], name=view.fresh(f"{hint}_add")),
        helper.make_node("Mul", [total, const(gamma, "gamma")], [out], name=view.fresh(f"{hint}_gamma")),
    ]
    view.replace([node], nodes)
    return True


rewrite = node_rewrite(_match)

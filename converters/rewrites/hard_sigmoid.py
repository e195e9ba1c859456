"""HardSigmoid -> Mul, Add, Min(1), Max(0): the same function in ops TFLite Micro has kernels for.

onnx2tf translates HardSigmoid (nn.Hardsigmoid, F.hardsigmoid, Keras' hard_sigmoid) into a clamp that
the TFLite converter fuses into RELU_0_TO_1, an op TFLite Micro has no kernel for, in int8 or float:
such a model converted and then could not be packaged for a microcontroller. Written out with the
clamp's minimum first, the converter emits MINIMUM and RELU (measured: its fusion pattern is
minimum-of-relu, not relu-of-minimum), which TFLite Micro runs in both precisions.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, opset_version

NAME = "hard_sigmoid_to_min_max"
MIN_OPSET = 8  # Min/Max with multidirectional broadcasting (a scalar bound)


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "HardSigmoid" or not view.is_float32(node.input[0]):
        return False
    alpha = float(attr(node, "alpha", 0.2))
    beta = float(attr(node, "beta", 0.5))
    base = view.fresh(node.name or "hard_sigmoid")

    def const(value: float, hint: str) -> str:
        return view.add_initializer(np.array(value, np.float32), f"{base}_{hint}")

    scaled, shifted, capped = (view.fresh(f"{base}_{s}") for s in ("scaled", "shifted", "capped"))
    nodes = [
        helper.make_node("Mul", [node.input[0], const(alpha, "alpha")], [scaled], name=f"{base}_mul"),
        helper.make_node("Add", [scaled, const(beta, "beta")], [shifted], name=f"{base}_add"),
        helper.make_node("Min", [shifted, const(1.0, "one")], [capped], name=f"{base}_min"),
        helper.make_node("Max", [capped, const(0.0, "zero")], [node.output[0]], name=f"{base}_max"),
    ]
    view.replace([node], nodes)
    return True


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    if opset_version(model) < MIN_OPSET:
        return model
    view = OnnxGraph(model)
    view.rewrite_each(_match)
    return view.finish()

"""Pow(x, c) with a constant scalar exponent -> Mul / Sqrt / Exp(c * Log(x)), ops TFLite Micro runs.

TFLite Micro has no POW kernel, int8 or float, so a model with one could not be quantized for a
microcontroller (GeM pooling's x.pow(3).mean().pow(1/3), p-norms). onnx2tf keeps Pow as POW except
for squares. The replacements:
- c = 2, 3, 4: products of x (as cheap as POW in any runtime; within an ulp or two of it);
- c = 0.5: Sqrt (both correctly rounded);
- any other non-integer c: Exp(c * Log(x)), which has pow's own special values for a non-integer
  exponent (NaN below 0, 0 or inf at 0, inf at inf) and differs from it by a few ulps.
Integer exponents outside 2..4 (where a negative base must keep its sign) are left alone.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, node_rewrite

NAME = "pow_constant_exponent"

_PRODUCTS = (2, 3, 4)


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Pow" or not view.is_float32(node.input[0]):
        return False
    exponent = view.input_const(node, 1)
    if exponent is None or exponent.size != 1:
        return False
    c = float(np.ravel(exponent)[0])
    x, out, hint = node.input[0], node.output[0], node.name or "pow"
    if (view.rank(x) or 0) < exponent.ndim:  # the exponent's rank would broadcast the output up
        return False
    if c in _PRODUCTS:
        nodes, acc = [], x
        for k in range(2, int(c) + 1):
            target = out if k == int(c) else view.fresh(f"{hint}_x{k}")
            nodes.append(helper.make_node("Mul", [acc, x], [target], name=view.fresh(f"{hint}_mul")))
            acc = target
    elif c == 0.5:
        nodes = [helper.make_node("Sqrt", [x], [out], name=view.fresh(f"{hint}_sqrt"))]
    elif not float(c).is_integer() and np.isfinite(c):
        log, scaled = view.fresh(f"{hint}_log"), view.fresh(f"{hint}_scaled")
        factor = view.add_initializer(np.array(c, np.float32), f"{hint}_exponent")
        nodes = [
            helper.make_node("Log", [x], [log], name=view.fresh(f"{hint}_log")),
            helper.make_node("Mul", [log, factor], [scaled], name=view.fresh(f"{hint}_scale")),
            helper.make_node("Exp", [scaled], [out], name=view.fresh(f"{hint}_exp")),
        ]
    else:
        return False
    view.replace([node], nodes)
    return True


rewrite = node_rewrite(_match)

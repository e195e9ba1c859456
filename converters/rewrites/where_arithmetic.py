"""Where(c, x, y) with float x, y of the condition's own shape -> x * Cast(c) + y * (1 - Cast(c)).

The TFLite converter writes a Where whose three operands have one shape as SELECT (with any
broadcasting, as SELECT_V2), and TFLite Micro has a SELECT_V2 kernel but no SELECT, int8 or float:
such a model could not be quantized for a microcontroller. In the arithmetic form each product is
the value times exactly 1 or 0, so the result is the selected value bit for bit, as long as the
other one is finite (0 * inf is NaN). That is why only the no-broadcast Where is rewritten, and only
when no constant operand holds inf or NaN: a broadcasting one (SELECT_V2) is exact in every runtime
as it is, and masks such as Where(mask, -inf, scores) stay selects. A constant 0 operand drops its
product (x * Cast(c), the common masking form).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeport.onnx_graph import OnnxGraph, node_rewrite

NAME = "where_to_arithmetic"


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Where" or not all(view.is_float32(name) for name in node.input[1:]):
        return False
    shapes = [view.static_shape(name) for name in (*node.input, node.output[0])]
    if shapes[0] is None or any(shape != shapes[0] for shape in shapes):
        return False
    values = [view.input_const(node, i) for i in (1, 2)]
    if any(v is not None and not np.isfinite(v).all() for v in values):
        return False
    # A constant 0 operand contributes nothing: its product is left out.
    keep_x, keep_y = (v is None or v.any() for v in values)
    if not (keep_x or keep_y):
        return False
    hint = node.name or "where"
    mask = view.fresh(f"{hint}_mask")
    nodes = [
        helper.make_node(
            "Cast", [node.input[0]], [mask], name=view.fresh(f"{hint}_cast"), to=TensorProto.FLOAT
        )
    ]
    terms = []
    if keep_x:
        terms.append(view.fresh(f"{hint}_then"))
        nodes.append(
            helper.make_node("Mul", [node.input[1], mask], [terms[-1]], name=view.fresh(f"{hint}_then"))
        )
    if keep_y:
        inverse = view.fresh(f"{hint}_inverse")
        one = view.add_initializer(np.array(1.0, np.float32), f"{hint}_one")
        terms.append(view.fresh(f"{hint}_else"))
        nodes += [
            helper.make_node("Sub", [one, mask], [inverse], name=view.fresh(f"{hint}_inverse")),
            helper.make_node("Mul", [node.input[2], inverse], [terms[-1]], name=view.fresh(f"{hint}_else")),
        ]
    if len(terms) == 2:
        nodes.append(helper.make_node("Add", terms, [node.output[0]], name=view.fresh(f"{hint}_sum")))
    else:
        nodes[-1].output[0] = node.output[0]
    view.replace([node], nodes)
    return True


rewrite = node_rewrite(_match)
